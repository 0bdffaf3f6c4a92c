"""Every ``medmodels`` command written in the model cards and the docs uses flags that exist.

A model card is how a reader reproduces the bundled weights, so a flag that
was renamed (``--epoch-iters``, now ``--val-every``) must not survive there.
The commands are taken from the Markdown code (inline spans and fenced
blocks): ``medmodels CMD ...``, ``python -m medmodels CMD ...`` and the cards'
short form ``CMD ... --flag`` (a span that starts with a command's name).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from medmodels.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    [
        *(ROOT / "Lib" / "medmodels" / "weights").glob("*.md"),
        ROOT / "README.md",
        ROOT / "CONTRIBUTING.md",
        *(ROOT / "docs").glob("*.md"),
    ]
)
FENCED = re.compile(r"```[^\n]*\n(.*?)```", re.S)
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)*)`")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
#: What may come before ``medmodels`` at the start of a command line.
LAUNCHER = re.compile(r"\s*(\S*python3?\s+-m\s+|\S*/bin/|torchrun\s.*-m\s+)?")
#: Where a command's text ends: a comment, a pipe or a second command.
END = re.compile(r"\s#|\s\|\s|&&|;|\)\s|\bthen\b")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def code_of(text: str) -> list[str]:
    """The code of a Markdown text: fenced blocks (continuation lines joined), then inline spans."""
    blocks = [b.replace("\\\n", " ") for b in FENCED.findall(text)]
    rest = FENCED.sub("", text)
    return [line for b in blocks for line in b.splitlines()] + [s.replace("\n", " ") for s in INLINE.findall(rest)]


def commands_in(code: str, names: set[str]) -> list[tuple[str, str]]:
    """``(command, its text)`` for each medmodels command in one line or span of code."""
    found = []
    for match in re.finditer(r"(?:^|(?<=\s)|(?<=/))medmodels\s+([a-z][a-z0-9-]*)", code):
        # an unknown word counts as a (wrong) command only where the code starts with the call
        if match.group(1) in names or LAUNCHER.fullmatch(code[: match.start()]):
            found.append((match.group(1), code[match.end() :]))
    first = code.split()[0] if code.split() else ""
    if not found and first in names:
        found.append((first, code[len(first) :]))
    return [(name, END.split(rest)[0]) for name, rest in found]


def documented_commands() -> list[tuple[str, str, str]]:
    names = set(subcommands())
    return [
        (str(path.relative_to(ROOT)), name, rest)
        for path in DOCUMENTS
        for code in code_of(path.read_text(encoding="utf-8"))
        for name, rest in commands_in(code, names)
    ]


def test_the_documents_hold_commands_to_check():
    found = documented_commands()
    cards = {path for path, _, _ in found if path.startswith("Lib/medmodels/weights/")}
    assert len(cards) == 6 and len(found) > 30, (cards, len(found))  # every bundled model's card
    # the short form of the cards' tables is read too
    assert any(name == "train-syn" and "--tumour-weight" in rest for _, name, rest in found)


def test_every_documented_command_and_flag_exists():
    parsers = subcommands()
    wrong = []
    for path, name, rest in documented_commands():
        if name not in parsers:
            wrong.append(f"{path}: no command '{name}'")
            continue
        known = parsers[name]._option_string_actions
        wrong += [f"{path}: {name} has no {flag}" for flag in FLAG.findall(rest) if flag not in known]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "code, flags",
    [
        ("medmodels train-seg D --out R --epoch-iters 100", ["--epoch-iters"]),
        ("`train-syn ... --model m2dn --val-every 1000`", []),
    ],
)
def test_a_flag_that_does_not_exist_is_found(code, flags):
    parsers = subcommands()
    (name, rest), *_ = commands_in(code.strip("`"), set(parsers))
    assert [f for f in FLAG.findall(rest) if f not in parsers[name]._option_string_actions] == flags


def test_a_misspelled_command_is_found_but_prose_is_not():
    names = set(subcommands())
    assert [n for n, _ in commands_in("medmodels trian-seg D --out R", names)] == ["trian-seg"]
    assert commands_in("options.py    RunOptions and the medmodels command line", names) == []
