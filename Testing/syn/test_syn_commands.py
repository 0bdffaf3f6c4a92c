"""The synthesis commands: registered in the CLI; `synthesize` (= `run --synthesize`) and `bench-syn` on a phantom case."""

import json

import pytest
import torch
from medmodels.cli import build_parser, main
from medmodels.io import read_image
from medmodels.nets.m2dn import M2DNet
from medmodels.options import DEFAULT_SAMPLES
from medmodels.phantom import case_file_names
from medmodels.syn.train import SynTrainConfig, model_config
from medmodels.weights import save_checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    cfg = SynTrainConfig(spacing=(8.0, 8.0, 8.0), encoder_channels=4, channels=(8, 16, 16), emb_dim=16)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {"state_dict": M2DNet(**model_config(cfg)["net"]).state_dict(), "config": model_config(cfg)})
    return path


def test_synthesis_commands_are_registered():
    text = build_parser().format_help()
    for name in ("train-syn", "export", "evaluate-syn", "synthesize", "bench-syn"):
        assert name in text


def test_synthesize_command_writes_the_missing_modalities(phantom_dataset, tiny_checkpoint, tmp_path, capsys):
    case = phantom_dataset / "Phantom_000"
    names = case_file_names("Phantom_000")
    out = tmp_path / "out"
    rc = main(
        [
            "synthesize",
            "--flair",
            str(case / names["flair"]),
            "--t2",
            str(case / names["t2"]),
            "--out",
            str(out),
            "--syn-checkpoint",
            str(tiny_checkpoint),
            "--steps",
            "2",
            "--samples",
            "2",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["manifest.json", "t1.nii.gz", "t1_std.nii.gz", "t1c.nii.gz", "t1c_std.nii.gz"]
    flair = read_image(case / names["flair"])
    assert read_image(out / "t1c.nii.gz").same_grid(flair)


def test_synthesize_command_reports_a_bad_checkpoint_as_an_error(phantom_dataset, tmp_path, capsys):
    case = phantom_dataset / "Phantom_000"
    rc = main(
        [
            "synthesize",
            "--t1",
            str(case / case_file_names("Phantom_000")["t1"]),
            "--out",
            str(tmp_path),
            "--syn-checkpoint",
            str(tmp_path / "none.pt"),
        ]
    )
    assert rc == 2 and capsys.readouterr().err.startswith("ERROR:")


def test_bench_command_times_and_sweeps(phantom_dataset, tiny_checkpoint, tmp_path):
    rc = main(
        [
            "bench-syn",
            str(phantom_dataset / "Phantom_001"),
            "--checkpoint",
            str(tiny_checkpoint),
            "--steps",
            "1,2",
            "--patterns",
            "1101",
            "--slice-stride",
            "2",
            "--out",
            str(tmp_path),
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    result = json.loads((tmp_path / "bench_syn.json").read_text(encoding="utf-8"))
    assert result["timing"]["median_s"] > 0 and result["timing"]["missing"] == "t1c"
    assert result["timing"]["samples"] == DEFAULT_SAMPLES  # the timed synthesis is run's default output
    timing = result["timing"]  # the process's peak memory, which never goes down
    assert 0 < timing["peak_rss_before_mib"] <= timing["peak_rss_mib"]
    assert f"mean of {DEFAULT_SAMPLES} sample(s)" in (tmp_path / "bench_syn.md").read_text(encoding="utf-8")
    assert [(r["sampler"], r["steps"]) for r in result["sweep"]] == [("ddim", 1), ("ddim", 2)]
    assert 0 <= result["timing"]["input_grid_scores"]["ssim"] <= 1


def test_bench_training_measures_a_real_training_step_of_the_checkpoints_configuration(tmp_path, capsys):
    cfg = SynTrainConfig(spacing=(8.0, 8.0, 8.0), encoder_channels=4, channels=(8, 16, 16), emb_dim=16, context=1)
    path = tmp_path / "ctx.pt"
    torch.manual_seed(0)
    save_checkpoint(path, {"state_dict": M2DNet(**model_config(cfg)["net"]).state_dict(), "config": model_config(cfg)})
    argv = ["bench-syn", "--training", "--checkpoint", str(path), "--iterations", "2", "--batch-size", "2"]
    rc = main([*argv, "--tumour-weight", "4", "--out", str(tmp_path), "--threads", "1"])
    assert rc == 0
    result = json.loads((tmp_path / "bench_syn_training.json").read_text(encoding="utf-8"))
    phases = result["seconds_per_iteration"]
    assert set(phases) == {"data", "forward", "backward", "optimiser"} and all(v > 0 for v in phases.values())
    assert result["net"]["context"] == 1 and result["tumour_weight"] == 4.0 and result["batch_size"] == 2
    # a few MFLOP for this tiny net; zero would mean nothing was counted
    assert 0.0001 < result["gflop_per_iteration"] < 5 and result["achieved_gflops"] > 0
    assert "GFLOP/s" in capsys.readouterr().out
    assert result["report"]["command"].startswith("medmodels bench-syn --training --checkpoint")  # provenance
    assert "GFLOP/s" in (tmp_path / "bench_syn_training.md").read_text(encoding="utf-8")
    assert main(["bench-syn", "--checkpoint", str(path)]) == 2  # no case and no --training: an error, not a crash
    # the adversarial loss's discriminator is timed with the network (its figures beside it)
    rc = main([*argv, "--adversarial-weight", "0.1", "--out", str(tmp_path / "adv"), "--threads", "1"])
    adversarial = json.loads((tmp_path / "adv" / "bench_syn_training.json").read_text(encoding="utf-8"))
    assert rc == 0 and adversarial["adversarial_weight"] == 0.1 and adversarial["critic_parameters"] > 0
    assert result["critic_parameters"] == 0
    assert adversarial["gflop_per_iteration"] > result["gflop_per_iteration"]
