"""Arguments several commands share."""

from __future__ import annotations

import argparse

import torch


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to run: the GPU when there is one (auto), or force cpu/cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch (default: PyTorch's choice)")


def apply_runtime_arguments(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def parse_size(text: str) -> tuple[int, int, int]:
    """'96' -> (96, 96, 96); '240x240x155' -> (240, 240, 155)."""
    parts = [int(p) for p in text.lower().replace(",", "x").split("x") if p]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) < 8:
        raise argparse.ArgumentTypeError(f"size is N or XxYxZ with each at least 8, got '{text}'")
    return tuple(parts)  # type: ignore[return-value]
