"""Fixtures for testing the Slicer module's logic against slicer-core's real MRML scene.

``make_scene`` (MissingModalityToolsLib.headless) sets up what the Slicer
application provides and slicer-core does not by itself: an application logic
with the Colors, Volumes, Subject hierarchy and Segmentations module logics
registered (see ../shared/docs/slicer.md). Nothing here fakes a scene or a node.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from module_paths import CONTRACT_WORKER, LIB_DIR, MODULE_DIR, ROOT, run_fresh_python  # noqa: F401  (for the tests)

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed: pip install slicer-core")
import vtk  # noqa: E402  (comes with slicer-core)
from MissingModalityToolsLib.headless import make_scene  # noqa: E402


@pytest.fixture
def scene():
    previous = getattr(slicer, "mrmlScene", None)
    s = make_scene()
    slicer.mrmlScene = s
    yield s
    s.Clear(1)
    if previous is None:
        del slicer.mrmlScene
    else:
        slicer.mrmlScene = previous


def matrix(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), angles=(0.0, 0.0, 0.0)) -> np.ndarray:
    """IJK-to-RAS 4x4: rotations about x, y, z (radians) applied to scaled axes."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def add_volume(scene, name: str, array: np.ndarray, ijk_to_ras: np.ndarray | None = None, parent_item=None):
    """A scalar volume node (array in K, J, I order) placed in the subject hierarchy,
    as Slicer's subject-hierarchy plugins do on their own."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    if ijk_to_ras is not None:
        m = vtk.vtkMatrix4x4()
        for i in range(4):
            for j in range(4):
                m.SetElement(i, j, float(ijk_to_ras[i, j]))
        node.SetIJKToRASMatrix(m)
    node.CreateDefaultDisplayNodes()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    sh.CreateItem(parent_item if parent_item is not None else sh.GetSceneItemID(), node)
    return node


def add_study(scene, patient: str = "Patient 1", study: str = "MR brain"):
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient_item = sh.CreateSubjectItem(sh.GetSceneItemID(), patient)
    return sh.CreateStudyItem(patient_item, study)


def snapshot(scene) -> dict:
    """What a failed or cancelled run must leave unchanged: the nodes (ID, class,
    name, modification time) and the subject-hierarchy items."""
    nodes = []
    for i in range(scene.GetNumberOfNodes()):
        n = scene.GetNthNode(i)
        if n.IsA("vtkMRMLSubjectHierarchyNode"):
            continue  # its MTime moves on harmless queries; its items are compared below
        nodes.append((n.GetID(), n.GetClassName(), n.GetName(), n.GetMTime()))
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    items = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), items, True)
    sh_items = sorted(
        (items.GetId(i), sh.GetItemName(items.GetId(i)), sh.GetItemParent(items.GetId(i)))
        for i in range(items.GetNumberOfIds())
    )
    return {"nodes": sorted(nodes), "sh": sh_items}


def contract_logic(scene, tmp_path, mode: str = "ok", record: Path | None = None):
    """The module's logic driving the contract stand-in worker instead of medmodels."""
    from MissingModalityToolsLib.logic import MissingModalityToolsLogic

    env = dict(os.environ)
    env["MMT_WORKER_MODE"] = mode
    if record is not None:
        env["MMT_WORKER_RECORD"] = str(record)
    return MissingModalityToolsLogic(
        scene, worker_command=[sys.executable, str(CONTRACT_WORKER)], base_env=env, temp_root=str(tmp_path)
    )


def medmodels_logic(scene, tmp_path):
    """The module's logic running the real ``python -m medmodels`` from this checkout."""
    from MissingModalityToolsLib.logic import MissingModalityToolsLogic

    return MissingModalityToolsLogic(
        scene, worker_command=[sys.executable, "-m", "medmodels"], pythonpath=[str(LIB_DIR)], temp_root=str(tmp_path)
    )


def ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def export_labels(seg_node, reference_node) -> np.ndarray:
    """The segmentation's label values on the reference grid (K, J, I), through Slicer's exporter."""
    scene = seg_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    segmentation = seg_node.GetSegmentation()
    ids = vtk.vtkStringArray()
    for i in range(segmentation.GetNumberOfSegments()):
        ids.InsertNextValue(segmentation.GetNthSegmentID(i))
    ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        seg_node, ids, labelmap, reference_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
    )
    assert ok
    out = slicer.util.arrayFromVolume(labelmap).copy()
    # ExportSegmentsToLabelmapNode numbers segments 1..n in their order; map back to BraTS labels.
    from MissingModalityToolsLib.segments import SEGMENTS

    order = [
        segmentation.GetSegment(segmentation.GetNthSegmentID(i)).GetName()
        for i in range(segmentation.GetNumberOfSegments())
    ]
    by_name = {s.name: s.label for s in SEGMENTS}
    mapped = np.zeros_like(out)
    for index, name in enumerate(order, start=1):
        mapped[out == index] = by_name[name]
    assert np.allclose(ijk_to_ras(labelmap), ijk_to_ras(reference_node), atol=1e-4)
    scene.RemoveNode(labelmap)
    return mapped
