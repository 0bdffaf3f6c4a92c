"""A short real training run on phantoms lowers the loss; checkpoints resume."""

import numpy as np
import pytest
from medmodels.phantom import make_phantom
from medmodels.syn.slices import prepare_case, sample_slices
from medmodels.syn.train import SynTrainConfig, fit

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
    assert (tmp_path / model / "model.pt").exists() and (tmp_path / model / "model.json").exists()


def test_training_resumes_from_its_checkpoint(cases, tmp_path):
    cfg = SynTrainConfig(out=str(tmp_path), iterations=10, val_every=5, **TINY)
    fit(cfg, cases[:2])
    cfg.iterations, cfg.resume = 15, True
    summary = fit(cfg, cases[:2])
    assert [r["iteration"] for r in summary["history"]] == [5, 10, 15]
