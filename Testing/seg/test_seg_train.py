"""Training on phantoms: a real optimisation step lowers the loss; the
trainer runs end to end, resumes, and writes a loadable checkpoint."""

import json

import numpy as np
import pytest
import torch
from medmodels.errors import InputError
from medmodels.nets.shaspec import ShaSpec
from medmodels.seg.data import prepare
from medmodels.seg.losses import seg_losses
from medmodels.seg.sampling import TrainCase, make_batch
from medmodels.seg.train import TrainConfig, parse_subset, train

TINY = dict(
    width=4,
    depth=3,
    spacing=(8.0, 8.0, 8.0),
    patch_size=(16, 16, 16),
    batch_size=1,
    val_every=1,
    threads=1,
    device="cpu",
)


def test_training_steps_lower_the_loss_on_a_phantom(small_phantom):
    torch.manual_seed(0)
    arrays = {k: img.array for k, img in small_phantom.images.items()}
    prep = prepare(arrays, small_phantom.labels.spacing, (5.0, 5.0, 5.0), small_phantom.labels.array)
    case = TrainCase.build("p", prep.image, prep.regions, (16, 16, 16))
    rng = np.random.default_rng(0)
    x, y, m = make_batch([case], 2, (16, 16, 16), rng, fg_prob=1.0)
    assert y[:, 2].any(), "the patches should contain tumour"
    net = ShaSpec(width=4, depth=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    totals = []
    for _ in range(12):
        losses = seg_losses(net(x, m), y)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        totals.append(float(losses["total"].detach()))
    assert totals[-1] < 0.9 * totals[0], totals


def test_patches_oversample_tumour(small_phantom):
    arrays = {k: img.array for k, img in small_phantom.images.items()}
    prep = prepare(arrays, small_phantom.labels.spacing, (5.0, 5.0, 5.0), small_phantom.labels.array)
    case = TrainCase.build("p", prep.image, prep.regions, (8, 8, 8))
    rng = np.random.default_rng(0)
    with_fg = [bool(make_batch([case], 1, (8, 8, 8), rng, fg_prob=1.0)[1][:, 2].any()) for _ in range(20)]
    assert all(with_fg)


def test_dropped_modalities_are_zero_in_the_batch(small_phantom):
    arrays = {k: img.array for k, img in small_phantom.images.items()}
    prep = prepare(arrays, small_phantom.labels.spacing, (5.0, 5.0, 5.0), small_phantom.labels.array)
    case = TrainCase.build("p", prep.image, prep.regions, (16, 16, 16))
    x, _, m = make_batch([case], 16, (16, 16, 16), np.random.default_rng(1))
    assert m.any(dim=1).all() and len({tuple(r.tolist()) for r in m}) > 3
    assert (x[~m] == 0).all()
    x, _, m = make_batch([case], 4, (16, 16, 16), np.random.default_rng(1), fixed_mask=parse_subset("flair,t1c"))
    assert (m == torch.tensor([True, False, True, False])).all()


def test_parse_subset():
    assert parse_subset(None) is None and parse_subset("random") is None
    assert parse_subset("0010") == (False, False, True, False)
    assert parse_subset("t2, flair") == (True, False, False, True)
    with pytest.raises(InputError):
        parse_subset("flair,pd")


def test_train_end_to_end_and_resume(phantom_dataset, tmp_path):
    from medmodels.seg.inference import load_segmenter

    out = tmp_path / "run"
    summary = train(TrainConfig(data=str(phantom_dataset), out=str(out), iterations=2, **TINY))
    assert summary["iterations"] == 2 and len(summary["history"]) == 2
    assert (out / "model.pt").exists() and (out / "model.json").exists() and (out / "last.pt").exists()
    rec = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert rec["config"]["spacing"] == [8.0, 8.0, 8.0] and rec["config"]["arch"] == "shaspec"
    assert np.isfinite(summary["history"][-1]["loss_total"])
    # resume to 3 iterations: continues at 2
    summary = train(TrainConfig(data=str(phantom_dataset), out=str(out), iterations=3, resume=True, **TINY))
    assert [h["iteration"] for h in summary["history"]] == [1, 2, 3]
    assert load_segmenter(out / "model.pt", device="cpu").arch == "shaspec"
    # resuming with another architecture is refused
    with pytest.raises(InputError, match="another configuration"):
        train(TrainConfig(data=str(phantom_dataset), out=str(out), iterations=4, resume=True, **{**TINY, "width": 8}))


def test_baseline_and_dedicated_subset_train(phantom_dataset, tmp_path):
    summary = train(
        TrainConfig(
            data=str(phantom_dataset), out=str(tmp_path / "b"), arch="unet3d", subset="flair,t2", iterations=1, **TINY
        )
    )
    assert summary["config"]["arch"] == "unet3d" and summary["config"]["subset"] == "1001"
    assert "loss_dao" not in summary["history"][0]
