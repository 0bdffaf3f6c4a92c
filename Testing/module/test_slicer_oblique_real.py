"""An oblique grid through the real ``medmodels`` worker with the bundled weights.

medmodels' own pipeline on a phantom's axis-aligned files, and the module's
logic on the same voxels placed on an oblique grid, must give the same
segmentation (so the module adds nothing and loses nothing on the way), and
the synthesised volumes must land on the oblique reference grid. (The
module's side of the round trip is checked exactly, and quickly, in
test_slicer_logic.py.)

Kept cheap: the phantom is cut to a box of slices around its tumour (the
models' cost follows the physical extent, not the voxel count), the
reference segmentation runs in this process (torch is already loaded), and
synthesis takes one sampling step. The one worker run is the module's.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from slicer_fixtures import (
    ijk_to_ras,
    matrix,
    medmodels_logic,
    scene,  # noqa: F401  (pytest fixture)
    vtk,
)

pytestmark = [pytest.mark.slicer, pytest.mark.slow]

#: The phantom (voxels x, y, z at 5 x 5 x 4.84 mm; seed) and the box cut from it
#: around the tumour's centre: 19 x 19 voxels in-plane (95 mm: one 40-voxel window
#: of the segmentation at its 2.5 mm spacing, where the whole brain needs six)
#: and 14 slices (the tumour's extent, about 68 mm).
PHANTOM_SIZE = (48, 48, 32)
PHANTOM_SEED = 5
BOX = (19, 19, 14)
#: The box is a skull-stripped brain cut to 95 mm, which the inspection takes for an unstripped head
#: (it fills its field of view) and whose 170 ml "brain" stops an ``auto`` run since issue 19; the test
#: is about the oblique grid, so both sides run without preparation.
PREPARE = "off"


def phantom_box(folder) -> dict[str, str]:
    """FLAIR, T1 and T2 of the phantom, cut to ``BOX`` voxels (x, y, z) around the
    tumour's centre; modality key -> NIfTI file, axis-aligned.

    The cut keeps each voxel's place in space (SimpleITK slicing moves the origin).
    The box takes in the brain's edge on one side, so the case is not symmetric.
    """
    from medmodels.phantom import make_phantom

    case = make_phantom(PHANTOM_SIZE, seed=PHANTOM_SEED)
    centre_zyx = np.round(np.mean(np.nonzero(case.labels.array), axis=1)).astype(int)
    start = [min(max(c - n // 2, 0), size - n) for c, n, size in zip(centre_zyx[::-1], BOX, PHANTOM_SIZE)]
    box = tuple(slice(s0, s0 + n) for s0, n in zip(start, BOX))
    files = {}
    for key in ("flair", "t1", "t2"):
        files[key] = str(folder / f"Phantom_{PHANTOM_SEED:03d}_{key}.nii.gz")
        sitk.WriteImage(case.images[key].to_sitk()[box], files[key])
    return files


def reference_labels(files: dict[str, str]) -> np.ndarray:
    """What ``medmodels run --segment --device cpu`` computes on the files: its own
    pipeline (read, segment), run here instead of in a second process."""
    from medmodels.io import read_image
    from medmodels.options import RunOptions as LibraryRunOptions
    from medmodels.pipeline import run_case

    result = run_case(
        {k: read_image(p) for k, p in files.items()},
        LibraryRunOptions(synthesize=False, segment=True, device="cpu", prepare=PREPARE),
    )
    return np.asarray(result.segmentation.array)


def test_oblique_phantom_through_the_real_worker(scene, tmp_path):
    """medmodels' pipeline on the phantom files, and the module's logic on the same
    voxels placed on an oblique grid, give the same segmentation; the
    synthesised volumes land on the oblique reference grid."""
    from MissingModalityToolsLib import nodes as nodeio
    from MissingModalityToolsLib.inputs import assign_by_name
    from MissingModalityToolsLib.options import PanelOptions
    from MissingModalityToolsLib.selftest import _labels_on, dice

    files = phantom_box(tmp_path)
    cli_labels = reference_labels(files)
    assert cli_labels.any(), "the pipeline found no tumour: the comparison would be empty"

    loaded = [nodeio.read_scalar_volume(scene, path, f"oblique_{s}") for s, path in files.items()]
    spacing = loaded[0].GetSpacing()  # the phantom's own voxel size: only the directions and origin change
    oblique = matrix(spacing, (-100.0, 80.0, -60.0), (0.3, -0.25, 0.5))
    m = vtk.vtkMatrix4x4()
    for i in range(4):
        for j in range(4):
            m.SetElement(i, j, float(oblique[i, j]))
    for node in loaded:
        node.SetIJKToRASMatrix(m)
    inputs, _ = assign_by_name(loaded)
    # One sampling step: only the synthesised volumes' grid matters here.
    result = medmodels_logic(scene, tmp_path).run_blocking(inputs, PanelOptions(device="cpu", steps=1, prepare=PREPARE))
    assert sorted(result.synthesized) == ["t1c"]
    for node in result.synthesized.values():
        assert nodeio.same_grid(node, inputs["flair"])
        assert np.allclose(ijk_to_ras(node), oblique, atol=1e-4)
    module_labels = _labels_on(result.segmentation, inputs["flair"])
    assert module_labels.shape == cli_labels.shape
    assert dice(module_labels > 0, cli_labels > 0) > 0.98
    assert dice(module_labels == 4, cli_labels == 4) > 0.95 or not (cli_labels == 4).any()
