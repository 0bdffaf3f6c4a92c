"""Ensembles of segmentation checkpoints (``export A B ...``): the network averages its members'
probabilities, the checkpoint loads and runs like any other, its record keeps every member's
training cases, and members that cannot share one input are refused."""

import json

import numpy as np
import pytest
import torch
from medmodels.cli import main
from medmodels.errors import CheckpointError, InputError
from medmodels.held_out import trained_on_cases
from medmodels.modalities import AvailabilityMask
from medmodels.nets.ensemble import ProbabilityMean
from medmodels.nets.segmentation import build_segmentation_net
from medmodels.nets.shaspec import ShaSpec
from medmodels.nets.unet3d import UNet3D
from medmodels.seg.ensemble import write_ensemble
from medmodels.seg.inference import load_segmenter
from medmodels.weights import load_checkpoint, save_checkpoint


def test_the_ensemble_returns_the_logit_of_the_mean_probability():
    torch.manual_seed(0)
    members = [ShaSpec(width=4, depth=2).eval(), UNet3D(width=4, depth=2).eval()]
    x, mask = torch.randn(1, 4, 8, 8, 8), torch.tensor([True, False, True, True])
    with torch.no_grad():
        got = torch.sigmoid(ProbabilityMean(members)(x, mask)["logits"])
        want = torch.stack([torch.sigmoid(m(x, mask)["logits"]) for m in members]).mean(0)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="two or more"):
        ProbabilityMean(members[:1])


def test_an_ensemble_checkpoint_runs_as_the_mean_of_its_members(tiny_seg_models, small_phantom, tmp_path):
    paths = [tiny_seg_models["shaspec"], tiny_seg_models["unet3d"]]
    record = write_ensemble(paths, "both", tmp_path, half=False)  # float32 as the members: an exact mean
    ensemble = load_segmenter(tmp_path / "both.pt", device="cpu")
    assert ensemble.arch == "ensemble" and ensemble.threshold == 0.5  # no member's threshold is carried over
    assert [m["sha256"] for m in record["members"]] == [
        json.loads(p.with_suffix(".json").read_text())["sha256"] for p in paths
    ]
    images = small_phantom.images
    mask = AvailabilityMask.from_keys(["flair", "t1c"])
    used = {k: images[k] for k in mask.keys}
    members = [load_segmenter(p, device="cpu").probabilities(used, None, mask) for p in paths]
    np.testing.assert_allclose(ensemble.probabilities(used, None, mask), np.mean(members, axis=0), atol=1e-5)
    out = ensemble.segment(used, mask)
    assert out.same_grid(images["flair"]) and set(np.unique(out.array)) <= {0, 1, 2, 4}


def test_the_ensemble_is_not_held_out_on_any_members_training_case(tiny_seg_models, with_training_cases, tmp_path):
    a = with_training_cases(tiny_seg_models["shaspec"], tmp_path / "a", ["case_1", "case_2"])
    b = with_training_cases(tiny_seg_models["unet3d"], tmp_path / "b", ["case_3"])
    record_b = json.loads(b.with_suffix(".json").read_text())
    record_b["training"]["lineage"] = [{"sha256": "0" * 64, "training_cases": "the 11 of the split"}]  # a note
    b.with_suffix(".json").write_text(json.dumps(record_b))
    record = write_ensemble([a, b], "both", tmp_path)
    assert record["training"]["training_cases"] == ["case_1", "case_2", "case_3"]
    assert trained_on_cases(tmp_path / "both.pt", ["case_2", "case_3", "case_9"]) == ["case_2", "case_3"]


def test_members_that_cannot_share_one_input_are_refused(tiny_seg_models, tmp_path):
    shaspec = tiny_seg_models["shaspec"]
    payload = load_checkpoint(tiny_seg_models["unet3d"], config_as_stored=True)
    payload["config"] = {**payload["config"], "spacing": [4.0, 4.0, 4.0]}
    other = tmp_path / "other.pt"
    save_checkpoint(other, payload)
    with pytest.raises(InputError, match="differ in 'spacing'.*same spacing"):
        write_ensemble([shaspec, other], "both", tmp_path)
    with pytest.raises(InputError, match="two or more"):
        write_ensemble([shaspec], "one", tmp_path)
    write_ensemble([shaspec, tiny_seg_models["unet3d"]], "both", tmp_path)
    with pytest.raises(InputError, match="already an ensemble"):
        write_ensemble([tmp_path / "both.pt", shaspec], "nested", tmp_path)
    with pytest.raises(InputError, match="both.pt"):  # an existing ensemble is never replaced
        write_ensemble([shaspec, tiny_seg_models["unet3d"]], "both", tmp_path)
    assert not (tmp_path / "one.pt").exists() and not (tmp_path / "nested.pt").exists()


def test_a_damaged_ensemble_config_is_named():
    with pytest.raises(CheckpointError, match="two or more single networks"):
        build_segmentation_net({"kind": "ensemble", "net": {"members": [{"kind": "unet3d", "net": {"width": 4}}]}})


def test_export_of_several_models_writes_an_ensemble_that_evaluate_seg_reads(
    tiny_seg_models, phantom_dataset, tmp_path, capsys
):
    # members as a run folder and as a model.pt; float32 weights stored as float16, as export stores one model
    args = ["export", str(tiny_seg_models["shaspec"].parent), str(tiny_seg_models["unet3d"])]
    assert main([*args, "--name", "both", "--out", str(tmp_path / "ens")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["file"] == "both.pt" and len(printed["sha256"]) == 64
    stored = torch.load(tmp_path / "ens" / "both.pt", weights_only=True)["state_dict"]
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert main([*args, "--name", "both32", "--out", str(tmp_path / "ens"), "--float32"]) == 0
    stored = torch.load(tmp_path / "ens" / "both32.pt", weights_only=True)["state_dict"]
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float32}
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate-seg",
            str(phantom_dataset),
            "--checkpoint",
            str(tmp_path / "ens" / "both.pt"),
            "--subsets",
            "1111",
            "--no-hd95",
            "--out",
            str(out),
            "--threads",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert len(rows) == 3 and all(0.0 <= r["Dice_WT"] <= 1.0 for r in rows)
