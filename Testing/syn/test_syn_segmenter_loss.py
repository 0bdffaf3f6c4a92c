"""train-syn --segmenter-weight: a frozen segmenter reads a synthesised block and its ET/TC loss trains the network."""

import json

import numpy as np
import pytest
import torch
from medmodels.cli import main
from medmodels.errors import CheckpointError, InputError
from medmodels.labels import convert_convention, labels_to_regions
from medmodels.nets.m2dn import M2DNet
from medmodels.phantom import make_phantom
from medmodels.seg.inference import load_segmenter
from medmodels.segmenter_in_the_loop import block_loss, frozen, pooling_factor, segmenter_loss
from medmodels.syn.data import sample_block, to_working_case
from medmodels.syn.train import T1C_MISSING, SynTrainConfig, fit, make_task, model_config
from medmodels.weights import save_checkpoint
from syn_tiny import TINY

#: The bundled segmenter's working spacing: blocks at it go to the segmenter unpooled.
SEG_SPACING = (2.5, 2.5, 2.5)
T1C_ONLY_MISSING = torch.tensor([0.0, 0.0, 1.0, 0.0])


@pytest.fixture(scope="module")
def cases():
    """Labelled phantom cases at the segmenter's spacing."""
    phantoms = [make_phantom((96, 96, 64), seed=s) for s in (0, 1)]
    return [to_working_case(p.images, SEG_SPACING, f"S{i}", labels=p.labels) for i, p in enumerate(phantoms)]


@pytest.fixture(scope="module")
def segmenter():
    return frozen(load_segmenter("bundled", device="cpu").model)  # the bundled ShaSpec


def tiny(tmp_path, name, **options):
    return SynTrainConfig(
        out=str(tmp_path / name),
        **{**TINY, "spacing": SEG_SPACING, "model": "regression", "val_every": 2, "segmenter_block": 32, **options},
    )


def test_a_block_larger_than_the_case_holds_all_of_it_padded_with_background(cases):
    case = cases[0]
    size = 8 * (max(case.image.shape[1:]) // 8 + 1)
    block = sample_block([case], size, np.random.default_rng(0), flip=False, context=1)
    assert block.x0.shape == (size, 4, size, size) and block.context.shape == (size, 4, 2, size, size)
    assert block.regions.shape == (3, size, size, size)
    assert block.x0.sum().item() == pytest.approx(float(case.image.sum()), rel=1e-4)  # every voxel, once
    assert torch.equal(
        block.regions.sum(dim=(1, 2, 3)), torch.from_numpy(labels_to_regions(case.labels).sum((1, 2, 3))).float()
    )
    # each slice's context holds its neighbours: the slice before it is the previous slice of the block
    inside = torch.nonzero(block.x0.flatten(1).abs().sum(1)).flatten()
    z = int(inside[len(inside) // 2])
    assert torch.equal(block.context[z, :, 0], block.x0[z - 1]) and torch.equal(block.context[z, :, 1], block.x0[z + 1])


def test_a_block_is_centred_near_the_enhancing_tumour_whatever_the_label_convention(cases):
    case = cases[1]
    for seed in range(5):
        block = sample_block([case], 16, np.random.default_rng(seed), flip=True)
        assert block.regions[0].sum() > 0  # the enhancing tumour is in every block
    relabelled = to_working_case(make_phantom((96, 96, 64), seed=1).images, SEG_SPACING, "2023")
    relabelled.labels = convert_convention(case.labels, "2023")  # ET = 3
    a, b = (sample_block([c], 16, np.random.default_rng(3)) for c in (case, relabelled))
    assert torch.equal(a.regions, b.regions) and torch.equal(a.x0, b.x0)
    unlabelled = to_working_case(make_phantom((48, 48, 32), seed=0).images, SEG_SPACING, "none")
    with pytest.raises(InputError, match="needs tumour labels"):
        sample_block([unlabelled], 16, np.random.default_rng(0))


def test_the_loss_is_lowest_for_the_true_t1c_and_higher_without_its_enhancement(cases, segmenter):
    for seed, case in enumerate(cases):
        block = sample_block([case], 32, np.random.default_rng(seed), flip=False)
        as_t1 = block.x0.clone()
        as_t1[:, 2] = block.x0[:, 1]  # a T1c without enhancement: the T1 in its place
        true, plain, none = (
            segmenter_loss(segmenter, pred, block.x0, T1C_ONLY_MISSING, block.regions).item()
            for pred in (block.x0, as_t1, torch.zeros_like(block.x0))
        )
        assert true < plain < none, (case.name, true, plain, none)


def test_its_gradient_reaches_only_the_missing_channels_inside_the_brain_never_the_segmenter(cases, segmenter):
    block = sample_block(cases, 32, np.random.default_rng(1))
    pred = torch.randn_like(block.x0, requires_grad=True)
    missing = torch.tensor([1.0, 0.0, 1.0, 0.0]).expand(32, -1)  # one pattern for the block, as (D, M)
    segmenter_loss(segmenter, pred, block.x0, missing, block.regions).backward()
    brain = (block.x0 != 0).any(dim=1)  # (D, H, W)
    for channel in (0, 2):
        assert pred.grad[:, channel][brain].abs().sum() > 0
        assert not pred.grad[:, channel][~brain].any()  # outside the brain the segmenter sees 0, not the estimate
    assert not pred.grad[:, [1, 3]].any()  # acquired channels are the truth
    assert all(p.grad is None and not p.requires_grad for p in segmenter.parameters())


def test_a_finer_synthesis_grid_is_pooled_to_the_segmenters_and_a_fractional_one_refused(cases, segmenter):
    assert pooling_factor((1.25, 1.25, 1.25), SEG_SPACING) == 2 and pooling_factor(SEG_SPACING, SEG_SPACING) == 1
    with pytest.raises(InputError, match="whole multiple"):
        pooling_factor((2.0, 2.0, 2.0), SEG_SPACING)
    with pytest.raises(InputError, match="whole multiple"):
        pooling_factor((1.25, 1.25, 2.5), SEG_SPACING)
    block = sample_block(cases, 64, np.random.default_rng(0))
    pred = block.x0.clone().requires_grad_(True)
    loss = segmenter_loss(segmenter, pred, block.x0, T1C_ONLY_MISSING, block.regions, pool=2)
    loss.backward()
    assert torch.isfinite(loss) and pred.grad[:, 2].abs().sum() > 0


@pytest.mark.parametrize("model", ["regression", "m2dn"])
def test_without_the_weight_a_run_is_unchanged_and_with_it_the_term_is_trained_and_recorded(cases, tmp_path, model):
    plain, weighted = (tiny(tmp_path, str(w), segmenter_weight=w, model=model) for w in (0.0, 0.5))
    assert model_config(weighted) == model_config(plain)  # a training option: the model is a plain one
    task = make_task(plain, cases, cases, torch.device("cpu"), main=False)
    seg_task = make_task(weighted, cases, cases, torch.device("cpu"), main=False, block_loss=block_loss(weighted))
    batch, seg_batch = (t.sample(np.random.default_rng(0), 0.0) for t in (task, seg_task))
    assert len(batch) == 6 and all(torch.equal(a, b) for a, b in zip(batch, seg_batch[:6]))  # same slices drawn
    x0, missing, context, regions = seg_batch[6:]
    assert x0.shape == (32, 4, 32, 32) and regions.shape == (3, 32, 32, 32)
    assert missing[0, 2] == 1 and torch.equal(missing, missing[:1].expand_as(missing))  # T1c missing, one pattern
    assert {m.missing_vector()[2] for m in T1C_MISSING} == {1.0} and len(T1C_MISSING) == 7
    losses = seg_task.losses(seg_task.model, seg_batch, torch.Generator().manual_seed(3), None)
    before = task.losses(task.model, batch, torch.Generator().manual_seed(3), None)["total"]
    assert losses["total"].item() == pytest.approx(before.item() + 0.5 * losses["segmenter"].item(), rel=1e-5)
    losses["segmenter"].backward()  # the term alone trains the synthesis network, through the frozen segmenter
    assert sum(float(p.grad.abs().sum()) for p in seg_task.model.parameters() if p.grad is not None) > 0
    run = tiny(tmp_path, "run", segmenter_weight=0.5, iterations=2, model=model)
    summary = fit(run, cases[:1], cases[1:], block_loss=block_loss(run))
    assert all("loss_segmenter" in record for record in summary["history"])
    assert summary["train_options"]["segmenter"] == "bundled"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(segmenter_weight=0.5, segmenter_block=20), "not a multiple of 8"),
        (dict(segmenter_weight=0.5, spacing=(8.0, 8.0, 8.0)), "whole multiple"),
    ],
)
def test_bad_segmenter_options_are_refused_before_training(tmp_path, options, message):
    with pytest.raises(InputError, match=message):
        block_loss(tiny(tmp_path, "bad", **options))
    with pytest.raises(CheckpointError, match="missing.pt"):
        block_loss(tiny(tmp_path, "bad", segmenter_weight=0.5, segmenter="missing.pt"))


