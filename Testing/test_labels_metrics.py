import numpy as np
import pytest

from medmodels.errors import InputError
from medmodels.labels import convert_convention, detect_convention, labels_to_regions, regions_to_labels
from medmodels.metrics import dice, hd95, mae, psnr, region_scores, ssim


def test_regions_round_trip_both_conventions(small_phantom):
    labels = small_phantom.labels.array
    regions = labels_to_regions(labels)
    assert regions.shape == (3, *labels.shape)
    assert (regions[0] <= regions[1]).all() and (regions[1] <= regions[2]).all()  # ET in TC in WT
    np.testing.assert_array_equal(regions_to_labels(regions, "2018"), labels)
    l23 = convert_convention(labels, "2023")
    assert detect_convention(l23) == "2023" and 4 not in l23
    np.testing.assert_array_equal(regions_to_labels(labels_to_regions(l23), "2023"), l23)


def test_bad_labels():
    with pytest.raises(InputError, match="not BraTS labels"):
        detect_convention(np.array([0, 7]))
    with pytest.raises(InputError, match="convention"):
        regions_to_labels(np.zeros((3, 2, 2, 2), bool), "2020")


def test_dice_and_hd95():
    a = np.zeros((20, 20, 20), bool)
    a[5:10, 5:10, 5:10] = True
    b = np.roll(a, 2, axis=2)
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0 and dice(a & False, a & False) == 1.0
    assert dice(a, b) == pytest.approx(0.6)
    assert hd95(a, b, (1, 1, 1)) == pytest.approx(2.0)
    assert hd95(a, b, (1, 1, 3)) == pytest.approx(6.0)


def test_region_scores_see_a_missing_region(small_phantom):
    labels = small_phantom.labels.array
    assert region_scores(labels, labels, (5, 5, 5))["Dice_ET"] == 1.0
    no_et = np.where(labels == 4, 1, labels)
    scores = region_scores(no_et, labels, (5, 5, 5))
    assert scores["Dice_ET"] == 0.0 and scores["Dice_TC"] == 1.0 and scores["HD95_ET"] > 100


def test_synthesis_metrics_order_noise_levels(small_phantom):
    truth = small_phantom.images["t2"].array.astype(np.float32)
    mask = truth != 0
    rng = np.random.default_rng(0)
    low, high = (truth + rng.normal(0, s, truth.shape).astype(np.float32) for s in (5, 40))
    assert ssim(truth, truth, mask) == pytest.approx(1.0)
    assert ssim(low, truth, mask) > ssim(high, truth, mask)
    assert psnr(low, truth, mask) > psnr(high, truth, mask)
    assert mae(low, truth, mask) < mae(high, truth, mask)
    assert ssim(low[10], truth[10], mask[10]) > ssim(high[10], truth[10], mask[10])
