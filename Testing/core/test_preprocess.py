import numpy as np
import pytest
from medmodels.brain_mask import brain_mask
from medmodels.cropping import bounding_box, crop, paste
from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.normalisation import Normalizer
from medmodels.resampling import resample_like, resample_to_spacing, to_common_grid


def test_inputs_on_one_grid_are_left_alone(small_phantom):
    out, notes = to_common_grid(small_phantom.images)
    assert notes == [] and all(out[k] is small_phantom.images[k] for k in out)


def test_inputs_on_other_grids_are_resampled_onto_the_reference(small_phantom):
    images = dict(small_phantom.images)
    t2 = images["t2"]
    # T2 at another spacing and shifted origin, covering the same anatomy.
    images["t2"] = resample_to_spacing(t2, (3.0, 3.0, 3.0))
    out, notes = to_common_grid(images)
    assert len(notes) == 1 and "T2" in notes[0] and "FLAIR" in notes[0]
    assert out["t2"].same_grid(images["flair"])
    # The resampled T2 still matches the original closely inside the brain.
    brain = small_phantom.labels.array >= 0
    corr = np.corrcoef(out["t2"].array[brain].ravel(), t2.array[brain].ravel().astype(float))[0, 1]
    assert corr > 0.8
    out2, _ = to_common_grid(images, preferred="t2")
    assert out2["flair"].same_grid(images["t2"])


def test_reference_must_be_given_and_overlap(small_phantom):
    with pytest.raises(InputError, match="not among the inputs"):
        to_common_grid({"t1": small_phantom.images["t1"]}, preferred="t2")
    far = Image(small_phantom.images["t2"].array, small_phantom.images["t2"].spacing, (5000.0, 0.0, 0.0))
    with pytest.raises(InputError, match="does not overlap"):
        to_common_grid({"t1": small_phantom.images["t1"], "t2": far})


def test_brain_mask_skull_stripped_and_fallback(small_phantom):
    mask = brain_mask(small_phantom.images)
    assert np.array_equal(mask, small_phantom.images["t1"].array != 0)
    # Not skull-stripped: a noisy, non-zero background; the fallback finds the head.
    rng = np.random.default_rng(0)
    noisy = {
        k: v.with_array(v.array.astype(np.float32) + rng.uniform(5, 15, v.shape))
        for k, v in small_phantom.images.items()
    }
    fallback = brain_mask(noisy)
    overlap = (fallback & mask).sum() / mask.sum()
    assert overlap > 0.9 and fallback.sum() < 1.5 * mask.sum()


def test_empty_brain_mask_is_an_error():
    with pytest.raises(InputError, match="brain mask is empty"):
        brain_mask({"t1": Image(np.zeros((4, 4, 4)))})


def test_normalisation_round_trip(small_phantom):
    arr = small_phantom.images["t1c"].array.astype(np.float32)
    mask = arr != 0
    norm = Normalizer.fit(arr, mask)
    z = norm.apply(arr, mask)
    assert abs(z[mask].mean()) < 0.05 and abs(z[mask].std() - 1) < 0.05
    back = norm.invert(z, mask)
    inside = mask & (arr >= norm.low) & (arr <= norm.high)
    np.testing.assert_allclose(back[inside], arr[inside], rtol=1e-4, atol=1e-2)
    assert np.all(back[~mask] == 0)


def test_crop_and_paste(small_phantom):
    mask = small_phantom.images["t1"].array != 0
    box = bounding_box(mask, margin=2, multiple_of=8)
    assert all((s.stop - s.start) % 8 == 0 or s.stop - s.start == n for s, n in zip(box, mask.shape))
    cropped = crop(small_phantom.images["t1"].array, box)
    assert cropped.size < mask.size
    back = paste(cropped, box, mask.shape)
    np.testing.assert_array_equal(back, small_phantom.images["t1"].array)
    stacked = np.stack([mask, mask])
    assert paste(crop(stacked, box), box, mask.shape).shape == stacked.shape


def test_resample_to_spacing_keeps_field_of_view(small_phantom):
    img = small_phantom.images["t1"]
    coarse = resample_to_spacing(img, (10.0, 10.0, 9.6875))
    assert coarse.shape == (16, 24, 24)
    fine = resample_like(coarse, img)
    assert fine.same_grid(img)
