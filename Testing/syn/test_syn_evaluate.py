"""Synthesis evaluation: metrics, the mean-fill baseline, an end-to-end run on phantoms."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from medmodels.datasets import write_split
from medmodels.errors import InputError
from medmodels.modalities import AvailabilityMask
from medmodels.syn.evaluate import evaluate
from medmodels.syn.scoring import calibration, mean_fill, slice_metrics
from medmodels.syn.train import SynTrainConfig, train

TINY = dict(
    spacing=(8.0, 8.0, 8.0),
    encoder_channels=4,
    channels=(8, 16, 16),
    emb_dim=16,
    patch_size=(32, 32),
    batch_size=4,
    threads=1,
    device="cpu",
    val_slices=4,
)


def test_metrics_of_a_perfect_and_a_flat_prediction():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(3, 24, 24)).astype(np.float32)
    brain = np.zeros_like(truth, dtype=bool)
    brain[:, 4:20, 4:20] = True
    lo, hi = float(truth[brain].min()), float(truth[brain].max())
    perfect = slice_metrics(truth, truth, brain, lo, hi)
    assert np.allclose(perfect["ssim"], 1, atol=1e-4) and np.allclose(perfect["mae"], 0)
    flat = slice_metrics(np.zeros_like(truth), truth, brain, lo, hi)
    assert (flat["ssim"] < 0.7).all() and (flat["psnr"] < perfect["psnr"]).all()


def test_calibration_tells_a_std_map_that_marks_the_error_from_one_that_does_not():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(2, 32, 32))
    brain = np.ones(truth.shape, bool)
    error = rng.normal(size=truth.shape) * np.linspace(0.05, 2, 32)[None, None]  # grows to the right
    honest = calibration(np.broadcast_to(np.linspace(0.05, 2, 32), truth.shape), truth + error, truth, brain)
    blind = calibration(rng.uniform(size=truth.shape), truth + error, truth, brain)
    assert honest["spearman"] > 0.5 and honest["error_ratio"] > 5
    assert abs(blind["spearman"]) < 0.1 and 0.8 < blind["error_ratio"] < 1.25
    assert calibration(np.zeros(truth.shape), truth + error, truth, brain) == {"spearman": None, "error_ratio": None}


def test_mean_fill_uses_the_available_modalities_only():
    x = np.stack([np.full((2, 2), v, np.float32) for v in (1.0, 3.0, 100.0, 5.0)])
    out = mean_fill(x, AvailabilityMask.from_bits("1101"))
    assert np.allclose(out[2], 3.0) and np.allclose(out[[0, 1, 3]], x[[0, 1, 3]])


@pytest.fixture(scope="module")
def tiny_models(phantom_dataset, tmp_path_factory):
    """A split of the phantom dataset (2 training, 1 validation case) and tiny M2DN and regression checkpoints."""
    root = tmp_path_factory.mktemp("syn_eval")
    names = sorted(p.name for p in phantom_dataset.iterdir())
    split = root / "split.json"
    write_split(split, names[:2], names[2:])
    ckpt = {}
    for model in ("m2dn", "regression"):
        cfg = SynTrainConfig(
            data=str(phantom_dataset),
            out=str(root / model),
            split=str(split),
            model=model,
            iterations=4,
            val_every=4,
            **TINY,
        )
        train(cfg)
        ckpt[model] = root / model / "model.pt"
    return split, ckpt, names


def test_evaluation_runs_end_to_end_on_phantoms(phantom_dataset, tiny_models, tmp_path):
    split, ckpt, names = tiny_models
    out = tmp_path / "eval.json"
    result = evaluate(
        phantom_dataset,
        split,
        out,
        checkpoint=ckpt["m2dn"],
        baseline=ckpt["regression"],
        steps=2,
        slice_stride=2,
        patterns="1101,1000",
        device="cpu",
    )
    assert [r["pattern"] for r in result["table"]] == ["1101", "1000"]
    assert result["validation_cases"] == names[2:]
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert len(saved["per_case"]) == 1 + 3  # one missing modality, then three
    for row in result["table"]:
        assert 0 <= row["m2dn_ssim"] <= 1 and row["mean_fill_psnr"] > 0
        assert row["p_ssim_vs_regression"] is None or 0 <= row["p_ssim_vs_regression"] <= 1
    assert out.with_suffix(".md").read_text(encoding="utf-8").startswith("| available |")
    (single, _) = result["input_grid"]  # input-grid scores are on by default
    assert 0 <= single["m2dn_brain_ssim"] <= 1 and single["n_cases"] == 1
    assert result["enhancement"][0]["pattern"] == "1101"


def test_input_grid_scores_and_case_tests_on_two_cases(phantom_dataset, tiny_models, tmp_path):
    """Two validation cases: whole-volume scores in the brain and the tumour, the T1c
    enhancement per case, and per-case paired tests over both grids."""
    split, ckpt, names = tiny_models
    two = tmp_path / "split2.json"
    write_split(two, names[:1], names[1:])  # evaluation reads only the validation part
    out = tmp_path / "eval.json"
    kwargs = dict(checkpoint=ckpt["m2dn"], baseline=ckpt["regression"], steps=2, slice_stride=2, device="cpu")
    result = evaluate(phantom_dataset, two, out, patterns="1101", **kwargs)
    (row,) = result["input_grid"]
    assert row["n_cases"] == 2
    for method, region in itertools.product(("m2dn", "regression", "mean_fill"), ("brain", "tumour")):
        assert -1 <= row[f"{method}_{region}_ssim"] <= 1 and 0 <= row[f"{method}_{region}_mae"] <= 1  # tiny models
    test = row["test_brain_ssim"]
    assert test["n"] == 2 and test["min_p"] in (None, 0.5) and test["test"].startswith("Wilcoxon")
    assert result["table"][0]["test_ssim_vs_regression_cases"]["n"] == 2
    (enh,) = result["enhancement"]
    assert [c["case"] for c in enh["cases"]] == names[1:] and enh["true"] > 0
    assert all(c["m2dn_ratio"] is None or np.isfinite(c["m2dn_ratio"]) for c in enh["cases"])
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["input_grid"] == result["input_grid"] and len(saved["per_case_input_grid"]) == 2
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "Per-case paired tests" in md and "Input grid" in md and "T1c enhancement" in md
    off = evaluate(phantom_dataset, two, tmp_path / "off.json", patterns="1101", input_grid=False, **kwargs)
    assert off["input_grid"] is None and off["enhancement"] is None and "Input grid" not in off["markdown"]


@pytest.mark.slow
def test_downstream_dice_is_added_to_the_evaluation(phantom_dataset, tiny_models, tmp_path):
    """evaluate-syn --dice: the pipeline-level module scores the bundled segmenter on the
    incomplete and the synthesised full set; the evaluation, Dice included, is then written once."""
    from medmodels.downstream import add_downstream_dice
    from medmodels.syn.evaluate import write_result

    split, ckpt, names = tiny_models
    out = tmp_path / "eval.json"
    kwargs = dict(checkpoint=ckpt["m2dn"], steps=2, patterns="1101", device="cpu")
    result = evaluate(phantom_dataset, split, None, baseline=ckpt["regression"], slice_stride=4, **kwargs)
    assert result["dice"] is None
    result = add_downstream_dice(result, phantom_dataset, split, segmenter="baseline", **kwargs)
    assert not list(tmp_path.iterdir())  # the Dice writes nothing: no file is rewritten
    write_result(result, out)
    (row,) = result["dice"]
    assert row["pattern"] == "1101" and row["cases"] == 1
    for key in ("incomplete", "synthesised"):
        assert len(row[key]) == 3 and all(0.0 <= d <= 1.0 for d in row[key])
    (case,) = row["per_case"]  # cases are the unit of the comparison
    assert case["case"] == names[2] and case["incomplete"] == row["incomplete"]
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["dice"] == result["dice"] and saved["table"] == result["table"]
    text = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| Dice ET/TC/WT incomplete |" in text and ("(1/1 up)" in text or "(0/1 up)" in text)
    assert text == result["markdown"] + "\n"
    with pytest.raises(InputError, match="eval.json"):  # never over an earlier evaluation
        write_result(result, out)


def test_m2dn_output_can_be_the_mean_of_several_samples(phantom_dataset, tiny_models, tmp_path):
    split, ckpt, _ = tiny_models
    kwargs = dict(checkpoint=ckpt["m2dn"], baseline=ckpt["regression"], steps=2, patterns="1101", device="cpu")
    kwargs.update(slice_stride=4, input_grid=False)
    one = evaluate(phantom_dataset, split, tmp_path / "one.json", **kwargs)
    three = evaluate(phantom_dataset, split, tmp_path / "three.json", samples=3, **kwargs)
    assert one["samples"] == 1 and three["samples"] == 3
    (r1,), (r3,) = one["per_case"], three["per_case"]
    assert r1["regression"] == r3["regression"]  # deterministic: one draw is its mean
    assert r1["m2dn"] != r3["m2dn"]
    assert one["calibration"] is None and "calibration" not in r1  # one draw has no std map
    (entry,) = three["calibration"]
    assert entry["pattern"] == "1101" and -1 <= entry["spearman"] <= 1 and "Spearman" in three["markdown"]
    with pytest.raises(InputError, match="samples"):
        evaluate(phantom_dataset, split, tmp_path / "none.json", samples=0, **kwargs)


def test_evaluate_syn_command_turns_the_input_grid_off(phantom_dataset, tiny_models, tmp_path, capsys):
    """`evaluate-syn --no-input-grid`: only the working-grid tables; without the flag the input grid is scored."""
    from medmodels.cli import build_parser, main

    split, ckpt, _ = tiny_models
    base = ["evaluate-syn", str(phantom_dataset), "--split", str(split), "--out", str(tmp_path / "ev")]
    assert build_parser().parse_args(base).input_grid is True
    args = ["--checkpoint", str(ckpt["m2dn"]), "--baseline", str(ckpt["regression"]), "--steps", "2"]
    args += ["--patterns", "1101", "--device", "cpu", "--threads", "1", "--no-input-grid"]
    assert main(base + args) == 0
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text(encoding="utf-8"))
    assert saved["input_grid"] is None and saved["table"][0]["pattern"] == "1101"
    assert "Per-case paired tests" in capsys.readouterr().out


def test_evaluate_syn_keeps_the_evaluation_when_the_downstream_dice_fails(
    phantom_dataset, tiny_models, tmp_path, capsys, monkeypatch
):
    """`evaluate-syn --dice` writes its files once, after the Dice; should the Dice fail, the synthesis
    scores (hours of work on real data) are written without it, and the failure is the command's ERROR."""
    import medmodels.downstream
    from medmodels.cli import main

    def no_segmenter(*args, **kwargs):
        raise InputError("no segmentation weights here: give them (test)")

    monkeypatch.setattr(medmodels.downstream, "add_downstream_dice", no_segmenter)
    split, ckpt, _ = tiny_models
    argv = ["evaluate-syn", str(phantom_dataset), "--split", str(split), "--out", str(tmp_path / "ev"), "--dice"]
    argv += ["--checkpoint", str(ckpt["m2dn"]), "--baseline", str(ckpt["regression"]), "--steps", "2"]
    assert main([*argv, "--patterns", "1101", "--device", "cpu", "--threads", "1", "--no-input-grid"]) == 2
    err = capsys.readouterr().err
    assert "downstream Dice failed" in err and "ERROR: no segmentation weights" in err
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == ["evaluation.json", "evaluation.md"]
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text(encoding="utf-8"))
    assert saved["dice"] is None and saved["table"][0]["pattern"] == "1101"
    assert saved["report"]["command"].startswith("medmodels evaluate-syn ") and "--dice" in saved["report"]["command"]


