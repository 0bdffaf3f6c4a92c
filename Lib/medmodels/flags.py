"""Command-line flags generated from a config dataclass, so that an option is spelled once.

A config (``medmodels.loop_config.LoopConfig`` and the training configs of
``seg/`` and ``syn/``) declares each field with ``option(default, help, ...)``;
``FlagConfig.add_arguments`` writes one flag per field from it, with the
field's default as the flag's default and the field's ``help`` as its text,
and ``FlagConfig.from_namespace`` reads the parsed flags back into the config.
A new option is then one field: its flag, default and help cannot disagree.
The same pair of methods is what ``medmodels.options.RunOptions`` offers for
the ``run`` command.

Flag names: ``--`` + the field name with ``-`` for ``_``; a boolean field that
is off by default is a switch (``--resume``), one that is on by default is
switched off (``--no-amp``). The value parsers shared by several commands are
here too (sizes, spacings, folders, thread counts).

This module imports neither torch nor Slicer: ``medmodels --help`` builds
every parser.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import Any, Callable

#: The key of a field's metadata that ``option`` fills.
CLI = "cli"


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    type: Callable[[str], Any] | None = None,
    choices: tuple | None = None,
    metavar: str | None = None,
    positional: bool = False,
    required: bool = False,
    hidden: bool = False,
) -> Any:
    """A dataclass field with its command-line flag.

    Args:
        default: the field's default, and so the flag's.
        help: what the option means (the ``--help`` text; the default is added to it).
        flag: the flag's name when it is not ``--`` + the field name (e.g. ``--patch`` for ``patch_size``).
        type: parser of the flag's text; by default the type of ``default`` (needed for tuples and None).
        choices: the allowed values.
        metavar: the value's name in ``--help``.
        positional: a positional argument (e.g. the data folder) instead of a flag.
        required: the flag must be given (``default`` is then the config's "not given" value).
        hidden: left out of ``--help`` (options for tests and quick runs).
    """
    spec = {
        "help": help,
        "flag": flag,
        "type": type,
        "choices": choices,
        "metavar": metavar,
        "positional": positional,
        "required": required,
        "hidden": hidden,
    }
    return field(default=default, metadata={CLI: spec})


def override(base: type, name: str, default: Any) -> Any:
    """A field of ``base`` again, with another default (a family's own, e.g. its batch size); same flag and help.

    Args:
        base: the config class that declares the field.
        name: the field's name.
        default: the new default.
    """
    spec = dict(_spec(next(f for f in fields(base) if f.name == name)))
    return field(default=default, metadata={CLI: spec})


def flag_name(f: Field) -> str:
    """The flag (or positional name) of a field declared with ``option``."""
    spec = _spec(f)
    if spec["positional"]:
        return f.name
    if spec["flag"]:
        return spec["flag"]
    stem = f.name.replace("_", "-")
    return f"--no-{stem}" if f.default is True else f"--{stem}"


def _spec(f: Field) -> dict:
    if CLI not in f.metadata:
        raise TypeError(f"Config field '{f.name}' has no flag: declare it with medmodels.flags.option(...).")
    if f.default is MISSING:
        raise TypeError(f"Config field '{f.name}' has no default: every option needs one.")
    return f.metadata[CLI]


def add_field_argument(parser: argparse.ArgumentParser, f: Field) -> None:
    """Add the flag of one field (``dest`` = the field name, default = the field's)."""
    spec, name = _spec(f), flag_name(f)
    text = argparse.SUPPRESS if spec["hidden"] else spec["help"].replace("%", "%%")
    if spec["positional"]:
        parser.add_argument(name, type=spec["type"], help=text)
        return
    if isinstance(f.default, bool):
        action = "store_false" if f.default else "store_true"
        parser.add_argument(name, dest=f.name, action=action, default=f.default, help=text)
        return
    kind = spec["type"] or (type(f.default) if f.default is not None else str)
    if kind in (tuple, list):
        raise TypeError(f"Config field '{f.name}' holds a sequence: give option(..., type=PARSER).")
    if not (spec["hidden"] or spec["required"] or f.default is None):
        text += f" (default: {shown(f.default)})"
    parser.add_argument(
        name,
        dest=f.name,
        type=kind,
        default=None if spec["required"] else f.default,
        required=spec["required"],
        choices=spec["choices"],
        metavar=spec["metavar"],
        help=text,
    )


def shown(value: Any) -> str:
    """A default as it is typed on the command line: tuples as ``a,b,c`` (every sequence parser reads it)."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value).replace("%", "%%")


class FlagConfig:
    """The flags of a dataclass whose fields are all declared with ``option`` (mix it in)."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field, in field order (``from_namespace`` reads them back)."""
        for f in fields(cls):
            add_field_argument(parser, f)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace):
        """The config the flags of ``add_arguments`` were parsed into."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


# -- value parsers shared by several commands ------------------------------------------------


def size3(text: str) -> tuple[int, int, int]:
    """'96' -> (96, 96, 96); '240x240x155' -> (240, 240, 155) (each at least 8)."""
    parts = [int(p) for p in text.lower().replace(",", "x").split("x") if p]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) < 8:
        raise argparse.ArgumentTypeError(f"size is N or XxYxZ with each at least 8, got '{text}'")
    return tuple(parts)  # type: ignore[return-value]


def spacing3(text: str) -> tuple[float, float, float]:
    """'2.5' -> (2.5, 2.5, 2.5); '1x1x3' or '1,1,3' -> (1.0, 1.0, 3.0), in mm, each above 0."""
    parts = [float(p) for p in text.lower().replace(",", "x").split("x") if p]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"spacing is S or SXxSYxSZ in mm, got '{text}'")
    return tuple(parts)  # type: ignore[return-value]


def floats(text: str) -> tuple[float, ...]:
    """'2' -> (2.0, 2.0, 2.0); '2,2,3' or '2x2x3' -> (2.0, 2.0, 3.0)."""
    vals = tuple(float(v) for v in text.replace("x", ",").split(",") if v)
    return vals * 3 if len(vals) == 1 else vals


def ints(text: str) -> tuple[int, ...]:
    """'24,48,96' or '96x96' -> a tuple of whole numbers."""
    return tuple(int(v) for v in text.replace("x", ",").split(",") if v)


def thread_count(text: str) -> int:
    """``--threads``: a whole number of at least 1 (0: PyTorch's choice)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--threads is a whole number, 1 or more (0: PyTorch's choice), got '{text}'")
    return value


def folder(text: str) -> Path:
    """An output folder: created if missing, refused when it is a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"'{text}' is a file: --out is a folder (it is created if missing)")
    return path


def folder_text(text: str) -> str:
    """``folder`` as the text a config keeps (JSON-able in ``history.json``)."""
    return str(folder(text))
