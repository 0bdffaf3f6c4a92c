"""The synthesis criterion: the joint error, and the region-mean term that teaches tumour contrast."""

import numpy as np
import pytest
import torch
from medmodels.metrics import ssim
from medmodels.phantom import make_phantom
from medmodels.syn.data import to_working_case
from medmodels.syn.losses import MIN_REGION_PIXELS, joint_mse, region_mean_error, ssim_error, synthesis_loss
from medmodels.syn.train import SynTrainConfig, fit

MISSING = torch.tensor([[0.0, 0.0, 1.0, 0.0]])  # T1c missing


def slice_with_rim():
    """One slice: edema (2) around an enhancing rim (4); the true T1c is bright on the rim only."""
    regions = torch.zeros(1, 32, 32, dtype=torch.long)
    regions[0, 8:24, 8:24] = 2
    regions[0, 12:20, 12:20] = 4
    x0 = torch.zeros(1, 4, 32, 32)
    x0[0, 2][regions[0] == 4] = 2.0
    return x0, regions


def test_brightness_spread_around_the_rim_is_what_the_region_term_sees():
    x0, regions = slice_with_rim()
    spread = torch.zeros_like(x0)
    spread[0, 2][regions[0] > 0] = 0.5  # the rim's brightness smeared over the whole tumour
    noisy_but_placed = x0.clone()
    noisy_but_placed[0, 2] += 0.4 * torch.randn(32, 32, generator=torch.Generator().manual_seed(0))
    noisy_but_placed[0, 2][regions[0] == 4] -= noisy_but_placed[0, 2][regions[0] == 4].mean() - 2.0
    noisy_but_placed[0, 2][regions[0] == 2] -= noisy_but_placed[0, 2][regions[0] == 2].mean()
    assert region_mean_error(spread, x0, MISSING, regions) > 0.5
    assert region_mean_error(noisy_but_placed, x0, MISSING, regions) < 1e-10  # right means, wrong pixels
    assert joint_mse(noisy_but_placed, x0) > 0.5 * joint_mse(spread, x0)  # the pixel error ranks them close


def test_only_missing_channels_and_regions_of_enough_pixels_count():
    x0, regions = slice_with_rim()
    wrong = x0.clone()
    wrong[0, 0] += 3.0  # FLAIR is available here: not counted
    assert region_mean_error(wrong, x0, MISSING, regions) == 0
    tiny = torch.zeros_like(regions)
    tiny[0, 0, : MIN_REGION_PIXELS - 1] = 4
    off = x0 + 1.0
    assert region_mean_error(off, x0, MISSING, tiny) == 0  # too few pixels: no region
    tiny[0, 0, :MIN_REGION_PIXELS] = 4
    assert region_mean_error(off, x0, MISSING, tiny) == pytest.approx(1.0)


def test_without_regions_the_loss_is_the_joint_error_and_keeps_a_gradient():
    x0, regions = slice_with_rim()
    pred = torch.zeros_like(x0, requires_grad=True)
    assert torch.equal(synthesis_loss(pred, x0, MISSING), joint_mse(pred, x0))
    assert torch.equal(synthesis_loss(pred, x0, MISSING, regions=regions, region_weight=0.0), joint_mse(pred, x0))
    with_term = synthesis_loss(pred, x0, MISSING, regions=regions, region_weight=2.0)
    assert with_term > joint_mse(pred, x0)
    nothing = region_mean_error(pred, x0, MISSING, torch.zeros_like(regions))
    nothing.backward()
    assert nothing == 0 and pred.grad is not None


def test_training_with_the_region_term_records_the_region_error(tmp_path):
    spacing = (8.0, 8.0, 8.0)
    cases = []
    for s in (0, 1):
        ph = make_phantom((48, 48, 32), seed=s)
        cases.append(to_working_case(ph.images, spacing, f"P{s}", labels=ph.labels))
    cfg = SynTrainConfig(
        spacing=spacing, encoder_channels=4, channels=(8, 16), emb_dim=16, patch_size=(32, 32), batch_size=4,
        iterations=4, val_every=2, threads=1, device="cpu", val_slices=8, region_weight=1.0, out=str(tmp_path),
    )  # fmt: skip
    h = fit(cfg, cases[:1], cases[1:])["history"]
    assert all(np.isfinite(r["val_region_mse"]) and r["val_region_mse"] > 0 for r in h)


def test_the_ssim_term_is_one_minus_the_scored_ssim_of_the_missing_channels_only():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 32, 32, generator=gen)
    blurred = torch.nn.functional.avg_pool2d(x0, 3, stride=1, padding=1)
    missing = torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert ssim_error(x0, x0, missing, 8.0) == pytest.approx(0.0, abs=1e-6)
    error = ssim_error(blurred, x0, missing, 8.0)
    assert 0.05 < error < 1
    wrong = blurred.clone()
    wrong[0, 0] += 3.0  # FLAIR is available in the first slice: not counted
    assert ssim_error(wrong, x0, missing, 8.0) == pytest.approx(float(error), abs=1e-6)
    # the same SSIM as the one evaluate-syn reports (2D Gaussian window 11), on the window's valid part
    p, t = blurred[0, 2].numpy(), x0[0, 2].numpy()
    scored = ssim(p, t, np.ones_like(p, dtype=bool), data_range=8.0)
    assert 1 - float(ssim_error(blurred[:1], x0[:1], missing[:1], 8.0)) == pytest.approx(scored, abs=0.1)
    pred = blurred.clone().requires_grad_(True)
    total = synthesis_loss(pred, x0, missing, ssim_weight=2.0, ssim_range=8.0)
    assert float(total.detach()) == pytest.approx(float(joint_mse(blurred, x0) + 2.0 * error), rel=1e-5)
    total.backward()
    assert pred.grad[0, 2].abs().sum() > 0 and pred.grad[0, 0].abs().sum() > 0  # the joint error reaches all
    assert ssim_error(pred, x0, torch.zeros_like(missing), 8.0) == 0  # nothing missing: 0, with a gradient path


def test_training_with_the_ssim_term_runs_and_records_it(tmp_path):
    spacing = (8.0, 8.0, 8.0)
    cases = [to_working_case(make_phantom((48, 48, 32), seed=s).images, spacing, f"P{s}") for s in (0, 1)]
    cfg = SynTrainConfig(
        spacing=spacing, encoder_channels=4, channels=(8, 16), emb_dim=16, patch_size=(32, 32), batch_size=4,
        iterations=2, val_every=2, threads=1, device="cpu", val_slices=8, ssim_weight=0.5, out=str(tmp_path),
    )  # fmt: skip
    result = fit(cfg, cases[:1], cases[1:])
    assert np.isfinite(result["history"][-1]["loss_total"])
    assert result["train_options"]["ssim_weight"] == 0.5
