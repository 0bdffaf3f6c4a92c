"""An oblique grid through the real ``medmodels`` worker with the bundled weights.

``medmodels run`` on the phantom's files and the module's logic on the same
voxels placed on an oblique grid must give the same segmentation (so the
module adds nothing and loses nothing on the way), and the synthesised
volumes must land on the oblique reference grid. (The module's side of the round trip is checked exactly, and
quickly, in test_slicer_logic.py.) Skipped, with the reason, until the bundled
checkpoints exist. About a minute on two CPU cores.
"""

from __future__ import annotations

import sys

import numpy as np
import vtk

from slicer_fixtures import ijk_to_ras, matrix, medmodels_logic
from slicer_fixtures import scene  # noqa: F401  (pytest fixture)


def test_oblique_phantom_through_the_real_worker(scene, tmp_path):
    """``medmodels run`` on the phantom files, and the module's logic on the same
    voxels placed on an oblique grid, give the same segmentation; the
    synthesised volumes land on the oblique reference grid."""
    import subprocess

    import SimpleITK as sitk

    from MissingModalityToolsLib import nodes as nodeio
    from MissingModalityToolsLib.logic import assign_by_name
    from MissingModalityToolsLib.options import RunOptions
    from MissingModalityToolsLib.selftest import _labels_on, dice

    logic = medmodels_logic(scene, tmp_path)
    env = logic.environment()
    subprocess.run([sys.executable, "-m", "medmodels", "phantom", str(tmp_path), "--seed", "5", "--size", "48x48x32"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    files = {s: str(tmp_path / "Phantom_005" / f"Phantom_005_{s}.nii.gz") for s in ("flair", "t1", "t2")}
    # The command line on the axis-aligned files: what the module must reproduce.
    subprocess.run([sys.executable, "-m", "medmodels", "run", "--flair", files["flair"], "--t1", files["t1"],
                    "--t2", files["t2"], "--output-dir", str(tmp_path / "cli"), "--segment", "--device", "cpu"],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cli_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "cli" / "segmentation.nii.gz")))
    assert cli_labels.any(), "the command line found no tumour: the comparison would be empty"

    oblique = matrix((5.0, 5.0, 4.84375), (-100.0, 80.0, -60.0), (0.3, -0.25, 0.5))
    m = vtk.vtkMatrix4x4()
    for i in range(4):
        for j in range(4):
            m.SetElement(i, j, float(oblique[i, j]))
    loaded = [nodeio.read_scalar_volume(scene, path, f"oblique_{s}") for s, path in files.items()]
    for node in loaded:
        node.SetIJKToRASMatrix(m)
    inputs, _ = assign_by_name(loaded)
    # One sampling step: only the synthesised volumes' grid matters here.
    result = logic.run_blocking(inputs, RunOptions(device="cpu", steps=1))
    assert sorted(result.synthesized) == ["t1c"]
    for node in result.synthesized.values():
        assert nodeio.same_grid(node, inputs["flair"])
        assert np.allclose(ijk_to_ras(node), oblique, atol=1e-4)
    module_labels = _labels_on(result.segmentation, inputs["flair"])
    assert module_labels.shape == cli_labels.shape
    assert dice(module_labels > 0, cli_labels > 0) > 0.98
    assert dice(module_labels == 4, cli_labels == 4) > 0.95 or not (cli_labels == 4).any()
