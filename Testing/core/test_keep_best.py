"""--keep-best: the training loop keeps OUT/best.pt, the weights of the best validation score (a toy task
whose score the test scripts, and the two families' scores on phantoms), never replaced by a worse one,
across --resume too; off by default; ``export`` of best.pt records the chosen iteration's facts."""

import json

import numpy as np
import pytest
import torch
from medmodels import training
from medmodels.cli import main
from medmodels.errors import InputError
from medmodels.phantom import make_phantom
from medmodels.seg.train import TrainConfig
from medmodels.seg.train import train as train_seg
from medmodels.syn.data import to_working_case
from medmodels.syn.train import SynTrainConfig, fit
from medmodels.weights import load_checkpoint, read_record, sha256_of
from test_training import crash_at, same_weights, toy_run, toy_task, weights

#: Scores of the validations at iterations 2, 4, 6, 8 (val_every 2): the best is at 4, later ones are worse.
SCORES = {2: 0.1, 4: 0.5, 6: 0.3, 8: 0.4}


def scripted(scores: dict[int, float]):
    """A ``Task.score`` that the test controls: the score of a record is ``scores[its iteration]``."""
    return lambda record: scores[record["iteration"]]


def history(out) -> dict:
    return json.loads((out / "history.json").read_text(encoding="utf-8"))


def test_no_best_checkpoint_by_default(tmp_path):
    summary = toy_run(tmp_path, score=scripted(SCORES))
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "best.json").exists()
    assert "best" not in summary and "best" not in history(tmp_path)


def test_best_checkpoint_is_the_best_validation_and_a_worse_one_never_replaces_it(tmp_path):
    summary = toy_run(tmp_path / "run", score=scripted(SCORES), keep_best=True)
    # the weights after iteration 4 of the same run: a crash in iteration 5 leaves them in last.pt
    with pytest.raises(RuntimeError, match="power cut"):
        toy_run(tmp_path / "at4", before_sample=crash_at(5))
    best = tmp_path / "run" / "best.pt"
    assert same_weights(weights(best), weights(tmp_path / "at4" / "last.pt"))
    assert not same_weights(weights(best), weights(tmp_path / "run" / "model.pt"))
    facts = read_record(best)["training"]
    assert {k: facts["best"][k] for k in ("iteration", "score")} == {"iteration": 4, "score": 0.5}
    assert "validation cases" in facts["best"]["chosen_on"] and "optimistic" in facts["best"]["chosen_on"]
    assert facts["iterations"] == facts["cumulative_iterations"] == 4 and facts["last_record"]["iteration"] == 4
    assert load_checkpoint(best)["config"] == {"toy": 1}
    assert summary["best"] == history(tmp_path / "run")["best"] == {"iteration": 4, "score": 0.5}
    assert json.loads(load_checkpoint(tmp_path / "run" / "last.pt")["best"]) == {"iteration": 4, "score": 0.5}


def test_a_resumed_run_keeps_the_best_of_before_the_interruption(tmp_path):
    with pytest.raises(RuntimeError, match="power cut"):
        toy_run(tmp_path, score=scripted(SCORES), keep_best=True, before_sample=crash_at(7))  # last.pt of 6
    before = sha256_of(tmp_path / "best.pt")
    summary = toy_run(tmp_path, score=scripted(SCORES), keep_best=True, resume=True)  # 8 scores 0.4 < 0.5
    assert sha256_of(tmp_path / "best.pt") == before and summary["best"] == {"iteration": 4, "score": 0.5}
    # a better score after a resume does replace it
    more = toy_run(tmp_path, score=scripted({**SCORES, 10: 0.7}), keep_best=True, resume=True, iterations=10)
    assert (
        more["best"] == {"iteration": 10, "score": 0.7}
        and read_record(tmp_path / "best.pt")["training"]["iterations"] == 10
    )


def test_a_run_killed_between_best_and_last_keeps_that_best(tmp_path, monkeypatch):
    """best.pt written, then the run dies before last.pt: the resumed run's validations score lower this
    time (a GPU need not repeat itself), and best.pt's own record keeps them from replacing it."""
    gather = training._Loop.gather_streams
    calls = []

    def dies_on_the_third(self):
        calls.append(1)
        if len(calls) == 3:  # the validation of iteration 6, after best.pt
            raise RuntimeError("power cut")
        return gather(self)

    monkeypatch.setattr(training._Loop, "gather_streams", dies_on_the_third)
    with pytest.raises(RuntimeError, match="power cut"):
        toy_run(tmp_path, score=scripted({**SCORES, 6: 0.9}), keep_best=True)
    monkeypatch.setattr(training._Loop, "gather_streams", gather)
    assert read_record(tmp_path / "best.pt")["training"]["best"]["iteration"] == 6
    assert json.loads(load_checkpoint(tmp_path / "last.pt")["best"]) == {"iteration": 4, "score": 0.5}
    before = sha256_of(tmp_path / "best.pt")
    summary = toy_run(tmp_path, score=scripted({**SCORES, 6: 0.6}), keep_best=True, resume=True)
    assert sha256_of(tmp_path / "best.pt") == before and summary["best"] == {"iteration": 6, "score": 0.9}


