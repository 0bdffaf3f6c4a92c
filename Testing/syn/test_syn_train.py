"""A short real training run on phantoms lowers the loss; checkpoints resume."""

import numpy as np
import pytest
import torch
from medmodels.errors import InputError
from medmodels.phantom import make_phantom
from medmodels.syn.data import random_affine, sample_batch, sample_slices, slice_context, to_working_case
from medmodels.syn.train import SynTrainConfig, fit, grows_from, model_config, synthesis_scores
from syn_tiny import SPACING, TINY, phantom_cases


@pytest.fixture(scope="module")
def cases():
    return phantom_cases()


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


def test_neighbours_and_labels_get_the_crop_placement_and_mirroring_of_their_slice():
    ph = make_phantom((48, 48, 32), seed=4)
    case = to_working_case(ph.images, SPACING, "P4", labels=ph.labels)
    assert case.labels is not None and case.labels.shape == case.brain.shape and (case.labels[~case.brain] == 0).all()
    z = np.arange(case.image.shape[1], dtype=np.float32)[None, :, None, None]
    case.image = np.where(case.brain[None], z + 1, 0).astype(np.float32)  # every voxel tells its slice
    case.labels = case.brain.astype(np.uint8)
    b = sample_batch([case], 12, (24, 24), np.random.default_rng(3), flip=True, context=2)
    assert b.x0.shape == (12, 4, 24, 24) and b.context.shape == (12, 4, 4, 24, 24) and b.labels.shape == (12, 24, 24)
    assert torch.equal(b.labels > 0, b.x0[:, 0] != 0)  # labels follow their slice through crop and flip
    last = case.image.shape[1]
    for k, offset in enumerate((-2, -1, 1, 2)):
        both = (b.context[:, 0, k] != 0) & (b.x0[:, 0] != 0)
        expected = (b.x0[:, 0] - 1 + offset).clamp(0, last - 1) + 1  # slice z + offset, clamped to the crop
        assert both.any() and torch.equal(b.context[:, 0, k][both], expected[both])
    ends = slice_context(case.image, np.array([0, last - 1]), 1)
    assert (ends[0, :, 0] == case.image[:, 0]).all() and (ends[1, :, 1] == case.image[:, last - 1]).all()


def test_a_2d_model_grows_into_a_2_5d_one_and_trains_on_from_it(cases, tmp_path):
    phantoms = [make_phantom((48, 48, 32), seed=s) for s in (0, 1)]
    labelled = [to_working_case(p.images, SPACING, f"L{i}", labels=p.labels) for i, p in enumerate(phantoms)]
    small = SynTrainConfig(out=str(tmp_path / "2d"), iterations=10, val_every=10, context=0, refine_blocks=0, **TINY)
    first = fit(small, labelled, cases[2:])
    grown = SynTrainConfig(
        out=str(tmp_path / "25d"),
        iterations=1,
        val_every=1,
        init=str(tmp_path / "2d" / "model.pt"),
        context=1,
        refine_blocks=1,
        tumour_weight=4.0,
        **{**TINY, "lr": 0.0},
    )
    second = fit(grown, labelled, cases[2:])
    assert "context" in second["init"]["grown_from"] and second["cumulative_iterations"] == 11
    # the starting weights are validated first; the grown network is the trained one plus identities,
    # so it gives the same validation loss, and with lr 0 it still does after a step
    start, after = second["history"]
    assert start["iteration"] == 0 and after["iteration"] == 1
    for record in (start, after):
        assert record["val_loss"] == pytest.approx(first["history"][-1]["val_loss"], rel=1e-5)
    ours, theirs = model_config(grown), model_config(small)
    assert grows_from(ours, theirs) and not grows_from(theirs, ours)  # context is not taken away
    # a finer working grid starts from coarser weights (fully convolutional); the shape still must fit
    finer = model_config(SynTrainConfig(**{**TINY, "spacing": (1.25, 1.25, 1.25)}))
    assert grows_from(finer, theirs) and not grows_from(model_config(SynTrainConfig(**{**TINY, "emb_dim": 8})), theirs)
    other = SynTrainConfig(out=str(tmp_path / "w"), init=str(tmp_path / "2d" / "model.pt"), **{**TINY, "emb_dim": 8})
    assert SynTrainConfig().context == 1 and SynTrainConfig().tumour_weight == 4.0  # the bundled models' settings
    with pytest.raises(InputError, match="another model configuration"):
        fit(other, labelled, cases[2:])


def test_random_affine_moves_slices_neighbours_and_labels_together():
    ph = make_phantom((48, 48, 32), seed=5)
    case = to_working_case(ph.images, SPACING, "P5", labels=ph.labels)
    case.labels = case.brain.astype(np.uint8)  # labels = brain = FLAIR's indicator: they must move together
    case.image[0] = case.brain.astype(np.float32)
    batch = sample_batch([case], 6, (24, 24), np.random.default_rng(0), flip=False, context=1)
    same = random_affine(batch, np.random.default_rng(1), 0.0, 0.0)
    assert torch.allclose(same.x0, batch.x0, atol=1e-5) and torch.equal(same.labels, batch.labels)
    moved = random_affine(batch, np.random.default_rng(1), 15.0, 0.15)
    assert moved.x0.shape == batch.x0.shape and moved.context.shape == batch.context.shape
    assert not torch.allclose(moved.x0, batch.x0, atol=1e-3)
    agree = ((moved.x0[:, 0] > 0.5) == (moved.labels > 0)).float().mean()
    assert agree > 0.97 and moved.labels.sum() > 0.8 * batch.labels.sum()
