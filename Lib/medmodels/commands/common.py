"""Arguments several commands share.

Nothing here imports torch: ``medmodels --help`` builds every parser, and the
heavy modules are imported inside the command functions only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medmodels.atomic import check_output_folder
from medmodels.flags import folder, thread_count
from medmodels.options import DEVICES
from medmodels.report import Report, command_line, report_files, write_report


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


def command_of(args: argparse.Namespace) -> str | None:
    """The command line that ``args`` came from (``medmodels ...``), for a report's provenance; None when
    the namespace was not made by ``medmodels.cli.main`` (a caller that built it itself)."""
    return command_line(getattr(args, "argv", None))


def check_report_folder(out: Path | None, stem: str) -> None:
    """Refuse, before a benchmark computes, an ``--out`` that already holds its report ``stem`` (None: no --out)."""
    if out is not None:
        check_output_folder(out, list(report_files(stem).values()), "give another --out")


def show_report(report: Report, out: Path | None, stem: str) -> int:
    """Print a benchmark's report (its figures as JSON, then its Markdown) and write it into ``out`` as
    ``stem`` when --out is given (``report.write_report``: never over an earlier one). Returns 0."""
    print(json.dumps(report.data, indent=2))
    print(report.markdown())
    if out is not None:
        write_report(report, out, stem, "give another --out")
    return 0