def test_export_of_best_records_the_chosen_iteration_and_its_compute(tmp_path, capsys):
    toy_run(tmp_path / "run", score=scripted(SCORES), keep_best=True)
    argv = ["export", tmp_path / "run" / "best.pt", "--name", "toy_best", "--out", tmp_path / "bundle"]
    assert main([str(a) for a in argv]) == 0
    pt = tmp_path / "bundle" / "toy_best.pt"
    facts = read_record(pt)["training"]
    assert facts["best"]["iteration"] == 4 and facts["iterations"] == 4 and facts["cumulative_iterations"] == 4
    assert facts["last_record"]["iteration"] == 4 and facts["stopped"] == "best validation score"
    stored = weights(pt)
    assert all(torch.equal(v, weights(tmp_path / "run" / "best.pt")[k].half()) for k, v in stored.items())
    # training on from it carries the compute up to the chosen iteration, not the run's 8
    assert toy_run(tmp_path / "next", iterations=1, init=str(pt))["cumulative_iterations"] == 5


def test_starting_weights_are_a_candidate_when_no_step_beats_them(tmp_path):
    toy_run(tmp_path / "first", iterations=4)
    start = tmp_path / "first" / "model.pt"
    summary = toy_run(tmp_path / "next", score=scripted({0: 0.9, **SCORES}), keep_best=True, init=str(start))
    assert summary["best"] == {"iteration": 0, "score": 0.9}  # the record of the init weights, before step 1
    assert same_weights(weights(tmp_path / "next" / "best.pt"), weights(start))
    facts = read_record(tmp_path / "next" / "best.pt")["training"]
    assert facts["iterations"] == 0 and facts["cumulative_iterations"] == 4  # only the first run's compute


def test_keep_best_without_a_score_or_validation_cases_is_refused_before_training(tmp_path):
    with pytest.raises(InputError, match="no validation score.*leave it out"):
        toy_run(tmp_path / "a", keep_best=True)
    cfg = training.LoopConfig(out=str(tmp_path / "b"), keep_best=True, device="cpu")
    task = toy_task(score=scripted(SCORES))
    task.facts = {"validation_cases": []}
    with pytest.raises(InputError, match="validates no cases.*--split"):
        training.run(cfg, task, training.setup(cfg))
    assert not (tmp_path / "b" / "last.pt").exists()


def test_segmentation_keeps_the_best_mean_validation_dice(phantom_dataset, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"training": ["Phantom_000", "Phantom_001"], "validation": ["Phantom_002"]}))
    tiny = dict(width=4, depth=3, spacing=(8.0, 8.0, 8.0), patch_size=(16, 16, 16), batch_size=1, threads=1)
    cfg = TrainConfig(
        data=str(phantom_dataset), split=str(split), out=str(tmp_path / "seg"), iterations=4, val_every=1,
        keep_best=True, device="cpu", **tiny,
    )  # fmt: skip
    summary = train_seg(cfg)
    means = [np.mean([d for r in rec["val_dice"].values() for d in r.values()]) for rec in summary["history"]]
    chosen = summary["history"][int(np.argmax(means))]["iteration"]
    assert summary["best"] == {"iteration": chosen, "score": pytest.approx(max(means))}
    assert read_record(tmp_path / "seg" / "best.pt")["training"]["validation_cases"] == ["Phantom_002"]


def test_synthesis_keeps_the_best_validation_ssim(tmp_path):
    cases = [to_working_case(make_phantom((48, 48, 32), seed=s).images, (8.0, 8.0, 8.0), f"P{s}") for s in (0, 1)]
    tiny = dict(encoder_channels=4, channels=(8, 16, 16), emb_dim=16, patch_size=(32, 32), val_slices=4)
    cfg = SynTrainConfig(
        out=str(tmp_path / "syn"), spacing=(8.0, 8.0, 8.0), batch_size=4, iterations=3, val_every=1,
        keep_best=True, threads=1, device="cpu", **tiny,
    )  # fmt: skip
    summary = fit(cfg, cases[:1], cases[1:])
    ssim = [rec["val_ssim"] for rec in summary["history"]]
    assert summary["best"] == {"iteration": summary["history"][int(np.argmax(ssim))]["iteration"], "score": max(ssim)}
    with pytest.raises(InputError, match="validates no cases"):  # its fallback, training slices, is no choice
        fit(SynTrainConfig(out=str(tmp_path / "none"), keep_best=True, device="cpu", **tiny), cases[:1])
