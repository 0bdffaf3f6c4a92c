"""The ``medmodels`` command line: one sub-command per job.

Each module in ``medmodels.commands`` adds its sub-commands through
``register(subparsers)`` and sets ``func`` on them. Errors a user can fix
(``InputError``, ``CheckpointError``), bad arguments, a failing disk
(``OSError``) and memory that runs out are printed as one ``ERROR:`` line on
stderr with exit code 2, never as a traceback. SIGTERM stops a command as Ctrl-C
does (exit code 143), so its clean-up runs.

Building the parser imports no torch: the command modules import the heavy
modules inside their command functions, so ``medmodels --help`` is quick.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from medmodels import __version__
from medmodels.errors import CheckpointError, InputError

COMMAND_MODULES = (
    "medmodels.commands.data",
    "medmodels.commands.pipeline",
    "medmodels.commands.seg",
    "medmodels.commands.syn",
    "medmodels.commands.weights",
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument ends with the one ``ERROR:`` line every
    failure of a command ends with (exit code 2, as argparse's own); the
    sub-command parsers are of this class too (argparse builds them like the parent)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        print(f"ERROR: {self.prog}: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="medmodels",
        description="Synthesise missing brain-MRI contrasts (M2DN) and segment tumours from any subset (ShaSpec).",
    )
    parser.add_argument("--version", action="version", version=f"medmodels {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler, ``kill``, a closing terminal), raised as Ctrl-C is: every ``finally``
    runs, so temporary ``.partial-*`` files and the output folder's lock are removed."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The command line as given, for the provenance of the reports a command writes (medmodels.report).
    args.argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    # Only the main thread may set a handler (a test or a host program may call main from another).
    handles = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _raise_terminated) if handles else None
    try:
        return _run(args)
    finally:
        if handles:
            signal.signal(signal.SIGTERM, before)


def _run(args: argparse.Namespace) -> int:
    """``args.func(args)``, with every failure a user can act on as one ``ERROR:`` line and exit code 2."""
    try:
        result = args.func(args)
    except (InputError, CheckpointError) as err:
        print(f"ERROR: {err}", file=sys.stderr, flush=True)
        return 2
    except MemoryError:
        print(
            "ERROR: out of memory: the inputs are too large for this machine (or the worker's memory limit). "
            "Check the volumes' size and spacing, close other programs, or run on a machine with more memory.",
            file=sys.stderr,
            flush=True,
        )
        return 2
    except OSError as err:  # a disk that fills or turns read-only under a command: say so, in one line
        where = f" ('{err.filename}')" if getattr(err, "filename", None) else ""
        print(f"ERROR: {err.strerror or err}{where}: check the path, free disk space or permissions.", file=sys.stderr)
        return 2
    except _Terminated:
        print("ERROR: stopped by SIGTERM: run the command again to do its work.", file=sys.stderr, flush=True)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("ERROR: interrupted", file=sys.stderr, flush=True)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
