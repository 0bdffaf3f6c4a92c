"""One training loop for both model families (segmentation and synthesis).

A family hands the loop a ``Task``: its network and model config, a data
sampler (``sample(rng) -> batch``: a tuple of CPU tensors drawn from the numpy
Generator it is given and from nothing else), a loss (``loss(net, batch,
generator) -> {"total": ..., other named terms}``) and a validation
(``validate(model) -> {figure: value}``). Everything else is done here, the
same way for both families:

- start from existing weights (``init``: "bundled" = the family's bundled
  checkpoint, or a checkpoint path); its config must match the model's (or
  the family must be able to grow the model from it, ``Task.grows_from``), the
  compute recorded with it is carried forward (``cumulative_*``), so a model
  card can state the total over successive runs, and the starting weights are
  validated first (a record at iteration 0);
- an exact resume from ``OUT/last.pt`` (model, optimiser, schedule, AMP
  scaler, every process' RNG state, iteration, history; a task's
  training-only critic, ``Task.critic``, which no other checkpoint holds);
- AdamW (or SGD, Nesterov momentum 0.99) with MONAI's linear warm-up and
  cosine decay (``WarmupCosineSchedule``, stepped once per iteration);
  mixed precision (bfloat16 autocast on the CPU and CUDA; float16 with
  gradient scaling on GPUs without bfloat16);
- DDP under torchrun: one RNG stream per process, gradients averaged, a
  check at the end that every process holds the same weights;
- a step whose gradient is not finite is skipped, logged and counted
  (``skipped_steps`` in the records after it, ``history.json`` and the
  checkpoints' records): AdamW would write the NaN into the weights, even at
  learning rate 0, and every later step would carry it;
- every ``val_every`` iterations: the mean losses, the validation figures and
  ``last.pt``;
- a wall-clock budget (``hours``) that stops before it is spent, with the same
  output as the end of training: ``last.pt``, ``model.pt`` and ``history.json``;
- with ``average_from`` (``--average-from``, off by default): stochastic
  weight averaging (``medmodels.weight_average``): the validations after its
  start, ``model.pt`` and ``best.pt`` are of the equal average of the late
  iterates, and ``last.pt`` carries the average for an exact resume;
- with ``keep_best`` (``--keep-best``, off by default): ``best.pt``, the weights
  of the validation record whose ``Task.score`` beats every earlier one,
  written by the main process when it validates (no collective), its record
  naming the iteration, the score and the training facts at that iteration;
  the best score so far travels in ``last.pt``, so a resumed run never
  replaces a better ``best.pt`` with a worse one.

``model.pt`` holds the last iteration (or, with ``average_from``, the average). Validation picks a checkpoint only
with ``keep_best``, and then on the validation cases: figures measured on
those same cases are optimistic for ``best.pt``. ``export`` turns a finished
run (its ``model.pt`` or its ``best.pt``) into a bundled checkpoint (float16
storage, JSON record with its SHA-256 and the training summary).
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from monai.optimizers import WarmupCosineSchedule
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from medmodels import distributed
from medmodels.atomic import check_output_folder, check_plain_name, write_json
from medmodels.checkpoint_ref import BUNDLED, CheckpointRef
from medmodels.errors import CheckpointError, InputError
from medmodels.loop_config import OPTIMIZERS, LoopConfig
from medmodels.progress import emit, progress
from medmodels.weight_average import WeightAverage, averaging_start
from medmodels.weights import BUNDLED_DIR, load_checkpoint, open_checkpoint, read_record, save_checkpoint

LAST, MODEL, HISTORY, BEST = "last.pt", "model.pt", "history.json", "best.pt"
#: What ``best.pt``'s record says of how it was chosen.
CHOSEN_ON = (
    "the validation cases (validation_cases): this checkpoint was picked by its score on them, so figures "
    "measured on those same cases are optimistic; evaluate it on cases the run never saw"
)
#: Summary entries that go into ``model.pt``'s record (and so travel with ``--init``).
RECORD_KEYS = (
    "train_options",
    "iterations_planned",
    "training_cases",
    "validation_cases",
    "iterations",
    "batch_size",
    "wall_s_training",
    "skipped_steps",
    "hardware",
    "threads",
    "world_size",
    "parameters",
    "stopped",
    "init",
    "cumulative_iterations",
    "cumulative_wall_s_training",
    "weight_average",
    "lineage",
)

#: The facts of a stage that ``lineage`` keeps from the stage's own record (``training``), besides its SHA-256.
STAGE_KEYS = ("iterations", "iterations_planned", "wall_s_training", "hardware", "threads", "stopped", "train_options")


@dataclass
class Task:
    """What a model family hands the loop.

    Args:
        name: shown on the progress bar ("shaspec", "m2dn", ...).
        model: the network, freshly initialised (the loop moves it to the device).
        config: the model config saved with every checkpoint (JSON-like; nested, ``medmodels.nets.config``:
            an ``init`` or ``last.pt`` checkpoint's is read in that shape and compared with it).
        sample: ``sample(rng: np.random.Generator, progress: float) -> tuple of CPU tensors``, one
            batch; ``progress`` is the fraction of the run done (iteration / iterations), for
            schedules of what is drawn (segmentation's full-modality warm-up).
        loss: ``loss(net, batch, generator: torch.Generator) -> dict of scalar
            tensors`` with a "total" (the one minimised); ``batch`` is
            ``sample``'s tuple on the device, ``net`` may be the DDP wrapper;
            ``generator`` is a CPU generator for randomness inside the loss.
        validate: ``validate(model) -> dict of JSON-able figures`` (called on
            the main process only, in eval mode, without gradients); None = none.
        bundled: name of the family's bundled checkpoint (for ``init="bundled"``).
        unit: what one batch element is ("patches", "slices"): ``<unit>_seen``.
        facts: more entries for ``history.json`` (case lists, loading time).
        data_keys: config entries that are not the network's own (computed from
            the training data, the training grid, a calibrated threshold), ignored
            when the config is compared with an ``init`` checkpoint's.
        find_unused_parameters: DDP's option (ShaSpec leaves some heads unused).
        grows_from: ``grows_from(ours, theirs) -> bool``: whether a model of
            config ``ours`` can start from ``init`` weights of another config
            ``theirs`` through ``model.load_grown(state_dict)`` (a larger
            network that first computes what the smaller one did); None = the
            configs must match.
        score: ``score(record) -> float``, higher is better: one number from a
            validation record (``{"iteration": .., "lr": .., "loss_*": .., and
            validate's figures}``), by which ``keep_best`` picks ``best.pt``;
            None = the family has none (``--keep-best`` is then refused).
        critic: a network trained only to shape the loss (a GAN discriminator), or None. It is
            trained in the same step, by the same optimiser and backward as ``model`` (the loss
            keeps each term's gradient on its own side); the loss gets it as a fourth argument,
            ``loss(net, batch, generator, critic)`` (its DDP wrapper under torchrun). Its weights
            travel in ``last.pt`` (``--resume``), never in ``model.pt``, ``best.pt`` or an export,
            so the trained model loads as one trained without it.
    """

    name: str
    model: nn.Module
    config: dict
    sample: Callable[[np.random.Generator, float], tuple[torch.Tensor, ...]]
    loss: Callable[..., dict[str, torch.Tensor]]  # (net, batch, generator[, critic]): see ``losses``
    validate: Callable[[nn.Module], dict] | None = None
    bundled: str | None = None
    unit: str = "samples"
    facts: dict = field(default_factory=dict)
    data_keys: tuple[str, ...] = ()
    find_unused_parameters: bool = False
    grows_from: Callable[[dict, dict], bool] | None = None
    score: Callable[[dict], float] | None = None
    critic: nn.Module | None = None

    def trained_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser steps: the model's, then the critic's."""
        return [*self.model.parameters(), *(self.critic.parameters() if self.critic is not None else ())]

    def losses(
        self, net: nn.Module, batch: tuple[torch.Tensor, ...], generator: torch.Generator, critic: nn.Module | None
    ) -> dict[str, torch.Tensor]:
        """``loss`` of one batch, given the critic when the task has one.

        Args:
            net: ``model`` or its DDP wrapper.
            batch: ``sample``'s tuple on the device.
            generator: the CPU generator for randomness inside the loss.
            critic: ``critic`` or its DDP wrapper (None when the task has none).
        """
        return self.loss(net, batch, generator) if critic is None else self.loss(net, batch, generator, critic)


def autocast_settings(amp: bool, device: torch.device) -> tuple[bool, torch.dtype]:
    """``(enabled, dtype)`` of the training autocast on ``device`` (see ``LoopConfig.amp``)."""
    if not amp or device.type not in ("cpu", "cuda"):
        return False, torch.float32
    if device.type == "cuda":
        return True, (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    # A CPU without bf16 instructions emulates them, slower than float32: no autocast there.
    return (_cpu_has_bf16(), torch.bfloat16)


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_options(cfg: LoopConfig) -> None:
    """InputError naming each bad loop option and its fix."""
    problems = []
    if not str(cfg.out):
        problems.append("no output folder: give --out DIR")
    for name in ("iterations", "batch_size", "val_every"):
        if getattr(cfg, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(cfg, name)})")
    if cfg.lr < 0 or cfg.warmup < 0:
        problems.append(f"--lr and the warm-up must not be negative (got {cfg.lr}, {cfg.warmup})")
    if cfg.hours is not None and cfg.hours <= 0:
        problems.append(f"--hours must be more than 0 (got {cfg.hours}); leave it out for no budget")
    if cfg.average_from is not None and not 0 <= cfg.average_from < 1:
        problems.append(
            f"--average-from must be a fraction of the run, at least 0 and below 1 (got {cfg.average_from}); "
            "e.g. 0.2 averages the last 80 % of the iterations"
        )
    if cfg.optimizer not in OPTIMIZERS:
        problems.append(f"unknown optimizer '{cfg.optimizer}': use {' or '.join(OPTIMIZERS)}")
    if problems:
        raise InputError("Training options: " + "; ".join(problems) + ".")


def check_keep_best(cfg: LoopConfig, task: Task, info: distributed.DistInfo) -> None:
    """With ``--keep-best``, refuse a run that cannot choose by validation, before any step.

    The score and the case list are the same on every process, so under DDP all refuse together; a main
    process without a validation (validation turned off) refuses alone, and torchrun stops the others.

    Args:
        cfg: the loop options.
        task: the family's task (``score``, ``facts["validation_cases"]``, ``validate``).
        info: from ``setup(cfg)``.

    Raises:
        InputError: no score, or no validation cases, naming the fix.
    """
    if not cfg.keep_best:
        return
    if task.score is None:
        raise InputError(f"--keep-best: {task.name} training has no validation score to choose by: leave it out.")
    no_cases = "validation_cases" in task.facts and not task.facts["validation_cases"]
    if no_cases or (info.is_main and task.validate is None):
        raise InputError(
            "--keep-best chooses a checkpoint by its validation score, and this run validates no cases: give a "
            "--split with a 'validation' part (and leave validation on), or leave --keep-best out."
        )


def setup(cfg: LoopConfig) -> distributed.DistInfo:
    """Check the options and the output folder, set the threads, join the DDP
    group (under torchrun). Call before reading data, so mistakes show at once."""
    check_options(cfg)
    last = Path(cfg.out) / LAST
    if last.exists() and not cfg.resume:
        raise InputError(
            f"'{last}' exists: a run was already started in '{cfg.out}'. Add --resume to continue it, "
            "or give another --out folder to start a new run."
        )
    if cfg.resume and not last.exists():  # a silent fresh start would throw away the run meant to go on
        raise InputError(
            f"--resume: there is no '{last}' to continue from. Give the --out of the interrupted run, or leave "
            "--resume out to start a new run."
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info = distributed.init(cfg.device)
    if info.is_main:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
    return info


def run(cfg: LoopConfig, task: Task, info: distributed.DistInfo, started: float | None = None) -> dict:
    """Train ``task`` as ``cfg`` says; returns the summary written to ``history.json``
    (an empty dict on the other DDP processes).

    Args:
        info: from ``setup(cfg)``.
        started: ``time.time()`` when the command began (the ``hours`` budget counts from it); default now.
    """
    started = time.time() if started is None else started
    check_keep_best(cfg, task, info)
    loop = _Loop(cfg, task, info)
    if not loop.restore():
        loop.initialise()
        loop.record_start()
    loop.wrap()
    stopped = loop.train(started)
    summary = loop.finish(stopped)
    loop.unwrap()
    distributed.cleanup(info)
    return summary


def _differences(ours: dict, theirs: dict) -> str:
    """How two model configs differ, entry by entry; inside a nested entry (``net``), the fields
    that differ: ``net: (width: 8 now, 4 in the checkpoint)``."""
    keys = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    return "; ".join(
        f"{k}: ({_differences(ours[k], theirs[k])})"
        if isinstance(ours.get(k), dict) and isinstance(theirs.get(k), dict)
        else f"{k}: {ours.get(k)!r} now, {theirs.get(k)!r} in the checkpoint"
        for k in keys
    )


def _rng_state(rng: np.random.Generator, gen: torch.Generator, device: torch.device) -> dict:
    """Every random stream of this process, JSON-able (checkpoints load weights-only)."""
    state = {
        "numpy": rng.bit_generator.state,
        "torch": gen.get_state().tolist(),
        "torch_global": torch.get_rng_state().tolist(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device).tolist()
    return state


def _set_rng_state(state: dict, rng: np.random.Generator, gen: torch.Generator, device: torch.device) -> None:
    rng.bit_generator.state = state["numpy"]
    gen.set_state(torch.tensor(state["torch"], dtype=torch.uint8))
    torch.set_rng_state(torch.tensor(state["torch_global"], dtype=torch.uint8))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8), device)


def gradients_finite(parameters) -> bool:
    """Whether every gradient of ``parameters`` is finite (parameters without one count as finite)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True


def _streams(seed: int, rank: int, start: int) -> tuple[np.random.Generator, torch.Generator]:
    """Fresh streams, one per process (and per start, for a resume without saved states)."""
    rng = np.random.default_rng([seed, rank, start])
    return rng, torch.Generator().manual_seed(int(rng.integers(2**62)))


class _Loop:
    """The state of one run (model, optimiser, schedule, scaler, streams,
    counters) and the steps of ``run``. One object per process."""

    def __init__(self, cfg: LoopConfig, task: Task, info: distributed.DistInfo) -> None:
        self.cfg, self.task, self.info = cfg, task, info
        self.out, self.device = Path(cfg.out), info.device
        self.model = task.model.to(self.device)
        self.net: nn.Module = self.model
        self.critic = task.critic.to(self.device) if task.critic is not None else None
        self.critic_net = self.critic  # its DDP wrapper under torchrun
        params = task.trained_parameters()
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.99, nesterov=True, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = WarmupCosineSchedule(self.opt, warmup_steps=cfg.warmup, t_total=cfg.iterations)
        self.use_amp, self.amp_dtype = autocast_settings(cfg.amp, self.device)
        # Gradient scaling only for float16 (its narrow exponent underflows small gradients).
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.iteration, self.history, self.train_s, self.init = 0, [], 0.0, None
        self.skipped_steps = 0  # optimiser steps skipped for a non-finite gradient (``step``)
        self.rng, self.gen = _streams(cfg.seed, info.rank, 0)
        self.t_save = 0.0  # duration of the last validation + checkpoint (the budget keeps room for one)
        self.best: dict | None = None  # {"iteration", "score"} of best.pt (keep_best), on the main process
        self.average = (
            None
            if cfg.average_from is None
            else WeightAverage(self.model, averaging_start(cfg.average_from, cfg.iterations))
        )

    # -- starting points ------------------------------------------------------
    def restore(self) -> bool:
        """Continue from ``OUT/last.pt`` when asked to and it exists."""
        last = self.out / LAST
        if not (self.cfg.resume and last.exists()):
            return False
        state = load_checkpoint(last, map_location=self.device)
        if state["config"] != self.task.config:
            raise InputError(
                f"'{last}' was trained with another configuration "
                f"({_differences(self.task.config, state['config'])}); use the options it was trained "
                "with to resume, or another --out folder to start over."
            )
        self.model.load_state_dict(state["state_dict"])
        self._restore_critic(state, last)
        self._restore_average(state, last)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self._retarget_schedule()
        self.iteration, self.train_s = int(state["iteration"]), float(state["train_s"])
        self.skipped_steps = int(state.get("skipped_steps", 0))  # absent from runs before the count
        self.history, self.init = json.loads(state["history"]), json.loads(state["init"])
        self.best = self._best_so_far(json.loads(state.get("best") or "null"))
        streams = json.loads(state["rng"])
        if len(streams) == self.info.world_size:
            _set_rng_state(streams[self.info.rank], self.rng, self.gen, self.device)
        else:  # another number of processes: reproducible, though not the same draws as an unbroken run
            self.rng, self.gen = _streams(self.cfg.seed, self.info.rank, self.iteration)
            emit(0.0, f"Resumed with {self.info.world_size} process(es) instead of {len(streams)}: new data streams")
        emit(0.0, f"Resumed from {last} at iteration {self.iteration}")
        return True

    def _restore_critic(self, state: dict, last: Path) -> None:
        """The critic's weights from ``last.pt``; a run resumed with a critic it was not trained with, or
        without the one it was, is refused (the optimiser's state could not match its parameters)."""
        saved = state.get("critic_state_dict")
        if (saved is None) != (self.critic is None):
            raise InputError(
                f"'{last}' was trained {'without' if saved is None else 'with'} a training-only critic (a GAN "
                "discriminator: train-syn --adversarial-weight) and this run "
                f"{'has one' if saved is None else 'has none'}: resume with the run's own loss options, or start "
                "a new run in another --out folder (--init from its model.pt)."
            )
        if self.critic is not None:
            self.critic.load_state_dict(saved)

    def _restore_average(self, state: dict, last: Path) -> None:
        """The weight average from ``last.pt``; a run resumed without the averaging it was started with is
        refused (its model.pt would silently switch from the average to the last weights)."""
        saved = state.get("average_state_dict")
        if saved is not None and self.average is None:
            raise InputError(
                f"'{last}' was trained with --average-from (stochastic weight averaging): resume with the run's "
                "own --average-from, or start a new run in another --out folder (--init from its model.pt)."
            )
        if self.average is not None:
            if saved is None:
                emit(0.0, f"'{last}' holds no weight average: averaging starts from iteration {self.iteration + 1}")
            else:
                self.average.load_state_dict(saved)

    def result_model(self) -> nn.Module:
        """The weights the run stands for: the average once it holds an iterate (``--average-from``), else
        the trained model."""
        return self.model if self.average is None else self.average.weights_of(self.model)

    def _best_so_far(self, saved: dict | None) -> dict | None:
        """The best score of the resumed run: ``last.pt``'s, or ``best.pt``'s own record when that is higher
        (a run killed between writing ``best.pt`` and ``last.pt``), so no worse one replaces it."""
        try:
            written = read_record(self.out / BEST).get("training", {}).get("best") if self.cfg.keep_best else None
        except CheckpointError:  # best.pt without its record: unverifiable, so not a best to keep
            written = None
        if written and (saved is None or written["score"] > saved["score"]):
            return {"iteration": written["iteration"], "score": written["score"]}
        return saved

    def _retarget_schedule(self) -> None:
        """Resumed with another --iterations, --warmup or --lr: the schedule follows
        the new options from the current iteration on (no change when they are equal)."""
        s, cfg = self.sched, self.cfg
        warmup = min(max(cfg.warmup, 0), cfg.iterations)
        if (s.t_total, s.warmup_steps, s.base_lrs) == (cfg.iterations, warmup, [cfg.lr] * len(s.base_lrs)):
            return
        s.t_total, s.warmup_steps, s.base_lrs = cfg.iterations, warmup, [cfg.lr] * len(s.base_lrs)
        for group in self.opt.param_groups:
            group["initial_lr"] = cfg.lr
            group["lr"] = cfg.lr * s.lr_lambda(s.last_epoch)

    def initialise(self) -> None:
        """Load the ``init`` weights (float16 storage -> float32) after checking the config."""
        if self.cfg.init is None:
            return
        ref = CheckpointRef(self.cfg.init)
        if ref.kind == BUNDLED and not self.task.bundled:
            raise InputError(f"There is no bundled {self.task.name} checkpoint: give --init a checkpoint file.")
        # "bundled" is the bundled model of the architecture trained (a baseline's too): no "baseline" here
        opened = open_checkpoint(ref, self.task.bundled or "", None)  # SHA-256, weights_only=True, nested config
        path, payload = opened.path, opened.payload
        ours, theirs = (
            {k: v for k, v in c.items() if k not in self.task.data_keys}
            for c in (self.task.config, payload.get("config") or {})
        )
        grow = ours != theirs
        if grow and not (self.task.grows_from and self.task.grows_from(ours, theirs)):
            raise InputError(
                f"--init '{path}' was trained with another model configuration "
                f"({_differences(ours, theirs)}). Give the options it was trained with (they are in "
                f"'{path.with_suffix('.json').name}'), or another --init."
            )
        weights = {
            k: (v.float() if v.dtype in (torch.float16, torch.bfloat16) else v)
            for k, v in payload["state_dict"].items()
        }
        try:
            if grow:
                self.model.load_grown(weights)
            else:
                self.model.load_state_dict(weights)
        except RuntimeError as err:
            raise InputError(f"--init '{path}' does not fit the {self.task.name} network: {err}") from None
        done = opened.record.get("training") or {}
        self.init = {
            "checkpoint": str(path),
            "sha256": opened.record["sha256"],
            "iterations": done.get("cumulative_iterations", done.get("iterations")),
            "wall_s_training": done.get("cumulative_wall_s_training", done.get("wall_s_training")),
        }
        if grow:
            self.init["grown_from"] = _differences(ours, theirs)
        # kept inside ``init`` so that last.pt carries it across --resume; ``summary`` moves it up
        self.init["lineage"] = lineage_of(opened.record)
        emit(0.0, f"Initialised from {path}" + (f", grown ({self.init['grown_from']})" if grow else ""))

    def record_start(self) -> None:
        """Validate the ``init`` weights before the first step (record at iteration 0), so a
        continued run's learning curve starts from its starting point, measured on the same
        validation batch as every later record."""
        if self.init is None or not self.info.is_main or self.task.validate is None:
            return
        record = {"iteration": 0, "train_s": 0.0, **self.validate()}
        self.history.append(record)
        emit(0.0, "validation " + json.dumps(record))
        self.keep_if_best(record)

    def wrap(self) -> None:
        """DDP wrapper (broadcasts rank 0's weights, averages gradients)."""
        if self.info.enabled:
            self.net = DDP(self.model, find_unused_parameters=self.task.find_unused_parameters)
            if self.critic is not None:
                self.critic_net = DDP(self.critic)
        self.model.train()
        if self.critic is not None:
            self.critic.train()

    def unwrap(self) -> None:
        """Drop the DDP wrappers before the process group goes. Their reducers hold a reference to the
        group, so with them alive ``destroy_process_group`` leaves its gloo threads to interpreter exit,
        the likely place of a rare abort of a rank ("terminate called without an active exception")."""
        self.net, self.critic_net = self.model, self.critic
        gc.collect()

    # -- iterations -----------------------------------------------------------
    def step(self) -> dict[str, float]:
        """One optimiser step on one batch; the loss terms as floats ({} when the step was skipped)."""
        progress = self.iteration / max(self.cfg.iterations, 1)
        batch = tuple(t.to(self.device) for t in self.task.sample(self.rng, progress))
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            losses = self.task.losses(self.net, batch, self.gen, self.critic_net)
        if "total" not in losses:
            raise ValueError(f"The {self.task.name} loss returned {sorted(losses)}: it must name a 'total'.")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        finite = gradients_finite(self.task.trained_parameters())
        # A non-finite gradient would be written into the weights by AdamW, even at lr 0, and spread from
        # there: the step is skipped and counted. (Under DDP the gradients are all-reduced, so every process
        # skips the same steps.) float16 loss scaling skips such a step itself and lowers its scale.
        if finite or self.scaler.is_enabled():
            self.scaler.step(self.opt)
        if not finite:
            self.skipped_steps += 1
            emit(
                progress,
                f"Iteration {self.iteration + 1}: a non-finite gradient (loss {float(losses['total'].detach()):.4g}); "
                f"the step was skipped ({self.skipped_steps} so far)",
            )
        self.scaler.update()
        self.sched.step()
        return {k: float(v.detach()) for k, v in losses.items()} if finite else {}

    def over_budget(self, started: float, t_iter: float) -> bool:
        """True when one more iteration and a final save would not fit in ``hours``
        (decided together: any process over budget stops them all)."""
        if self.cfg.hours is None:
            return False
        left = self.cfg.hours * 3600.0 - (time.time() - started)
        over = left < t_iter + self.t_save
        if self.info.enabled:
            flag = torch.tensor([float(over)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over = bool(flag.item())
        return over

    def train(self, started: float) -> str:
        """The iterations; returns why they stopped ("iterations" or "time budget")."""
        cfg = self.cfg
        bar = progress(
            range(self.iteration, cfg.iterations), desc=f"Training {self.task.name}", disable=not self.info.is_main
        )
        sums: dict[str, float] = {}
        # iterations since the last record, and those of them whose step was taken (their losses are averaged)
        n, taken, t_iter, lr, stopped = 0, 0, 0.0, self.opt.param_groups[0]["lr"], "iterations"
        for it in bar:
            if self.over_budget(started, t_iter):
                stopped = "time budget"
                break
            t0 = time.time()
            lr = self.opt.param_groups[0]["lr"]  # the rate this iteration uses
            terms = self.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            n, taken, self.iteration = n + 1, taken + bool(terms), it + 1
            if self.average is not None:
                self.average.update(self.model, self.iteration)
            t_iter = time.time() - t0
            self.train_s += t_iter
            bar.set_postfix(**{k: v / taken for k, v in sums.items()})
            if self.iteration % cfg.val_every == 0 or self.iteration == cfg.iterations:
                self.checkpoint({k: v / taken for k, v in sums.items()}, n, lr)
                sums, n, taken = {}, 0, 0
        bar.close()
        if stopped != "iterations":
            emit(
                self.iteration / cfg.iterations,
                f"Time budget of {cfg.hours} h spent: stopping at iteration {self.iteration} of {cfg.iterations}",
            )
            self.checkpoint({k: v / taken for k, v in sums.items()}, n, lr)
        return stopped

    def checkpoint(self, means: dict[str, float], n: int, lr: float) -> None:
        """Record ``means``, the mean losses of the steps taken since the last record (when any of ``n``
        iterations ran), and the validation figures, then write ``last.pt``. Called on every process."""
        record = None
        if n:
            record = {
                "iteration": self.iteration,
                "lr": lr,
                "train_s": round(self.train_s, 1),
                **{f"loss_{k}": round(distributed.all_reduce_mean(v, self.info), 5) for k, v in means.items()},
                # since the start of the run; only when there were any, so ordinary records keep their keys
                **({"skipped_steps": self.skipped_steps} if self.skipped_steps else {}),
            }
        t0 = time.time()
        if self.info.is_main and record is not None:
            record.update(self.validate())
            self.history.append(record)
            emit(self.iteration / self.cfg.iterations, "validation " + json.dumps(record))
            self.keep_if_best(record)
        streams = self.gather_streams()  # after validation, in case it drew from the global streams
        if self.info.is_main:
            save_checkpoint(
                self.out / LAST,
                {
                    "state_dict": self.model.state_dict(),
                    "optimizer": self.opt.state_dict(),
                    "scheduler": self.sched.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "config": self.task.config,
                    "iteration": self.iteration,
                    "train_s": self.train_s,
                    "skipped_steps": self.skipped_steps,
                    "history": json.dumps(self.history),
                    "init": json.dumps(self.init),
                    "rng": json.dumps(streams),
                    "best": json.dumps(self.best),
                    # training-only: here for --resume, never in model.pt, best.pt or an export
                    **({"critic_state_dict": self.critic.state_dict()} if self.critic is not None else {}),
                    **({"average_state_dict": self.average.state_dict()} if self.average is not None else {}),
                },
            )
        self.t_save = time.time() - t0
        if self.info.enabled:
            dist.barrier()

    def keep_if_best(self, record: dict) -> None:
        """With ``keep_best``, write ``best.pt`` when ``record``'s score beats every earlier one (the main
        process, after validating; weights + config, a record with the facts at this iteration).

        Args:
            record: the validation record just added to the history (at ``self.iteration``).
        """
        if not self.cfg.keep_best or self.task.score is None:
            return
        score = float(self.task.score(record))
        if not math.isfinite(score) or (self.best is not None and score <= self.best["score"]):
            return
        best = {"iteration": self.iteration, "score": score}
        facts = {k: v for k, v in self.summary("best validation score").items() if k != "config"}
        save_checkpoint(
            self.out / BEST,
            {"state_dict": self.result_model().state_dict(), "config": self.task.config},
            {"training": {**facts, "best": {**best, "chosen_on": CHOSEN_ON}, "last_record": record}},
        )
        self.best = best
        emit(self.iteration / self.cfg.iterations, f"best validation score {score:.4f} so far: {self.out / BEST}")

    def validate(self) -> dict:
        """The task's validation figures of ``result_model`` (and, when averaging, how many iterates it holds)."""
        if self.task.validate is None:
            return {}
        model = self.result_model()
        model.eval()
        try:
            with torch.no_grad():
                figures = dict(self.task.validate(model))
        finally:
            model.train()
        return figures if self.average is None else {**figures, "averaged_iterates": self.average.count}

    def gather_streams(self) -> list[dict]:
        """Every process' RNG state, in rank order (a collective under DDP)."""
        mine = _rng_state(self.rng, self.gen, self.device)
        if not self.info.enabled:
            return [mine]
        states: list[Any] = [None] * self.info.world_size
        dist.all_gather_object(states, mine)
        return states

    # -- end ------------------------------------------------------------------
    def weights_in_sync(self) -> bool:
        """DDP check: every process must end with the same weights (the critic's too)."""
        if not self.info.enabled:
            return True
        flat = torch.cat([p.detach().flatten().double() for p in self.task.trained_parameters()])
        ref = flat.clone()
        dist.broadcast(ref, 0)
        diff = torch.tensor([float((flat - ref).abs().max())], dtype=torch.float64, device=self.device)
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
        return float(diff) < 1e-6

    def summary(self, stopped: str) -> dict:
        """The run's facts at the current iteration: ``history.json``'s but the DDP check and the history.

        Args:
            stopped: why these weights are the ones written ("iterations", "time budget", "best validation score").
        """
        cfg, info, prior = self.cfg, self.info, self.init or {}
        return {
            "config": self.task.config,
            "train_options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
            **self.task.facts,
            "iterations": self.iteration,
            "iterations_planned": cfg.iterations,
            "stopped": stopped,
            "batch_size": cfg.batch_size,
            "world_size": info.world_size,
            f"{self.task.unit}_seen": self.iteration * cfg.batch_size * info.world_size,
            "wall_s_training": round(self.train_s, 1),
            "skipped_steps": self.skipped_steps,
            "threads": torch.get_num_threads(),
            "device": str(self.device),
            "hardware": distributed.describe_hardware(self.device),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "init": None if self.init is None else {k: v for k, v in self.init.items() if k != "lineage"},
            # every earlier stage, first to last, so an export of a continued run says where it comes from
            "lineage": prior.get("lineage"),
            # earlier runs' compute (from the init checkpoint's record; unknown counts as 0)
            "cumulative_iterations": self.iteration + int(prior.get("iterations") or 0),
            "cumulative_wall_s_training": round(self.train_s + float(prior.get("wall_s_training") or 0.0), 1),
            "weight_average": None
            if self.average is None
            else {"after_iteration": self.average.start, "iterates": self.average.count},
        }

    def finish(self, stopped: str) -> dict:
        """Write ``model.pt`` (weights + config, record with the training facts) and ``history.json``."""
        in_sync = self.weights_in_sync()
        if not self.info.is_main:
            return {}
        summary = {**self.summary(stopped), "params_in_sync": in_sync, "history": self.history}
        if self.cfg.keep_best:
            summary["best"] = self.best
        save_checkpoint(
            self.out / MODEL,
            {"state_dict": self.result_model().state_dict(), "config": self.task.config},
            {"training": {k: summary.get(k) for k in RECORD_KEYS}},
        )
        write_json(self.out / HISTORY, summary)
        return summary


def lineage_of(record: dict) -> list[dict]:
    """The stages that made a checkpoint, first to last: its record's own ``training.lineage`` (written by
    this function for the run it came from, or by hand for older records) and then the checkpoint's stage.

    Args:
        record: the checkpoint's JSON record (``weights.read_record``): its ``sha256`` and ``training``.

    Returns:
        A list of stages. The last holds the checkpoint's SHA-256, the ``STAGE_KEYS`` its record has, and
        ``training_cases`` (its list: ``held_out.trained_on_cases`` reads every stage's). Records
        without ``training`` (imported weights) give one stage with the SHA-256 alone.
    """
    done = record.get("training") or {}
    stage = {"sha256": record.get("sha256"), **{k: done[k] for k in STAGE_KEYS if k in done}}
    if isinstance(done.get("training_cases"), list):
        stage["training_cases"] = done["training_cases"]
    return [*(done.get("lineage") or []), stage]


def combined_training(records: list[dict]) -> dict:
    """The ``training`` entries of a checkpoint made of other checkpoints (a segmentation ensemble, a synthesis
    blend), from their records: every stage that made any of them (``lineage_of``), the union of their
    training cases (``held_out`` reads it) and their summed compute."""
    lineage = [stage for record in records for stage in lineage_of(record)]
    # a stage's list of cases, not a hand-written note (a string: held_out does not read those either)
    listed = [stage["training_cases"] for stage in lineage if isinstance(stage.get("training_cases"), list)]
    done = [record.get("training") or {} for record in records]
    return {
        "training_cases": sorted({str(c) for cases in listed for c in cases}),
        "lineage": lineage,
        "cumulative_iterations": sum(int(d.get("cumulative_iterations") or 0) for d in done),
        "cumulative_wall_s_training": round(sum(float(d.get("cumulative_wall_s_training") or 0) for d in done), 1),
    }


def half_storage(t: torch.Tensor) -> torch.Tensor:
    """float32 -> float16 storage, unless a value would not fit (then float32 stays)."""
    if t.dtype != torch.float32:
        return t
    h = t.half()
    return h if bool(torch.isfinite(h).all()) or not bool(torch.isfinite(t).all()) else t


def export(
    run_dir_or_model: str | os.PathLike,
    name: str,
    dest_dir: str | os.PathLike | None = None,
    half: bool = True,
    extra: dict | None = None,
) -> dict:
    """Write a finished run as a bundled checkpoint ``<dest_dir>/<name>.pt`` + ``.json`` record.

    Args:
        run_dir_or_model: a training output folder (its ``model.pt``), or a checkpoint of it: ``model.pt``,
            or ``best.pt`` (``--keep-best``).
        name: the bundled name, e.g. "shaspec_brats18".
        dest_dir: where to write (default: the package's bundled weights folder).
        half: store float32 weights as float16 (half the size; loaded back as float32).
        extra: more record entries (e.g. a note on the training data).

    Returns:
        The record written: SHA-256, size, config, stored dtype, and under
        "training" the run's summary (``history.json`` beside ``model.pt``, else
        the checkpoint's own record): cases, iterations, compute, hardware,
        options, where it was initialised from, cumulative compute, last record.
        For ``best.pt`` that is its own record, the facts at the chosen
        iteration (not at the end of the run) and under "best" the iteration,
        the score and what it was chosen on.

    Raises:
        InputError: ``name`` is not a plain name (``atomic.check_plain_name``),
            or ``dest_dir`` already holds ``<name>.pt`` or ``<name>.json`` (no
            checkpoint is replaced).
    """
    dest = Path(dest_dir) if dest_dir else BUNDLED_DIR
    check_plain_name(name, "checkpoint name (--name)")
    check_output_folder(
        dest,
        [f"{name}.pt", f"{name}.json"],
        f"give another --name or --out; to release new bundled weights under '{name}', delete the old "
        f"{name}.pt and {name}.json first (version control keeps them)",
    )
    model_pt = Path(run_dir_or_model)
    if model_pt.is_dir():
        model_pt = model_pt / MODEL
    payload = load_checkpoint(model_pt)
    state = {k: (half_storage(v) if half else v) for k, v in payload["state_dict"].items()}
    hist = model_pt.parent / HISTORY
    if model_pt.name == MODEL and hist.exists():  # history.json describes the end of the run: model.pt only
        summary = json.loads(hist.read_text(encoding="utf-8"))
        training = {k: v for k, v in summary.items() if k not in ("config", "history")}
        training["last_record"] = (summary.get("history") or [None])[-1]
    else:
        training = read_record(model_pt).get("training") or {}
    record = {"stored_dtype": "float16" if half else "float32", "training": training, **(extra or {})}
    return save_checkpoint(dest / f"{name}.pt", {"state_dict": state, "config": payload["config"]}, record)


#: The name ``medmodels.commands.weights`` (the ``export`` command) imports.
export_checkpoint = export
