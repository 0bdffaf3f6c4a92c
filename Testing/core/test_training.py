"""The one training loop (medmodels.training), with a toy regression task and
tiny models of both families on phantoms: exact resume, start from existing
weights (a run's checkpoint, an export, the bundled model), the time budget,
validation records, the checks with clear errors, and the export."""

import json
import time

import medmodels.seg.train as seg_train
import numpy as np
import pytest
import torch
from medmodels import training
from medmodels.errors import CheckpointError, InputError
from medmodels.phantom import make_phantom
from medmodels.syn.data import to_working_case
from medmodels.syn.inference import BUNDLED_NAME
from medmodels.syn.train import SynTrainConfig, fit
from medmodels.training import LoopConfig, Task
from medmodels.weights import bundled_checkpoint, load_checkpoint, read_record, sha256_of
from torch import nn

#: The toy task learns y = x @ W (+ a little noise drawn inside the loss).
W = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def toy_task(config=None, before_sample=None, score=None, poisoned=()) -> Task:
    """A 4 -> 8 -> 1 MLP; ``before_sample`` is called before each batch is drawn; ``score``: ``Task.score``;
    the batches drawn ``poisoned`` (1 = the first of this process) hold a NaN, so their gradients are NaN."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    drawn = []

    def sample(rng, progress=1.0):
        if before_sample:
            before_sample()
        x = torch.from_numpy(rng.normal(size=(4, 4)).astype(np.float32))
        drawn.append(1)
        if len(drawn) in poisoned:
            x[0, 0] = float("nan")
        return x, x @ W

    def loss(net, batch, generator):
        x, y = batch
        # noise from the loop's generator: a resume must restore that stream too
        mse = nn.functional.mse_loss(net(x), y + 0.01 * torch.randn(y.shape, generator=generator))
        return {"total": mse, "mse": mse.detach()}

    x_val = torch.linspace(-1, 1, 16).reshape(4, 4)

    def validate(model):
        return {"val_mse": float(nn.functional.mse_loss(model(x_val), x_val @ W))}

    return Task(
        name="toy",
        model=model,
        config=config or {"toy": 1},
        sample=sample,
        loss=loss,
        validate=validate,
        unit="rows",
        score=score,
    )


def toy_run(out, config=None, before_sample=None, score=None, poisoned=(), **options) -> dict:
    cfg = LoopConfig(
        **{
            "out": str(out),
            "iterations": 8,
            "batch_size": 4,
            "lr": 1e-2,
            "warmup": 2,
            "val_every": 2,
            "device": "cpu",
            **options,
        }
    )
    info = training.setup(cfg)
    return training.run(cfg, toy_task(config, before_sample, score, poisoned), info)


def weights(path):
    return load_checkpoint(path)["state_dict"]


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def without_times(history):
    return [{k: v for k, v in r.items() if k != "train_s"} for r in history]


def crash_at(call: int):
    """A sampler hook that fails on its ``call``-th batch, as a killed job would."""
    calls = []

    def hook(*_args):
        calls.append(1)
        if len(calls) == call:
            raise RuntimeError("power cut")

    return hook


def test_exact_resume_gives_the_weights_of_an_unbroken_run(tmp_path):
    whole = toy_run(tmp_path / "whole")
    with pytest.raises(RuntimeError, match="power cut"):
        toy_run(tmp_path / "broken", before_sample=crash_at(5))  # dies in iteration 5; last.pt is of 4
    assert load_checkpoint(tmp_path / "broken" / "last.pt")["iteration"] == 4
    resumed = toy_run(tmp_path / "broken", resume=True)
    assert same_weights(weights(tmp_path / "whole" / "model.pt"), weights(tmp_path / "broken" / "model.pt"))
    assert without_times(resumed["history"]) == without_times(whole["history"])
    assert resumed["iterations"] == 8 and resumed["rows_seen"] == 32


def test_exact_resume_of_segmentation_training(phantom_dataset, tmp_path, monkeypatch, tiny_seg_settings):
    tiny = dict(data=str(phantom_dataset), iterations=4, val_every=2, **tiny_seg_settings)
    seg_train.train(seg_train.TrainConfig(out=str(tmp_path / "whole"), **tiny))
    make_batch = seg_train.make_batch
    hook = crash_at(3)

    def failing_make_batch(*args, **kwargs):
        hook()
        return make_batch(*args, **kwargs)

    monkeypatch.setattr(seg_train, "make_batch", failing_make_batch)
    with pytest.raises(RuntimeError, match="power cut"):
        seg_train.train(seg_train.TrainConfig(out=str(tmp_path / "broken"), **tiny))
    monkeypatch.setattr(seg_train, "make_batch", make_batch)
    seg_train.train(seg_train.TrainConfig(out=str(tmp_path / "broken"), resume=True, **tiny))
    assert same_weights(weights(tmp_path / "whole" / "model.pt"), weights(tmp_path / "broken" / "model.pt"))


def test_a_non_finite_gradient_skips_its_step_and_is_counted_across_a_resume(tmp_path):
    # AdamW writes a NaN gradient into the weights, even at lr 0: without the guard they end NaN
    summary = toy_run(tmp_path / "nan", poisoned={3, 5}, iterations=6)
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "nan" / "model.pt").values())
    assert summary["skipped_steps"] == 2 and [r.get("skipped_steps") for r in summary["history"]] == [None, 1, 2]
    # the records average the losses of the steps taken: no NaN from the skipped ones
    assert all(np.isfinite(r["val_mse"]) and np.isfinite(r["loss_total"]) for r in summary["history"])
    assert toy_run(tmp_path / "plain", iterations=2)["skipped_steps"] == 0
    toy_run(tmp_path / "broken", poisoned={3}, iterations=4)
    assert load_checkpoint(tmp_path / "broken" / "last.pt")["skipped_steps"] == 1
    assert toy_run(tmp_path / "broken", iterations=6, resume=True)["skipped_steps"] == 1  # carried on


def test_an_existing_run_needs_resume_or_another_out(tmp_path):
    toy_run(tmp_path, iterations=2)
    with pytest.raises(InputError, match="--resume.*another --out"):
        toy_run(tmp_path, iterations=4)
    assert toy_run(tmp_path, iterations=4, resume=True)["iterations"] == 4


def test_validation_every_n_iterations_goes_to_history_and_last(tmp_path):
    summary = toy_run(tmp_path, iterations=7, val_every=3)
    history = summary["history"]
    assert [r["iteration"] for r in history] == [3, 6, 7]
    assert all(np.isfinite(r["val_mse"]) and {"loss_total", "loss_mse", "lr"} <= set(r) for r in history)
    assert json.loads((tmp_path / "history.json").read_text(encoding="utf-8"))["history"] == history
    assert json.loads(load_checkpoint(tmp_path / "last.pt")["history"]) == history
    assert summary["stopped"] == "iterations" and summary["init"] is None


def test_time_budget_stops_cleanly_with_an_export(tmp_path):
    summary = toy_run(
        tmp_path, before_sample=lambda: time.sleep(0.05), iterations=100_000, val_every=1000, hours=1.0 / 3600
    )
    done = summary["iterations"]
    assert summary["stopped"] == "time budget" and 0 < done < 100_000
    assert summary["history"][-1]["iteration"] == done and "val_mse" in summary["history"][-1]
    assert json.loads((tmp_path / "history.json").read_text(encoding="utf-8"))["stopped"] == "time budget"
    assert read_record(tmp_path / "model.pt")["training"]["iterations"] == done
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == done
    more = toy_run(tmp_path, iterations=done + 2, val_every=1000, resume=True)  # and it goes on from there
    assert more["iterations"] == done + 2 and more["stopped"] == "iterations"


def test_init_from_a_checkpoint_carries_the_compute_forward(tmp_path):
    toy_run(tmp_path / "first", iterations=4)
    first = tmp_path / "first" / "model.pt"
    # lr 0: the weights stay those loaded, so the test sees exactly what was loaded
    second = toy_run(tmp_path / "second", iterations=1, init=str(first), lr=0.0)
    assert same_weights(weights(tmp_path / "second" / "model.pt"), weights(first))
    assert second["init"]["checkpoint"] == str(first) and second["init"]["sha256"] == sha256_of(first)
    assert second["init"]["iterations"] == 4 and second["cumulative_iterations"] == 5
    third = toy_run(tmp_path / "third", iterations=2, init=str(tmp_path / "second" / "model.pt"))
    assert third["cumulative_iterations"] == 7  # 4 + 1 + 2: successive runs add up
    assert third["cumulative_wall_s_training"] >= second["cumulative_wall_s_training"]


def test_init_records_every_earlier_stage_and_keeps_them_across_a_resume_and_an_export(tmp_path):
    toy_run(tmp_path / "first", iterations=4)
    first = tmp_path / "first" / "model.pt"
    assert read_record(first)["training"]["lineage"] is None  # a run from scratch has no earlier stage
    toy_run(tmp_path / "second", iterations=1, init=str(first))
    second = tmp_path / "second" / "model.pt"
    third = toy_run(tmp_path / "third", iterations=2, init=str(second))
    stages = third["lineage"]
    assert [s["sha256"] for s in stages] == [sha256_of(first), sha256_of(second)]
    assert [s["iterations"] for s in stages] == [4, 1] and stages[1]["train_options"]["init"] == str(first)
    assert "lineage" not in third["init"]  # once, at the top
    resumed = toy_run(tmp_path / "third", iterations=3, init=str(second), resume=True)
    assert resumed["iterations"] == 3 and resumed["lineage"] == stages
    record = training.export(tmp_path / "third", "toy_model", tmp_path / "bundle")
    assert record["training"]["lineage"] == stages
    assert read_record(tmp_path / "third" / "model.pt")["training"]["lineage"] == stages  # travels with --init


def test_init_with_another_config_is_a_clear_error(tmp_path):
    toy_run(tmp_path / "a", iterations=1)
    with pytest.raises(InputError, match=r"another model configuration \(toy: 2 now, 1 in the checkpoint\)"):
        toy_run(tmp_path / "b", config={"toy": 2}, init=str(tmp_path / "a" / "model.pt"))
    with pytest.raises(InputError, match="no bundled toy checkpoint"):
        toy_run(tmp_path / "c", init="bundled")


def test_init_baseline_names_the_words_init_takes(tmp_path):
    # "bundled" already means the bundled model of the architecture trained; "baseline" was read as a file name
    with pytest.raises(CheckpointError, match="'baseline' names no bundled model here: give 'bundled'"):
        toy_run(tmp_path / "d", init="baseline")


def test_export_writes_float16_weights_and_the_training_summary(tmp_path):
    toy_run(tmp_path / "run", iterations=2)
    record = training.export(tmp_path / "run", "toy_model", tmp_path / "bundle")
    pt = tmp_path / "bundle" / "toy_model.pt"
    assert record["sha256"] == sha256_of(pt) == read_record(pt)["sha256"]
    assert record["stored_dtype"] == "float16" and record["config"] == {"toy": 1}
    training_facts = record["training"]
    assert training_facts["iterations"] == 2 and training_facts["cumulative_iterations"] == 2
    assert training_facts["last_record"]["iteration"] == 2 and "val_mse" in training_facts["last_record"]
    stored = weights(pt)
    assert all(v.dtype == torch.float16 for v in stored.values())
    # training goes on from the export: float16 loaded as float32, its compute carried forward
    summary = toy_run(tmp_path / "next", iterations=1, init=str(pt), lr=0.0)
    loaded = weights(tmp_path / "next" / "model.pt")
    assert all(v.dtype == torch.float32 and torch.equal(v, stored[k].float()) for k, v in loaded.items())
    assert summary["cumulative_iterations"] == 3


@pytest.fixture(scope="module")
def phantom_cases():
    return [to_working_case(make_phantom((48, 48, 32), seed=s).images, (2.0, 2.0, 2.0), f"P{s}") for s in (0, 1)]


def test_synthesis_training_continues_from_the_bundled_model(phantom_cases, tmp_path):
    cfg = SynTrainConfig(
        out=str(tmp_path),
        init="bundled",
        condition="regions",  # the bundled M2DN reads the region map (stage 6)
        lr=0.0,
        iterations=1,
        batch_size=2,
        patch_size=(32, 32),
        val_slices=2,
        threads=1,
        device="cpu",
    )
    summary = fit(cfg, phantom_cases[:1], phantom_cases[1:])
    bundled = bundled_checkpoint(BUNDLED_NAME)
    assert same_weights(weights(tmp_path / "model.pt"), {k: v.float() for k, v in weights(bundled).items()})
    record = read_record(bundled)["training"]  # a continued model's record counts all its stages
    shipped = record.get("cumulative_iterations", record["iterations"])
    assert summary["init"]["checkpoint"] == str(bundled) and summary["init"]["iterations"] == shipped
    assert read_record(tmp_path / "model.pt")["training"]["cumulative_iterations"] == shipped + 1


def test_synthesis_init_with_another_architecture_is_refused(phantom_cases, tmp_path):
    cfg = SynTrainConfig(
        out=str(tmp_path),
        init="bundled",
        channels=(8, 16, 16),
        iterations=1,
        batch_size=2,
        patch_size=(32, 32),
        val_slices=2,
        threads=1,
        device="cpu",
    )
    with pytest.raises(InputError, match="another model configuration.*net:"):
        fit(cfg, phantom_cases[:1])


def test_bad_loop_options_are_named():
    with pytest.raises(InputError, match="--val-every must be at least 1.*--hours must be more than 0"):
        training.check_options(LoopConfig(out="x", val_every=0, hours=0))