def test_the_trainer_refuses_a_negative_weight_or_a_weight_without_its_loss(cases, tmp_path):
    with pytest.raises(InputError, match="must not be negative"):
        make_task(tiny(tmp_path, "negative", segmenter_weight=-1.0), cases, cases, torch.device("cpu"), main=False)
    with pytest.raises(InputError, match="needs the segmenter's loss"):
        make_task(tiny(tmp_path, "alone", segmenter_weight=0.5), cases, cases, torch.device("cpu"), main=False)
    rc = main(["train-syn", "data", "--out", str(tmp_path / "cli"), "--segmenter-weight", "-1", "--threads", "1"])
    assert rc == 2  # the command's clear error, not a crash


def test_bench_training_times_the_block_through_the_segmenter(tmp_path):
    cfg = SynTrainConfig(spacing=SEG_SPACING, encoder_channels=4, channels=(8, 16, 16), emb_dim=16, context=1)
    path = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    save_checkpoint(path, {"state_dict": M2DNet(**model_config(cfg)["net"]).state_dict(), "config": model_config(cfg)})
    argv = ["bench-syn", "--training", "--checkpoint", str(path), "--iterations", "2", "--batch-size", "2"]
    argv += ["--threads", "1"]
    assert main([*argv, "--out", str(tmp_path / "plain")]) == 0
    assert main([*argv, "--segmenter-weight", "0.1", "--segmenter-block", "32", "--out", str(tmp_path / "seg")]) == 0
    plain, seg = (json.loads((tmp_path / n / "bench_syn_training.json").read_text()) for n in ("plain", "seg"))
    assert (plain["segmenter_weight"], plain["segmenter_block"]) == (0.0, 0)
    assert (seg["segmenter_weight"], seg["segmenter_block"]) == (0.1, 32)
    assert seg["gflop_per_iteration"] > 2 * plain["gflop_per_iteration"]  # the block and the 3D segmenter
    assert "32-voxel block" in (tmp_path / "seg" / "bench_syn_training.md").read_text()
