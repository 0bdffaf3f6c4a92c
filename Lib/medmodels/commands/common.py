"""Arguments several commands share.

Nothing here imports torch: ``medmodels --help`` builds every parser, and the
heavy modules are imported inside the command functions only.
"""

from __future__ import annotations

import argparse

from medmodels.flags import folder, thread_count
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
        "--threads", type=thread_count, default=None, help="CPU threads for PyTorch (default: PyTorch's choice)"
    )


def apply_runtime_arguments(args: argparse.Namespace) -> None:
    """Set PyTorch's CPU thread count from ``--threads`` (absent, None or 0: PyTorch's choice)."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def out_argument(parser: argparse.ArgumentParser, what: str, required: bool = True, default=None) -> None:
    """The one spelling of an output folder: ``--out DIR``; ``what`` says what goes into it."""
    parser.add_argument(
        "--out", type=folder, required=required, default=default, metavar="DIR", help=f"output folder ({what})"
    )
