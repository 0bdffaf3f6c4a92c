"""Moving data between MRML nodes and files, without touching the inputs.

Writing and reading go through standalone storage nodes that are never added
to the scene: the input nodes keep their own storage nodes and file names,
and the new nodes have none, so Slicer saves them with the scene instead of
pointing at a temporary file that is about to be deleted. Geometry (spacing,
origin, oblique directions) is carried by Slicer's readers and writers, LPS
on disk and RAS in the scene.

Everything that goes wrong here raises ``NodeError``, whose message names the
node or the file and what to do; the run logic turns it into a failed run
when the file came from the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from MissingModalityToolsLib.segments import SEGMENTS, terminology_entry


class NodeError(RuntimeError):
    """A node could not be written to a file, or a file could not be read into a node.

    The message names the node or the file and the fix.
    """


def check_volume_node(node) -> None:
    """Raise NodeError unless ``node`` is a volume node that holds voxels."""
    if node is None:
        raise NodeError("No volume node was given: choose a volume.")
    name = node.GetName() if hasattr(node, "GetName") else repr(node)
    if not hasattr(node, "IsA") or not node.IsA("vtkMRMLVolumeNode"):
        kind = node.GetClassName() if hasattr(node, "GetClassName") else type(node).__name__
        raise NodeError(f"'{name}' is a {kind}, not a volume: choose a volume node.")
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise NodeError(f"Volume '{name}' has no voxels: load the image again or choose another volume.")


def write_volume(node, path: str) -> None:
    """Write a volume to NRRD (or whatever the extension says) without changing the node.

    Args:
        node: a volume node holding voxels (checked: NodeError otherwise).
        path: the file to write; ``.nrrd``/``.nhdr`` go through the NRRD writer.
    """
    import slicer

    check_volume_node(node)
    if path.endswith((".nrrd", ".nhdr")):
        storage = slicer.vtkMRMLNRRDStorageNode()
    else:
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(path)
    # Float data compresses poorly and gzip costs seconds on a 240^3 volume.
    storage.SetUseCompression(False)
    if not storage.WriteData(node):
        raise NodeError(
            f"Could not write volume '{node.GetName()}' to {path}: check free disk space in the temporary folder."
        )


def read_into(node, path: str) -> None:
    """Read the image file ``path`` into ``node`` (a volume node not yet in a scene)."""
    import slicer

    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(path)
    storage.SetSingleFile(True)  # never pull in neighbouring files as a series
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise NodeError(
            f"Slicer could not read the image {path}: the file is missing, cut short or not an "
            "image. If a run wrote it, rerun; if it happens again, report it with the log."
        )


def read_scalar_volume(scene, path: str, name: str):
    """A new scalar volume node in the scene with the file's voxels and geometry."""
    import slicer

    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    read_into(node, path)
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.AutoWindowLevelOn()
    return node


def read_segmentation(scene, path: str, name: str, reference_node, convention: str = "2018"):
    """A new segmentation node from a BraTS label map (2018: ET = 4; 2023: ET = 3).

    It holds the three tumour segments, always all three (an empty one means
    the model found none of it), named and coloured by ``segments.SEGMENTS``,
    its reference geometry taken from ``reference_node``.
    """
    import slicer

    labelmap = slicer.vtkMRMLLabelMapVolumeNode()  # temporary, never in the scene
    read_into(labelmap, path)
    label_of = {s.label: (3 if convention == "2023" and s.label == 4 else s.label) for s in SEGMENTS}
    values = set(int(v) for v in np.unique(slicer.util.arrayFromVolume(labelmap)))
    unexpected = sorted(values - set(label_of.values()) - {0})
    if unexpected:
        raise NodeError(
            f"The segmentation from the worker has labels {unexpected}, expected only "
            f"{sorted(label_of.values())} (BraTS {convention} convention). The medmodels version does not "
            "match the module: reinstall the extension."
        )
    seg_node = slicer.vtkMRMLSegmentationNode()
    seg_node.SetName(name)
    scene.AddNode(seg_node)
    try:
        seg_node.CreateDefaultDisplayNodes()
        seg_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if values - {0} and not logic.ImportLabelmapToSegmentationNode(labelmap, seg_node):
            raise NodeError(f"Slicer could not import the segmentation {path}. Report it with the log.")
        segmentation = seg_node.GetSegmentation()
        by_label = {}
        for i in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(i)
            by_label[segment.GetLabelValue()] = segmentation.GetNthSegmentID(i)
        for index, spec in enumerate(SEGMENTS):
            segment_id = by_label.get(label_of[spec.label])
            if segment_id is None:
                segment_id = segmentation.AddEmptySegment(spec.segment_id, spec.name, spec.color)
            segment = segmentation.GetSegment(segment_id)
            segment.SetName(spec.name)
            segment.SetColor(*spec.color)
            # The tag, not vtkSegment.SetTerminology: that method exists only from
            # Slicer 5.10, and the tag is what it sets (5.6 and 5.8 read it too).
            segment.SetTag(segment.GetTerminologyEntryTagName(), terminology_entry(spec))
            segmentation.SetSegmentIndex(segment_id, index)
    except Exception:
        remove_nodes(scene, [seg_node])
        raise
    return seg_node


def replace_segments(target, source, reference_node) -> None:
    """Make segmentation node ``target`` hold ``source``'s segments (and nothing else).

    The output selector's node is reused run after run this way; its name,
    display node and place in the subject hierarchy stay. Raises NodeError
    when ``target`` is not a segmentation node.
    """
    if target is None or not target.IsA("vtkMRMLSegmentationNode"):
        raise NodeError("The output segmentation is not a segmentation node: choose one, or 'Create new'.")
    target.GetSegmentation().DeepCopy(source.GetSegmentation())
    target.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    target.CreateDefaultDisplayNodes()


def place_with(scene, new_nodes: Iterable, reference_node) -> None:
    """Put the new nodes under the reference input's parent in the subject hierarchy
    (its study, when the data came from DICOM), so a case stays together."""
    import slicer

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if sh is None:
        return
    ref_item = sh.GetItemByDataNode(reference_node)
    parent = sh.GetItemParent(ref_item) if ref_item else sh.GetSceneItemID()
    for node in new_nodes:
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, parent)
        else:
            sh.CreateItem(parent, node)


def remove_nodes(scene, nodes: Sequence) -> None:
    """Remove nodes and their display nodes (undoing a half-finished import)."""
    for node in nodes:
        if node is None or node.GetScene() is None:
            continue
        if hasattr(node, "GetNumberOfDisplayNodes"):
            for i in reversed(range(node.GetNumberOfDisplayNodes())):
                display = node.GetNthDisplayNode(i)
                if display is not None and display.GetScene() is not None:
                    scene.RemoveNode(display)
        scene.RemoveNode(node)


def ijk_to_ras(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


def same_grid(a, b, tolerance: float = 1e-4) -> bool:
    """True when two volumes have the same dimensions and voxel-to-world matrix."""
    da, db = a.GetImageData(), b.GetImageData()
    if da is None or db is None or da.GetDimensions() != db.GetDimensions():
        return False
    return bool(np.allclose(ijk_to_ras(a), ijk_to_ras(b), atol=tolerance))


def ras_bounds(node) -> list[float]:
    """The volume's extent in RAS (xmin, xmax, ymin, ymax, zmin, zmax), transforms ignored."""
    bounds = [0.0] * 6
    node.GetRASBounds(bounds)
    return bounds


def bounds_overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(a[2 * i] < b[2 * i + 1] and b[2 * i] < a[2 * i + 1] for i in range(3))
