"""Issue 23, group 4: a series rotated 20 degrees against the reference, on the
reference's own grid, is found, registered back and reported (before, the
inspection called it aligned and it reached the models as it was). All data
are generated (``medmodels.phantom``)."""

from __future__ import annotations

import numpy as np
import pytest
from medmodels.image import Image
from medmodels.metrics import region_scores
from medmodels.options import RunOptions
from medmodels.phantom import make_phantom
from medmodels.preparation import prepare_case
from medmodels.registration import apply_rigid

pytestmark = pytest.mark.usefixtures("one_itk_thread")


def rotated(image: Image, degrees: float, axis: int) -> Image:
    """``image`` turned ``degrees`` about its grid's centre and the LPS ``axis`` (0 x, 1 y, 2 z), on its own grid.

    Zero outside the turned brain, as a series acquired turned and skull-stripped in its own space is:
    linear resampling alone leaves a rim of faint non-zero voxels round the brain, which the models take
    for brain (WT Dice 0.79 instead of 0.88 with the rim, even turned back exactly).
    """
    a = np.deg2rad(degrees)
    i, j = [k for k in range(3) if k != axis]
    turn = np.eye(4)
    turn[[i, i, j, j], [i, j, i, j]] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    centre = np.asarray(image.origin) + np.asarray(image.direction).reshape(3, 3) @ (
        (np.asarray(image.size_xyz) - 1) / 2 * np.asarray(image.spacing)
    )
    shift, back = np.eye(4), np.eye(4)
    shift[:3, 3], back[:3, 3] = -centre, centre
    values = apply_rigid(image, back @ turn @ shift, image)
    brain = apply_rigid(image.with_array((image.array != 0).astype(np.float32)), back @ turn @ shift, image)
    return values.with_array(np.where(brain.array >= 0.5, values.array, 0).astype(np.float32))


@pytest.mark.parametrize("axis", [0, 2])  # a nod (about left-right) and a turn (about head-foot)
def test_a_series_rotated_20_degrees_is_found_registered_and_reported(small_phantom, axis):
    images = dict(small_phantom.images)
    images["t1"] = rotated(images["t1"], 20.0, axis)
    prepared = prepare_case(images, "auto")
    assert not prepared.record["inspection"]["alignment"]["t1"]["aligned"]
    record = prepared.record["registration"]["t1"]
    assert record["applied"] and record["mutual_information_after"] > record["mutual_information_before"]
    angle = np.rad2deg(np.arccos((np.trace(np.asarray(record["matrix"])[:3, :3]) - 1) / 2))
    assert abs(angle - 20.0) < 2.0, angle
    truth = small_phantom.images["t1"].array
    before = np.abs(images["t1"].array - truth).mean()
    after = np.abs(prepared.images["t1"].array - truth).mean()
    assert after < 0.5 * before, (before, after)
    assert any(n.startswith("T1 do(es) not line up with FLAIR") for n in prepared.notes)
    assert any(n.startswith("T1 was registered onto FLAIR: rotation") for n in prepared.notes)


@pytest.mark.slow
def test_whole_tumour_dice_of_a_rotated_study_as_of_the_aligned_one():
    phantom = make_phantom((96, 96, 64), seed=2)
    images = dict(phantom.images)
    images["t1"] = rotated(images["t1"], 20.0, 0)
    from medmodels.pipeline import run_case

    options = RunOptions(synthesize=False, device="cpu")
    aligned = run_case(phantom.images, options).segmentation.array
    turned = run_case(images, options).segmentation.array
    wt = [region_scores(s, phantom.labels.array, (1, 1, 1))["Dice_WT"] for s in (aligned, turned)]
    # the model must find the tumour for the comparison to mean something (the default segmenter, a
    # ShaSpec and a U-Net averaged, has 0.810 on this aligned phantom; the bundled ShaSpec alone 0.806)
    assert wt[0] > 0.8, wt
    assert wt[1] >= wt[0] - 0.02, wt
