"""Training throughput of a segmentation configuration: where one iteration's
time goes, and how much of the machine's arithmetic it uses.

``medmodels bench-seg --training`` prepares one phantom case at the working
spacing (no data set needed), then runs ``iterations`` real training steps
(patch sampling with random modality dropping, forward, loss, backward,
optimiser) and reports the seconds per phase, iterations per second, the
floating-point operations of an iteration (counted by
``torch.utils.flop_counter`` over the same random subsets, so ShaSpec's
per-subset encoders are counted as they run) and the achieved GFLOP/s against
the measured float32 matrix-multiply peak of the same threads. ``training_report``
makes the figures a report (``medmodels.report``).
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from medmodels.report import Report
from medmodels.seg.losses import seg_losses
from medmodels.seg.sampling import PatchRecipe, TrainCase, make_batch
from medmodels.throughput import throughput_phrase, time_steps


def _phantom_case(spacing, patch, size) -> TrainCase:
    from medmodels.phantom import make_phantom
    from medmodels.seg.data import prepare

    ph = make_phantom(tuple(size), seed=0)
    prep = prepare(ph.images, None, spacing, ph.labels)
    return TrainCase.build("phantom", prep.image, prep.regions, patch)


def _step(model, opt, case, batch_size, patch, rng, amp, counter: FlopCounterMode | None = None) -> tuple:
    """One training step as ``train-seg`` takes it (default patch recipe, autocast as
    ``amp`` says); returns the seconds of (data, forward, backward, optimiser)."""
    t0 = time.perf_counter()
    x, y, m = make_batch([case], batch_size, patch, rng, PatchRecipe())
    t1 = time.perf_counter()
    with counter if counter is not None else torch.enable_grad():
        with torch.autocast("cpu", dtype=amp[1], enabled=amp[0]):
            out = model(x, m)
        losses = seg_losses(out, y, 0.1, 0.02)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
    t3 = time.perf_counter()
    opt.step()
    return t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3


def bench_training(
    config: dict,
    batch_size: int = 2,
    iterations: int = 20,
    lr: float = 2e-3,
    seed: int = 0,
    phantom_size: tuple[int, int, int] = (160, 160, 120),
    amp: bool = True,
) -> dict:
    """Time ``iterations`` training steps of the model ``config`` describes
    (nested, ``medmodels.nets.config``: ``kind``, ``net`` with width and depth, ``spacing``,
    ``patch_size``; ``medmodels.seg.train.model_config`` or a loaded checkpoint's). Returns
    seconds per phase (means per iteration), iterations/s, GFLOP per iteration (counted on a
    second pass over the same random batches, so counting costs no timed seconds) and achieved
    GFLOP/s against the matmul peak. The data come from one phantom case of ``phantom_size``
    voxels (x, y, z; 1.5 mm at the default), prepared like a training case.
    ``amp``: bfloat16 autocast where the CPU has bf16 instructions, as ``train-seg`` does."""
    from medmodels.nets.segmentation import build_segmentation_net
    from medmodels.training import autocast_settings

    patch = tuple(int(p) for p in config["patch_size"])
    case = _phantom_case(tuple(config["spacing"]), patch, phantom_size)
    torch.manual_seed(seed)
    model = build_segmentation_net(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    settings = autocast_settings(amp, torch.device("cpu"))
    figures = time_steps(
        lambda rng, counter: _step(model, opt, case, batch_size, patch, rng, settings, counter), iterations, seed
    )
    return {
        "arch": config["kind"],
        "width": config["net"]["width"],
        "patch": list(patch),
        "spacing_mm": list(config["spacing"]),
        "batch_size": batch_size,
        "autocast": str(settings[1]).replace("torch.", "") if settings[0] else "off",
        **figures,
    }


def training_report(result: dict, command: str | None = None) -> Report:
    """``bench_training``'s figures as a report whose Markdown is one line (it/s, GFLOP/s against the peak).

    Args:
        result: what ``bench_training`` returned.
        command: the command line that made it (``report.command_line``), None from the library.
    """
    line = (
        f"training {result['arch']} (width {result['width']}, patch {result['patch']}, batch {result['batch_size']}, "
        f"autocast {result['autocast']}): " + throughput_phrase(result)
    )
    title = f"Training throughput of {result['arch']} (width {result['width']})"
    return Report(kind="bench-seg --training", title=title, data=result, body=[line], command=command)
