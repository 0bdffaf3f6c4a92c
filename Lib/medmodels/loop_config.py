"""The options of the one training loop (``medmodels.training``), spelled once.

``LoopConfig`` is what ``train-seg`` and ``train-syn`` share; each family's
config (``medmodels.seg.config``, ``medmodels.syn.config``) adds its own
options and may change these defaults. Every field is declared with
``medmodels.flags.option``, so its flag, default and help text are this
file's (``LoopConfig.add_arguments`` / ``from_namespace``).

Torch-free: ``medmodels --help`` builds the training commands' parsers from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from medmodels.checkpoint_ref import CheckpointRef, checkpoint_argument
from medmodels.flags import FlagConfig, folder_text, option, thread_count
from medmodels.options import DEVICES

#: Optimisers of the loop: AdamW, or SGD with Nesterov momentum 0.99 (the ShaSpec paper's).
OPTIMIZERS = ("adamw", "sgd")


@dataclass(kw_only=True)
class LoopConfig(FlagConfig):
    """Options of the training loop, the same in ``train-seg`` and ``train-syn``.

    Each field's meaning is its ``help`` (the text of its flag in ``--help``).
    """

    out: str = option(
        "",
        "output folder (last.pt, model.pt, history.json; best.pt with --keep-best)",
        type=folder_text,
        metavar="DIR",
        required=True,
    )
    iterations: int = option(1000, "optimiser steps of the whole run, a resumed run counting on")
    batch_size: int = option(2, "samples per iteration and process")
    lr: float = option(2e-3, "peak learning rate: linear warm-up, then cosine decay")
    optimizer: str = option(
        "adamw",
        "adamw (for short budgets) or sgd (Nesterov momentum 0.99, the ShaSpec paper's)",
        choices=OPTIMIZERS,
    )
    weight_decay: float = option(1e-4, "decoupled (AdamW) or L2 (SGD) weight decay")
    warmup: int = option(20, "iterations of linear warm-up before the cosine decay")
    val_every: int = option(
        100,
        "every N iterations: validation figures into history.json, and OUT/last.pt",
        metavar="N",
    )
    hours: float | None = option(
        None,
        "wall-clock budget in hours (data loading included): stops before it is spent and writes last.pt, "
        "model.pt and history.json as at the end (default: no budget)",
        type=float,
    )
    init: CheckpointRef | None = option(
        None,
        "start from existing weights: 'bundled' (the bundled model of this architecture) or a checkpoint .pt "
        "with its .json record; same network options required (the working spacing and patch may differ). "
        "The record's training compute is carried forward into history.json (default: random initialisation)",
        type=checkpoint_argument,
        metavar="bundled|PATH",
    )
    resume: bool = option(
        False,
        "continue the run in OUT exactly where OUT/last.pt left it; without --resume an existing OUT/last.pt "
        "is an error, and with it a missing one is",
    )
    keep_best: bool = option(
        False,
        "also keep OUT/best.pt: the weights (and config) of the validation whose score beats every earlier one "
        "(segmentation: mean validation Dice; synthesis: validation SSIM), with a record of its iteration and "
        "score; needs validation cases. Chosen on the validation cases, so figures measured on those same cases "
        "are optimistic: report cases the run never saw",
    )
    average_from: float | None = option(
        None,
        "stochastic weight averaging (SWA): from this fraction of --iterations on (0 <= F < 1, e.g. 0.2), keep the "
        "equal average of the weights after every step; the validations after that point, model.pt and best.pt "
        "are then of the average, and last.pt holds it too for --resume (default: the last weights)",
        type=float,
        metavar="F",
    )
    seed: int = option(0, "initial weights and data draws (with the process rank)")
    threads: int | None = option(None, "CPU threads for PyTorch (default: PyTorch's choice)", type=thread_count)
    device: str = option("auto", "where to run: the GPU when there is one (auto), or force cuda/cpu", choices=DEVICES)
    amp: bool = option(
        True,
        "float32 training (default: mixed precision: bfloat16 autocast on CPUs with bf16 instructions (about 3x "
        "on CPUs with AMX/avx512_bf16) and on CUDA GPUs that support it, else float16 autocast with gradient "
        "scaling; losses, weights and optimiser state stay float32)",
    )
