"""Arguments several commands share.

Nothing here imports torch: ``medmodels --help`` builds every parser, and the
heavy modules are imported inside the command functions only.
"""

from __future__ import annotations

import argparse

from medmodels.options import DEVICES


def add_runtime_arguments(parser: argparse.ArgumentParser, device: bool = True) -> None:
    """``--device`` (unless the command's options already hold it) and ``--threads``."""
    if device:
        parser.add_argument(
            "--device",
            default="auto",
            choices=DEVICES,
            help="where to run: the GPU when there is one (auto), or force cuda/cpu",
        )
    parser.add_argument(
        "--threads", type=_threads, default=None, help="CPU threads for PyTorch (default: PyTorch's choice)"
    )


def _threads(text: str) -> int:
    """``--threads``: a whole number of at least 1 (0: PyTorch's choice)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--threads is a whole number, 1 or more (0: PyTorch's choice), got '{text}'")
    return value


def apply_runtime_arguments(args: argparse.Namespace) -> None:
    """Set PyTorch's CPU thread count from ``--threads`` (absent, None or 0: PyTorch's choice)."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def parse_size(text: str) -> tuple[int, int, int]:
    """'96' -> (96, 96, 96); '240x240x155' -> (240, 240, 155)."""
    parts = [int(p) for p in text.lower().replace(",", "x").split("x") if p]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) < 8:
        raise argparse.ArgumentTypeError(f"size is N or XxYxZ with each at least 8, got '{text}'")
    return tuple(parts)  # type: ignore[return-value]


def out_argument(parser: argparse.ArgumentParser, what: str, required: bool = True, default=None) -> None:
    """The one spelling of an output folder: ``--out DIR``; ``what`` says what goes into it."""
    parser.add_argument(
        "--out", type=_folder, required=required, default=default, metavar="DIR", help=f"output folder ({what})"
    )


def _folder(text: str):
    from pathlib import Path

    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"'{text}' is a file: --out is a folder (it is created if missing)")
    return path


def add_training_arguments(parser: argparse.ArgumentParser, iterations: int, batch_size: int) -> None:
    """The options of the one training loop (``medmodels.training.LoopConfig``),
    spelled and meant the same in ``train-seg`` and ``train-syn`` (``--out``,
    ``--device`` and ``--threads`` included); ``training_options`` reads them back.

    Args:
        iterations, batch_size: the family's defaults.
    """
    out_argument(parser, "last.pt, model.pt, history.json")
    parser.add_argument(
        "--iterations",
        type=int,
        default=iterations,
        help=f"optimiser steps of the whole run, a resumed run counting on (default {iterations})",
    )
    parser.add_argument(
        "--batch-size", type=int, default=batch_size, help=f"samples per iteration and process (default {batch_size})"
    )
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate: linear warm-up, then cosine decay")
    parser.add_argument(
        "--optimizer",
        choices=("adamw", "sgd"),
        default="adamw",
        help="adamw (default, for short budgets) or sgd (Nesterov momentum 0.99, the ShaSpec paper's)",
    )
    parser.add_argument(
        "--val-every",
        type=int,
        default=100,
        metavar="N",
        help="every N iterations: validation figures into history.json, and OUT/last.pt (default 100)",
    )
    parser.add_argument(
        "--hours",
        type=float,
        default=None,
        help="wall-clock budget in hours (data loading included): stops before it is spent and "
        "writes last.pt, model.pt and history.json as at the end (default: no budget)",
    )
    parser.add_argument(
        "--init",
        default=None,
        metavar="bundled|PATH",
        help="start from existing weights: 'bundled' (the bundled model of this architecture) or a "
        "checkpoint .pt with its .json record; same model options required. The record's "
        "training compute is carried forward into history.json",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in OUT exactly where OUT/last.pt left it; without --resume an "
        "existing OUT/last.pt is an error",
    )
    parser.add_argument("--seed", type=int, default=0, help="initial weights and data draws (with the process rank)")
    parser.add_argument(
        "--no-amp",
        dest="amp",
        action="store_false",
        help="float32 training (default: bfloat16 autocast on CPUs with bf16 instructions and on GPUs)",
    )
    add_runtime_arguments(parser)


def training_options(args: argparse.Namespace) -> dict:
    """The ``LoopConfig`` fields from arguments added by ``add_training_arguments``."""
    return {
        "out": str(args.out),
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "optimizer": args.optimizer,
        "val_every": args.val_every,
        "hours": args.hours,
        "init": args.init,
        "resume": args.resume,
        "seed": args.seed,
        "amp": args.amp,
        "threads": args.threads,
        "device": args.device,
    }
