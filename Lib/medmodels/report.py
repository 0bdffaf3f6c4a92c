"""Reports: what an evaluation or a benchmark measured, as data, and the one writer of their files.

A :class:`Report` holds

- ``data``: the figures, a JSON-able dict whose keys each evaluation defines
  (``evaluate-seg``'s ``rows`` and ``summary``, ``evaluate-syn``'s ``table``, ...);
- where it came from: ``title``, ``kind`` (the command that makes it) and
  ``command`` (the command line, when a command made it);
- what a reader sees: ``body``, the Markdown in order, each block a paragraph
  (a note, as Markdown text) or a :class:`Table` (rows as dicts, columns in order);
- ``csv``: the table written as CSV, where the evaluation has one.

:func:`write_report` writes it as ``<stem>.json`` (``data`` after a
``"report"`` entry with the provenance), ``<stem>.md`` (the body, when there is
one) and ``<stem>.csv``: every file is written under a temporary name first and
then published without replacing anything, so a folder holds either the whole
set or none of it, and an earlier report is never replaced. Temporary files a
killed report left (``.partial-<pid>@<host>@...``, their writer gone) are
removed first, by the output-folder claim's rule (``atomic.remove_stale_staging``).
:func:`markdown_table` is the one Markdown table renderer of the library.
Torch-free: nothing here needs more than the standard library.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medmodels.atomic import (
    MOVE_THEM,
    check_output_folder,
    current_umask,
    publish_new,
    remove_stale_staging,
    staging_prefix,
)
from medmodels.errors import InputError

#: The JSON entry that carries a report's provenance beside its data (a data key may not use it).
PROVENANCE = "report"
#: The file kinds a report may be written as, with their suffixes, in the order they are published.
SUFFIXES = {"json": ".json", "csv": ".csv", "md": ".md"}


@dataclass(frozen=True)
class Table:
    """One table: ``rows`` (one dict each) shown in the order of ``columns``.

    Args:
        columns: the row keys, in column order.
        rows: one dict per row; a key a row lacks is an empty cell.
        headings: the Markdown header's cells (default: ``columns``); headings may
            repeat ("reg." under several metrics) where keys may not.
    """

    columns: Sequence[str]
    rows: Sequence[Mapping]
    headings: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.headings is not None and len(self.headings) != len(self.columns):
            raise ValueError(f"{len(self.headings)} headings for {len(self.columns)} columns")


def markdown_table(table: Table) -> str:
    """``table`` as a Markdown table: header, ``|---|`` separator, one line per row, no final newline.

    A cell is ``str(value)`` (formatting figures is the caller's: each table
    has its digits); an empty or missing cell is a single space, ``| a | | b |``.
    """

    def line(cells) -> str:
        return "|" + "|".join(f" {c} " if c != "" else " " for c in cells) + "|"

    lines = [line(table.headings or table.columns), "|" + "---|" * len(table.columns)]
    lines += [line(str(row.get(c, "")) for c in table.columns) for row in table.rows]
    return "\n".join(lines)


def markdown_text(body: Sequence[str | Table]) -> str:
    """The Markdown of ``body``: its blocks (paragraphs as they are, tables rendered), a blank line apart."""
    return "\n\n".join(b if isinstance(b, str) else markdown_table(b) for b in body)


def command_line(argv: Sequence[str] | None) -> str | None:
    """``medmodels ARGS...`` as a shell would take it back (quoted where needed); None when ``argv`` is None."""
    return None if argv is None else shlex.join(["medmodels", *map(str, argv)])


@dataclass
class Report:
    """What an evaluation or benchmark measured, where it came from and how it reads (see the module's text).

    Args:
        kind: what made it, e.g. "evaluate-seg", "bench-syn".
        title: one line saying what it is.
        data: the figures (JSON-able; written as the JSON file, after the provenance).
        body: the Markdown, block by block: paragraphs (Markdown text) and tables.
        csv: the table written as ``<stem>.csv`` (None: no CSV).
        command: the command line that made it (``command_line``), None from the library.
    """

    kind: str
    title: str
    data: dict
    body: list[str | Table] = field(default_factory=list)
    csv: Table | None = None
    command: str | None = None

    def provenance(self) -> dict:
        """The JSON's ``"report"`` entry: kind, title, command line and the library's version."""
        from medmodels import __version__

        return {"kind": self.kind, "title": self.title, "command": self.command, "medmodels": __version__}

    def markdown(self) -> str:
        """The body as Markdown (no final newline; the file gets one)."""
        return markdown_text(self.body)


def report_files(stem: str, markdown: bool = True, csv: bool = False) -> dict[str, str]:
    """The file names a report of ``stem`` is written as, by kind: ``<stem>.json``, and
    ``<stem>.md`` / ``<stem>.csv`` when it has a body / a CSV table (what commands check before they compute)."""
    kinds = ["json"] + ["csv"] * csv + ["md"] * markdown
    return {k: stem + SUFFIXES[k] for k in kinds}


def _csv_text(table: Table) -> str:
    """``table``'s rows as CSV with a header line (the csv module's dialect: ``\\r\\n`` line ends)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(table.columns))
    writer.writeheader()
    writer.writerows(table.rows)
    return buffer.getvalue()


