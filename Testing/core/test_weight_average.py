"""--average-from: stochastic weight averaging in the training loop (a toy task). model.pt is the mean of
the iterates after the start, the validations after it score the average, best.pt keeps the average,
an interrupted run resumes to the same average, and bad or mismatched options are refused."""

import pytest
import torch
from medmodels.cli import main
from medmodels.errors import InputError
from medmodels.weight_average import averaging_start
from medmodels.weights import load_checkpoint, read_record
from test_training import crash_at, same_weights, toy_run, weights

RUN = dict(iterations=4, val_every=1)


def close_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_model_is_the_mean_of_the_iterates_after_the_start(tmp_path):
    with pytest.raises(RuntimeError, match="power cut"):
        toy_run(tmp_path / "at3", before_sample=crash_at(4), **RUN)  # last.pt: the weights after step 3
    plain = toy_run(tmp_path / "plain", **RUN)
    averaged = toy_run(tmp_path / "avg", average_from=0.5, **RUN)  # start 2: iterates 3 and 4
    w3, w4 = weights(tmp_path / "at3" / "last.pt"), weights(tmp_path / "plain" / "model.pt")
    mean = {k: (w3[k] + w4[k]) / 2 for k in w3}
    assert close_weights(weights(tmp_path / "avg" / "model.pt"), mean)
    assert not close_weights(weights(tmp_path / "avg" / "model.pt"), w4)
    # the trajectory is the plain run's: last.pt holds the trained (not averaged) weights
    assert same_weights(weights(tmp_path / "avg" / "last.pt"), w4)
    counts = [r["averaged_iterates"] for r in averaged["history"]]
    assert counts == [0, 0, 1, 2]
    # before the start the validations are of the trained weights, after it of the average
    assert [r["val_mse"] for r in averaged["history"][:2]] == [r["val_mse"] for r in plain["history"][:2]]
    assert averaged["history"][-1]["val_mse"] != plain["history"][-1]["val_mse"]
    assert averaged["weight_average"] == {"after_iteration": 2, "iterates": 2}
    assert read_record(tmp_path / "avg" / "model.pt")["training"]["weight_average"] == averaged["weight_average"]
    assert plain["weight_average"] is None and "averaged_iterates" not in plain["history"][-1]


def test_best_checkpoint_holds_the_average(tmp_path):
    scores = {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.9}
    toy_run(tmp_path, score=lambda record: scores[record["iteration"]], keep_best=True, average_from=0.5, **RUN)
    assert same_weights(weights(tmp_path / "best.pt"), weights(tmp_path / "model.pt"))
    assert not same_weights(weights(tmp_path / "best.pt"), weights(tmp_path / "last.pt"))


def test_an_interrupted_run_resumes_to_the_same_average(tmp_path):
    toy_run(tmp_path / "whole", average_from=0.25, iterations=8, val_every=2)
    with pytest.raises(RuntimeError, match="power cut"):
        toy_run(tmp_path / "broken", average_from=0.25, iterations=8, val_every=2, before_sample=crash_at(7))
    assert int(load_checkpoint(tmp_path / "broken" / "last.pt")["average_state_dict"]["n_averaged"]) == 4
    resumed = toy_run(tmp_path / "broken", average_from=0.25, iterations=8, val_every=2, resume=True)
    assert same_weights(weights(tmp_path / "whole" / "model.pt"), weights(tmp_path / "broken" / "model.pt"))
    assert resumed["weight_average"] == {"after_iteration": 2, "iterates": 6}


def test_resuming_an_averaged_run_without_averaging_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="power cut"):
        toy_run(tmp_path, average_from=0.5, before_sample=crash_at(5))
    before = load_checkpoint(tmp_path / "last.pt")["iteration"]
    with pytest.raises(InputError, match="--average-from.*resume with the run's own"):
        toy_run(tmp_path, resume=True)
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == before and not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])
def test_a_fraction_outside_the_run_is_refused_before_training(tmp_path, fraction):
    with pytest.raises(InputError, match="--average-from must be a fraction"):
        toy_run(tmp_path, average_from=fraction)
    assert not (tmp_path / "last.pt").exists()


def test_start_iteration():
    assert averaging_start(0.0, 10) == 0 and averaging_start(0.25, 8) == 2
    assert averaging_start(0.99, 10) == 9  # always at least the last iterate


@pytest.mark.parametrize("command", ["train-seg", "train-syn"])
def test_both_training_commands_take_the_flag(command, capsys, tmp_path):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--average-from" in capsys.readouterr().out
    code = main([command, str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--average-from", "1"])
    assert code != 0 and "--average-from must be a fraction" in capsys.readouterr().err
    assert not (tmp_path / "o" / "last.pt").exists()
