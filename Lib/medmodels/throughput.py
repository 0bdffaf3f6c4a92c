"""Training throughput, model-family agnostic: where one iteration's time goes,
and how much of the machine's arithmetic it uses.

``time_steps`` times any training step; ``time_task_steps`` runs real training
steps of a ``medmodels.training.Task`` (its own batch sampler and loss, AdamW).
Both report seconds per phase,
iterations per second, the floating-point operations of one iteration
(``torch.utils.flop_counter``, on a second pass over the same batches, so
counting costs no timed seconds) and the achieved GFLOP/s against the measured
float32 matrix-multiply peak of the same threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from medmodels.training import Task

PHASES = ("data", "forward", "backward", "optimiser")


def matmul_peak_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Float32 matrix-multiply rate of this process' threads, in GFLOP/s (the best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up: thread pool and caches
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def time_steps(
    step: Callable[[np.random.Generator, FlopCounterMode | None], tuple], iterations: int, seed: int = 0
) -> dict:
    """Time ``iterations`` calls of a training step (after two warm-up calls), then count their FLOPs.

    Args:
        step: ``step(rng, counter) -> seconds of each of PHASES``; it draws its
            batch from ``rng`` and runs forward and backward inside ``counter``
            when one is given.
        seed: the timed and the counted pass draw the same batches from it.

    Returns:
        ``{"threads", "iterations_timed", "seconds_per_iteration": {phase: s}, "iterations_per_s",
        "gflop_per_iteration", "achieved_gflops", "matmul_peak_gflops", "fraction_of_peak"}``.
    """
    rng = np.random.default_rng(seed + 1)
    for _ in range(2):  # warm-up: allocators and thread pools
        step(rng, None)
    rng = np.random.default_rng(seed)
    totals = np.zeros(len(PHASES))
    for _ in range(iterations):
        totals += step(rng, None)
    rng, flops = np.random.default_rng(seed), 0
    for _ in range(iterations):
        counter = FlopCounterMode(display=False)
        step(rng, counter)
        flops += counter.get_total_flops()
    per_it = dict(zip(PHASES, totals / iterations))
    seconds = float(sum(per_it.values()))
    gflop = flops / iterations / 1e9
    peak = matmul_peak_gflops()
    return {
        "threads": torch.get_num_threads(),
        "iterations_timed": iterations,
        "seconds_per_iteration": {k: round(float(v), 4) for k, v in per_it.items()},
        "iterations_per_s": round(1.0 / seconds, 3),
        "gflop_per_iteration": round(gflop, 3),
        "achieved_gflops": round(gflop / seconds, 1),
        "matmul_peak_gflops": round(peak, 1),
        "fraction_of_peak": round(gflop / seconds / peak, 3),
    }


def time_task_steps(task: Task, iterations: int = 20, lr: float = 2e-3, seed: int = 0) -> dict:
    """``time_steps`` of ``task``'s own training step (its sampler and loss, AdamW, on the CPU)."""
    task.model.train()
    if task.critic is not None:
        task.critic.train()
    opt = torch.optim.AdamW(task.trained_parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def step(rng: np.random.Generator, counter: FlopCounterMode | None) -> tuple[float, ...]:
        t0 = time.perf_counter()
        batch = task.sample(rng, 1.0)
        t1 = time.perf_counter()
        with counter if counter is not None else torch.enable_grad():
            total = task.losses(task.model, batch, gen, task.critic)["total"]
            t2 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            total.backward()
        t3 = time.perf_counter()
        opt.step()
        return t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3

    return time_steps(step, iterations, seed)


def throughput_phrase(result: dict) -> str:
    """The figures of ``time_task_steps`` as the phrase both families' training reports end with."""
    return (
        f"{result['iterations_per_s']} it/s, {result['gflop_per_iteration']} GFLOP/iteration, "
        f"{result['achieved_gflops']} GFLOP/s = {100 * result['fraction_of_peak']:.0f}% of the "
        f"{result['matmul_peak_gflops']} GFLOP/s matmul peak, {result['threads']} thread(s)"
    )