def _texts(report: Report) -> dict[str, str]:
    """Each file's text, by kind, all made before anything is written (a bad value fails here, harmlessly)."""
    if PROVENANCE in report.data:
        raise ValueError(f"a report's data may not have the key {PROVENANCE!r}: it holds the provenance")
    texts = {"json": json.dumps({PROVENANCE: report.provenance(), **report.data}, indent=2) + "\n"}
    if report.csv is not None:
        texts["csv"] = _csv_text(report.csv)
    if report.body:
        texts["md"] = report.markdown() + "\n"
    return texts


def _write_temporary(folder: Path, text: str, suffix: str) -> str:
    """``text`` (UTF-8) in a new hidden file of ``folder`` with the umask's ordinary mode; its path."""
    fd, tmp = tempfile.mkstemp(prefix=staging_prefix(), suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 600 would hide the tables from other users
    except BaseException:
        os.remove(tmp)
        raise
    return tmp


def write_report(report: Report, folder: str | os.PathLike, stem: str, fix: str = MOVE_THEM) -> dict[str, Path]:
    """Write ``report`` into ``folder`` as ``report_files(stem, ...)``: all of them, or none.

    Args:
        report: what to write.
        folder: the output folder (created if missing).
        stem: the files' name without suffix ("results", "evaluation", "bench_seg").
        fix: what the user can do when a file is in the way, for the message (e.g. "give another --out").

    Returns:
        the written paths, by kind ("json", "md", "csv").

    Raises:
        InputError: ``folder`` already holds one of the files (it is named with ``fix``; nothing is written).
    """
    folder = Path(folder)
    texts = _texts(report)
    names = report_files(stem, "md" in texts, "csv" in texts)
    check_output_folder(folder, list(names.values()), fix)
    folder.mkdir(parents=True, exist_ok=True)
    # No claim guards a report's folder, so the temporary files of a report killed while it was written
    # (SIGKILL runs no finally) go here, by the claim's rule: only those whose writer is gone.
    remove_stale_staging(folder)
    temporary: dict[str, str] = {}
    published: list[Path] = []
    try:
        for kind in names:
            temporary[kind] = _write_temporary(folder, texts[kind], SUFFIXES[kind])
        for kind, name in names.items():
            publish_new(temporary[kind], folder / name)  # never replaces: a file made meanwhile stops it
            del temporary[kind]
            published.append(folder / name)
    except BaseException as err:
        for path in published:  # this call's own files: the set is whole or absent
            path.unlink(missing_ok=True)
        if isinstance(err, FileExistsError):
            check_output_folder(folder, list(names.values()), fix)  # names the file that appeared meanwhile
            raise InputError(f"A file of '{folder}' appeared while the report was written: {fix}.") from None
        raise
    finally:
        for tmp in temporary.values():
            if os.path.exists(tmp):
                os.remove(tmp)
    return {kind: folder / name for kind, name in names.items()}


def read_report(path: str | os.PathLike) -> Report:
    """The report whose JSON ``write_report`` wrote at ``path``: its data and provenance (the body
    is not kept in the JSON; each evaluation makes it again from the data).

    Raises:
        InputError: a missing file, or one that is not a JSON object.
    """
    path = Path(path)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"'{path}' does not exist: give the JSON file of an earlier report.") from None
    except (OSError, ValueError) as err:
        raise InputError(f"'{path}' is not a readable JSON file ({err}).") from None
    if not isinstance(saved, dict):
        raise InputError(f"'{path}' is not a report (a JSON object): give the JSON file of an earlier report.")
    provenance = saved.pop(PROVENANCE, None) or {}  # files of older versions have none
    return Report(
        kind=provenance.get("kind", ""),
        title=provenance.get("title", ""),
        data=saved,
        command=provenance.get("command"),
    )
