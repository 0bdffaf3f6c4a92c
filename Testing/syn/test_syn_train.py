"""A short real training run on phantoms lowers the loss; checkpoints resume."""

import numpy as np
import pytest
import torch
from medmodels.phantom import make_phantom
from medmodels.syn.slices import prepare_case, sample_slices
from medmodels.syn.train import SynTrainConfig, fit, synthesis_scores

SPACING = (8.0, 8.0, 8.0)
TINY = dict(
    spacing=SPACING,
    encoder_channels=4,
    channels=(8, 16, 16),
    emb_dim=16,
    patch_size=(32, 32),
    batch_size=8,
    lr=3e-3,
    warmup=5,
    threads=1,
    device="cpu",
    val_slices=16,
)


@pytest.fixture(scope="module")
def cases():
    return [prepare_case(make_phantom((48, 48, 32), seed=s).images, SPACING, f"P{s}") for s in (0, 1, 2)]


def test_slices_come_from_the_brain_and_fill_the_canvas(cases):
    x = sample_slices(cases, 6, (32, 32), np.random.default_rng(0))
    assert x.shape == (6, 4, 32, 32)
    assert ((x != 0).flatten(1).sum(1) > 50).all()  # every slice shows brain


@pytest.mark.parametrize("model", ["m2dn", "regression"])
def test_short_training_lowers_the_loss(cases, tmp_path, model):
    cfg = SynTrainConfig(out=str(tmp_path / model), model=model, iterations=60, val_every=10, **TINY)
    summary = fit(cfg, cases[:2], cases[2:])
    h = summary["history"]
    assert len(h) == 6 and summary["slices_seen"] == 480
    assert h[-1]["val_loss"] < 0.8 * h[0]["val_loss"]  # validation loss on fixed unseen-case slices
    assert np.mean([r["loss_total"] for r in h[-3:]]) < h[0]["loss_total"]
    assert 0 < h[-1]["val_ssim"] <= 1 and h[-1]["val_ssim"] > h[0]["val_ssim"]  # the default sampler's output
    assert (tmp_path / model / "model.pt").exists() and (tmp_path / model / "model.json").exists()


def test_synthesis_scores_count_only_the_missing_channels_inside_the_brain(cases):
    x0 = sample_slices(cases, 4, (32, 32), np.random.default_rng(1))
    missing = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0]], dtype=torch.float32)
    perfect = synthesis_scores(x0.clone(), x0, missing)
    assert perfect["val_ssim"] == pytest.approx(1.0) and perfect["val_psnr"] > 60
    wrong = x0.clone()
    wrong[[0, 1, 3], 3] = 5.0  # T2, available in slices 0, 1 and 3: does not count ...
    assert synthesis_scores(wrong[[0, 1, 3]], x0[[0, 1, 3]], missing[[0, 1, 3]]) == perfect
    noisy = x0 + 0.5 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    worse = synthesis_scores(noisy, x0, missing)  # ... noise in the missing ones does
    assert worse["val_ssim"] < 0.9 and worse["val_psnr"] < perfect["val_psnr"]


def test_training_resumes_from_its_checkpoint(cases, tmp_path):
    cfg = SynTrainConfig(out=str(tmp_path), iterations=10, val_every=5, **TINY)
    fit(cfg, cases[:2])
    cfg.iterations, cfg.resume = 15, True
    summary = fit(cfg, cases[:2])
    assert [r["iteration"] for r in summary["history"]] == [5, 10, 15]