def test_evaluate_syn_runs_the_seg_checkpoint_and_flags_models_trained_on_the_cases(
    phantom_dataset, tiny_models, tmp_path, capsys, monkeypatch, with_training_cases
):
    """`evaluate-syn --dice --seg-checkpoint PATH`: PATH is the segmenter that runs, recorded with its SHA-256;
    a synthesis checkpoint or segmenter whose record lists the evaluated case is named in evaluation.json,
    evaluation.md and a note on stderr, and one trained on other cases (the regression here) is not."""
    import medmodels.downstream
    from medmodels.cli import main
    from medmodels.seg.train import TrainConfig
    from medmodels.seg.train import train as train_seg
    from medmodels.weights import sha256_of

    split, ckpt, names = tiny_models
    seg_cfg = dict(width=4, depth=3, spacing=(8.0, 8.0, 8.0), patch_size=(16, 16, 16), batch_size=1, iterations=2)
    seg_cfg.update(val_every=2, threads=1, device="cpu", validate=False, split=str(split))
    train_seg(TrainConfig(data=str(phantom_dataset), out=str(tmp_path / "seg"), **seg_cfg))
    segmenter = with_training_cases(tmp_path / "seg" / "model.pt", tmp_path / "seg_all", names)
    m2dn = with_training_cases(ckpt["m2dn"], tmp_path / "m2dn_all", names)
    loaded = []
    real_loader = medmodels.downstream.load_segmenter
    monkeypatch.setattr(medmodels.downstream, "load_segmenter", lambda c, d: loaded.append(c) or real_loader(c, d))
    argv = ["evaluate-syn", str(phantom_dataset), "--split", str(split), "--out", str(tmp_path / "ev"), "--dice"]
    argv += ["--checkpoint", str(m2dn), "--baseline", str(ckpt["regression"]), "--seg-checkpoint", str(segmenter)]
    assert (
        main([*argv, "--steps", "2", "--patterns", "1101", "--device", "cpu", "--threads", "1", "--no-input-grid"]) == 0
    )
    assert [str(c) for c in loaded] == [str(segmenter)]
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text(encoding="utf-8"))
    assert saved["dice_segmenter"] == {"checkpoint": str(segmenter), "sha256": sha256_of(segmenter)}
    assert saved["dice"][0]["pattern"] == "1101"
    assert saved["trained_on_evaluated_cases"] == {"m2dn": names[2:], "regression": [], "segmenter": names[2:]}
    md = (tmp_path / "ev" / "evaluation.md").read_text(encoding="utf-8")
    assert f"**Not held out**: m2dn was trained on 1 of the 1 evaluated case(s) ({names[2]})" in md
    assert "segmenter was trained on" in md and "regression was trained" not in md
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 2 and "never saw" in notes[0] and "--checkpoint PATH" in notes[0]
    assert "segmenter was trained on" in notes[1] and "--split splits/brats18_shared.json:" in notes[1]
    assert (Path(__file__).parents[2] / "splits" / "brats18_shared.json").is_file()  # the note names a real file
    no_dice = [a for a in argv if a != "--dice"] + ["--out", str(tmp_path / "ev3")]  # the later --out wins
    assert main(no_dice) == 2  # a segmenter of nothing: refused before any work
    assert "--seg-checkpoint is the segmenter of the downstream Dice: add --dice" in capsys.readouterr().err
    assert not (tmp_path / "ev3").exists()
