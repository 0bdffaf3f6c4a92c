import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from medmodels.errors import InputError
from medmodels.labels import (
    EDEMA,
    ENHANCING_LABEL,
    NECROTIC,
    SEGMENTS,
    convert_convention,
    detect_convention,
    labels_to_regions,
    regions_to_labels,
)
from medmodels.metrics import dice, dice_per_channel, hd95, mae, psnr, region_scores, ssim


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


def test_hd95_on_a_box_equals_hd95_on_the_volume():
    """hd95 crops to the masks' box for speed; far from the array's edges the distance is unchanged."""
    a = np.zeros((40, 40, 40), bool)
    a[10:20, 12:18, 15:25] = True
    b = np.zeros_like(a)
    b[13:24, 10:18, 16:22] = True
    import torch
    from monai.metrics import compute_hausdorff_distance

    full = compute_hausdorff_distance(
        torch.from_numpy(a)[None, None],
        torch.from_numpy(b)[None, None],
        include_background=True,
        percentile=95,
        spacing=[1.0, 2.0, 0.5],
    )
    assert hd95(a, b, (1.0, 2.0, 0.5)) == pytest.approx(float(full.item()))


def test_dice_per_channel_and_region_scores_without_spacing(small_phantom):
    labels = small_phantom.labels.array
    regions = labels_to_regions(labels)
    shifted = np.roll(regions, 2, axis=3)
    per_channel = dice_per_channel(shifted, regions)
    assert per_channel == [dice(s, r) for s, r in zip(shifted, regions)] and all(0 < d < 1 for d in per_channel)
    scores = region_scores(regions_to_labels(shifted), labels)  # no spacing: Dice only
    assert sorted(scores) == ["Dice_ET", "Dice_TC", "Dice_WT"]
    assert [scores[f"Dice_{r}"] for r in ("ET", "TC", "WT")] == pytest.approx(per_channel)


def test_per_slice_scores_match_single_slices(small_phantom):
    truth = small_phantom.images["t1"].array.astype(np.float32)
    mask = truth != 0
    pred = truth + np.random.default_rng(1).normal(0, 30, truth.shape).astype(np.float32)
    empty = int(np.flatnonzero(~mask.any(axis=(1, 2)))[0])  # a slice above the brain
    rng = float(np.ptp(truth[mask]))
    for metric in (psnr, ssim):
        per = metric(pred, truth, mask, data_range=rng, per_slice=True)
        assert per.shape == (len(truth),) and np.isnan(per[empty])
        assert per[14] == pytest.approx(metric(pred[14], truth[14], mask[14], data_range=rng), rel=1e-6)
    per = mae(pred, truth, mask, per_slice=True)
    assert np.isnan(per[empty]) and per[14] == pytest.approx(mae(pred[14], truth[14], mask[14]))
    assert np.isfinite(psnr(truth, truth, mask)) and psnr(truth, truth, mask) > 100  # capped, not inf


def test_dice_and_region_scores_work_without_torch(small_phantom, tmp_path):
    """Slicer's own Python has no torch: the self-test scores with metrics.dice there."""
    labels = tmp_path / "labels.npy"
    np.save(labels, small_phantom.labels.array)
    code = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['monai'] = None  # any import of them now fails\n"
        "import numpy as np\n"
        "from medmodels.metrics import dice, mae, psnr, region_scores\n"
        f"labels = np.load({str(labels)!r})\n"
        "scores = region_scores(labels, np.where(labels == 4, 1, labels))\n"
        "assert scores['Dice_ET'] == 0.0 and scores['Dice_TC'] == 1.0, scores\n"
        "assert dice(labels > 0, labels > 0) == 1.0 and mae(labels, labels, labels > 0) == 0.0\n"
        "psnr(labels + 1.0, labels, labels > 0)\n"
        "try:\n"
        "    import torch\n"
        "except ImportError:\n"
        "    print('torch blocked')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "torch blocked"


def test_one_segment_registry_for_library_and_slicer_module():
    """labels.SEGMENTS is the registry; the Slicer module's segments.py shows exactly it."""
    module_dir = str(Path(__file__).resolve().parents[2] / "MissingModalityTools")
    if module_dir not in sys.path:
        sys.path.insert(0, module_dir)
    from MissingModalityToolsLib import segments

    assert segments.SEGMENTS is SEGMENTS
    # One segment per label value of the 2018 convention medmodels writes, in label order.
    assert [s.label for s in SEGMENTS] == [NECROTIC, EDEMA, ENHANCING_LABEL["2018"]]
    assert set(np.unique(regions_to_labels(np.ones((3, 1, 1, 1), bool)))) <= {s.label for s in SEGMENTS}
    for field in ("segment_id", "name", "color", "code"):
        assert len({getattr(s, field) for s in SEGMENTS}) == len(SEGMENTS), f"two segments share a {field}"
    for s in SEGMENTS:
        assert len(s.color) == 3 and all(0.0 <= c <= 1.0 for c in s.color)
        assert s.code[1] == "SCT" and s.code[0].isdigit() and s.code[2]


def test_metrics_refuse_arrays_on_different_grids():
    a = np.ones((4, 4, 4), bool)
    with pytest.raises(InputError, match="grid of the truth"):
        dice(a, a[:2])
    with pytest.raises(InputError, match="one grid"):
        psnr(a.astype(float), a.astype(float), a[:, :2])
