"""What the worker's preparation step found and did, brought into Slicer.

The worker (``medmodels.preparation``) records in its manifest's
preparation record what the inspection found, which steps ran and, per
registered modality, the rigid transform it found; this file reads them
through ``medmodels.contract.Manifest`` (``findings``, ``preparation_steps``,
``registration_matrices``). This file turns that record into the
panel's log lines and into one linear transform node per registered modality,
so the user can inspect the registration; the input volumes stay untouched
(the user may apply a transform to a volume by hand to see it).

The matrix convention: a registration matrix is a 4x4 homogeneous
matrix in LPS millimetres that maps a point of the reference (fixed) space to
the moving image's space (SimpleITK's resampling convention, see
``medmodels.registration``). Slicer wants a transform node to hold the map
from the moving volume's space to its parent (the reference) in RAS, so the
node gets ``F @ inv(M) @ F`` with ``F = diag(-1, -1, 1, 1)`` (LPS <-> RAS;
``F`` is its own inverse).
"""

from __future__ import annotations

import numpy as np

#: LPS <-> RAS: x and y change sign (its own inverse).
LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def moving_to_reference_ras(matrix) -> np.ndarray:
    """The 4x4 RAS transform from a moving volume's space to the reference's.

    Args:
        matrix: 4x4 (nested lists or array) from the manifest: LPS mm,
            reference point -> moving point.

    Returns:
        ``(4, 4)`` float64: RAS mm, moving point -> reference point (what a
        vtkMRMLLinearTransformNode's "to parent" matrix holds).

    Raises:
        ValueError: the matrix is not 4x4, not affine or not invertible.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.allclose(m[3], (0.0, 0.0, 0.0, 1.0)) or abs(np.linalg.det(m[:3, :3])) < 1e-9:
        raise ValueError(f"A registration matrix must be an invertible 4x4 affine matrix, got {m.tolist()}.")
    return LPS_RAS @ np.linalg.inv(m) @ LPS_RAS


def as_manifest(manifest):
    """``manifest`` as a ``medmodels.contract.Manifest`` (a parsed manifest.json is read through it).

    Args:
        manifest: a ``Manifest``, or the worker's manifest.json as a dict.
    """
    from medmodels.contract import Manifest

    return manifest if isinstance(manifest, Manifest) else Manifest.from_dict(manifest)


def preparation_lines(manifest) -> list[str]:
    """The panel's log lines for the manifest's preparation record and notes.

    The inspection's findings come first (what is wrong and what to do), then
    the run's notes (what was registered, resampled and extracted), each once.
    An older worker's manifest without a preparation record gives only its
    notes.

    Args:
        manifest: the worker's manifest (``medmodels.contract.Manifest``, or as a dict).
    """
    manifest = as_manifest(manifest)
    findings = manifest.findings()
    mode = manifest.preparation_mode()
    if mode == "off":  # nothing was done about them: they are warnings
        findings = [f"Warning: {f}" for f in findings]
    lines = []
    if manifest.preparation:
        steps = manifest.preparation_steps()
        done = ", ".join(s.replace("_", " ") for s in steps) if steps else "nothing to do"
        lines.append(f"Preparation ({mode}): {done}.")
    seen = set()
    for text in [*findings, *(str(n) for n in manifest.notes)]:
        # The worker notes each finding again (as a warning when preparation is off): say it once.
        key = text.removeprefix("Warning: ")
        if text and key not in seen:
            seen.add(key)
            lines.append(f"  {text}")
    return lines


def transform_name(moving: str, reference: str, prefix: str = "") -> str:
    """Node name of a registration transform, e.g. "T1 -> FLAIR (rigid)"."""
    return f"{prefix}{moving} -> {reference} (rigid)"


def add_registration_transforms(scene, manifest, ref_key: str, prefix: str = "") -> dict:
    """One linear transform node per registered modality of the manifest, added to ``scene``.

    The nodes are not applied to any volume: the inputs stay as they were.

    Args:
        scene: the MRML scene.
        manifest: the worker's manifest (``medmodels.contract.Manifest``, or as a dict).
        ref_key: the reference modality (the transforms' parent space).
        prefix: put before every node name (the run's name prefix).

    Returns:
        modality key -> the new vtkMRMLLinearTransformNode, in canonical order.
        On an error (a malformed matrix), the nodes added so far are removed
        again and ValueError is raised.
    """
    import vtk
    from medmodels.modalities import ordered

    from MissingModalityToolsLib.inputs import display_name
    from MissingModalityToolsLib.nodes import remove_nodes

    registration = as_manifest(manifest).registration_matrices()
    added = {}
    try:
        for key in ordered([k for k in registration if k != ref_key]):
            ras = moving_to_reference_ras(registration[key])
            node = scene.AddNewNodeByClass(
                "vtkMRMLLinearTransformNode", transform_name(display_name(key), display_name(ref_key), prefix)
            )
            added[key] = node
            m = vtk.vtkMatrix4x4()
            for i in range(4):
                for j in range(4):
                    m.SetElement(i, j, float(ras[i, j]))
            node.SetMatrixTransformToParent(m)
    except Exception:
        remove_nodes(scene, list(added.values()))
        raise
    return added
