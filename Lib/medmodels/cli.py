"""The ``medmodels`` command line: one sub-command per job.

Each module in ``medmodels.commands`` adds its sub-commands through
``register(subparsers)`` and sets ``func`` on them. Errors a user can fix
(``InputError``, ``CheckpointError``) are printed as one ``ERROR:`` line on
stderr with exit code 2, never as a traceback.

Building the parser imports no torch: the command modules import the heavy
modules inside their command functions, so ``medmodels --help`` is quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from medmodels import __version__
from medmodels.errors import CheckpointError, InputError

COMMAND_MODULES = (
    "medmodels.commands.data",
    "medmodels.commands.pipeline",
    "medmodels.commands.seg",
    "medmodels.commands.syn",
    "medmodels.commands.weights",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medmodels",
        description="Synthesise missing brain-MRI contrasts (M2DN) and segment tumours from any subset (ShaSpec).",
    )
    parser.add_argument("--version", action="version", version=f"medmodels {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except (InputError, CheckpointError) as err:
        print(f"ERROR: {err}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("ERROR: interrupted", file=sys.stderr, flush=True)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
