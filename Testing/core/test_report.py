"""medmodels.report: a report as data, its one writer (all files or none, never over an earlier one),
the one Markdown table renderer, and that no other library file writes results or Markdown tables."""

from __future__ import annotations

import ast
import csv
import json
import os
import stat
from pathlib import Path

import pytest
from medmodels import report as report_module
from medmodels.errors import InputError
from medmodels.report import Report, Table, command_line, markdown_table, read_report, report_files, write_report

LIB = Path(__file__).resolve().parents[2] / "Lib" / "medmodels"


def _report() -> Report:
    rows = [{"case": "A", "dice": 0.5, "note": "ü"}, {"case": "B", "dice": None, "note": ""}]
    return Report(
        kind="evaluate-test",
        title="A test report",
        data={"rows": rows, "nested": {"x": [1.5, None, "●"]}, "n": 2},
        body=["**Dice**, two cases", Table(["case", "dice"], [{"case": "A", "dice": "50.00"}], ["case", "Dice (%)"])],
        csv=Table(["case", "dice", "note"], rows),
        command=command_line(["evaluate-test", "my data", "--out", "x"]),
    )


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_markdown_table_renders_header_separator_rows_and_empty_cells():
    table = Table(["a", "b", "c"], [{"a": "1", "b": "", "c": 3}, {"a": "**mean**"}], ["A", "reg.", "reg."])
    assert markdown_table(table) == "| A | reg. | reg. |\n|---|---|---|\n| 1 | | 3 |\n| **mean** | | |"
    assert markdown_table(Table(["x"], [])) == "| x |\n|---|"
    with pytest.raises(ValueError, match="headings"):
        Table(["a", "b"], [], ["only one"])


def test_a_report_is_written_as_json_csv_and_markdown_and_its_json_reads_back(tmp_path):
    report = _report()
    paths = write_report(report, tmp_path / "out", "results")
    assert list(paths) == ["json", "csv", "md"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.csv", "results.json", "results.md"]
    back = read_report(paths["json"])
    assert back.data == report.data and (back.kind, back.title) == (report.kind, report.title)
    assert back.command == "medmodels evaluate-test 'my data' --out x"  # a shell takes it back as it was
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["report"]["medmodels"]  # the version that wrote it
    assert paths["md"].read_text(encoding="utf-8") == (
        "**Dice**, two cases\n\n| case | Dice (%) |\n|---|---|\n| A | 50.00 |\n"
    )
    rows = list(csv.DictReader(paths["csv"].open(encoding="utf-8", newline="")))
    assert rows == [{"case": "A", "dice": "0.5", "note": "ü"}, {"case": "B", "dice": "", "note": ""}]
    assert report_files("bench_seg") == {"json": "bench_seg.json", "md": "bench_seg.md"}


def test_a_report_without_body_or_csv_is_its_json_alone(tmp_path):
    paths = write_report(Report(kind="k", title="t", data={"a": 1}), tmp_path, "figures")
    assert list(paths) == ["json"] and _tree(tmp_path).keys() == {"figures.json"}
    assert read_report(paths["json"]).data == {"a": 1}


def test_data_may_not_take_the_provenance_key(tmp_path):
    with pytest.raises(ValueError, match="report"):
        write_report(Report(kind="k", title="t", data={"report": 1}), tmp_path, "x")
    assert not list(tmp_path.iterdir())


def test_an_existing_file_is_refused_by_name_and_the_folder_is_left_as_it_was(tmp_path):
    (tmp_path / "results.md").write_text("earlier tables", encoding="utf-8")
    before = _tree(tmp_path)
    with pytest.raises(InputError, match=r"results\.md.*give another --out") as err:
        write_report(_report(), tmp_path, "results", "give another --out")
    assert "results.json" not in str(err.value)  # names the file in the way, not the whole set
    assert _tree(tmp_path) == before  # no new file, no temporary one


def test_a_failure_while_writing_the_second_file_leaves_no_file_of_the_set(tmp_path, monkeypatch):
    real = report_module._write_temporary
    calls = []

    def failing(folder, text, suffix):
        calls.append(suffix)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(folder, text, suffix)

    monkeypatch.setattr(report_module, "_write_temporary", failing)
    with pytest.raises(OSError, match="No space"):
        write_report(_report(), tmp_path, "results")
    assert calls == [".json", ".csv"] and list(tmp_path.iterdir()) == []


def test_a_failure_while_publishing_the_second_file_takes_the_first_back(tmp_path, monkeypatch):
    real = report_module.publish_new
    published = []

    def failing(tmp, dest):
        if published:
            raise OSError(5, "Input/output error")
        real(tmp, dest)
        published.append(Path(dest).name)

    monkeypatch.setattr(report_module, "publish_new", failing)
    with pytest.raises(OSError, match="Input/output"):
        write_report(_report(), tmp_path, "results")
    assert published == ["results.json"] and list(tmp_path.iterdir()) == []


def test_a_file_that_appears_while_writing_is_not_replaced(tmp_path, monkeypatch):
    """Another program writes results.csv between the check and the publication: it stays, the set is withdrawn."""
    real = report_module.publish_new

    def racing(tmp, dest):
        if Path(dest).name == "results.csv":
            Path(dest).write_text("theirs", encoding="utf-8")
        real(tmp, dest)

    monkeypatch.setattr(report_module, "publish_new", racing)
    with pytest.raises(InputError, match=r"results\.csv"):
        write_report(_report(), tmp_path, "results")
    assert _tree(tmp_path) == {"results.csv": b"theirs"}


def test_report_files_get_the_umasks_ordinary_mode(tmp_path):
    mask = os.umask(0o027)
    try:
        paths = write_report(_report(), tmp_path, "results")
    finally:
        os.umask(mask)
    assert {stat.S_IMODE(p.stat().st_mode) for p in paths.values()} == {0o640}  # not mkstemp's 600


def test_the_umask_is_read_in_one_place():
    """``os.umask`` reads the mask only by setting it: ``atomic.current_umask`` does that once for all."""
    readers = []
    for path in sorted(LIB.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for f in ast.walk(tree):
            if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            calls = [n for n in ast.walk(f) if isinstance(n, ast.Attribute) and n.attr == "umask"]
            if calls and (path.name, f.name) != ("atomic.py", "current_umask"):
                readers.append(f"{path.relative_to(LIB)}: {f.name}")
    assert not readers, f"use medmodels.atomic.current_umask: {readers}"


def test_read_report_says_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_report(tmp_path / "none.json")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(InputError, match="not a report"):
        read_report(tmp_path / "list.json")
    (tmp_path / "old.json").write_text('{"rows": []}', encoding="utf-8")  # written before reports had provenance
    assert read_report(tmp_path / "old.json").data == {"rows": []}


# -- one writer: no other library file writes results or Markdown tables ---------------------------

#: Library files that write JSON that is not an evaluation's or a benchmark's report, with the reason.
OTHER_WRITERS = {
    "atomic.py": "write_json and write_atomically themselves",
    "contract.py": "the worker's manifest.json (Manifest.write)",
    "weights.py": "the checkpoint and its record",
    "training.py": "a training run's history.json",
    "phantom.py": "the phantom case's transforms record",
}


def writes_outside_the_report(lib: Path) -> list[str]:
    """What library files other than report.py do that is the report writer's job: a Markdown table
    separator, ``json.dump``, ``write_text``/``write_bytes``, a csv writer, or (except OTHER_WRITERS)
    ``write_json``/``write_atomically``."""
    found = []
    for path in sorted(lib.rglob("*.py")):
        name = str(path.relative_to(lib))
        if name == "report.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and ("|---" in node.value or "---|" in node.value)
            ):
                found.append(f"{name}:{node.lineno}: a Markdown table (use report.markdown_table)")
            writer = None
            if isinstance(node, ast.Attribute):
                base = node.value.id if isinstance(node.value, ast.Name) else None
                if (base, node.attr) in (("json", "dump"), ("csv", "writer"), ("csv", "DictWriter")):
                    writer = f"{base}.{node.attr}"
                elif node.attr in ("write_text", "write_bytes"):
                    writer = node.attr
            elif isinstance(node, ast.alias) and node.name in ("write_json", "write_atomically"):
                writer = node.name
            if writer and name not in OTHER_WRITERS:
                found.append(
                    f"{name}:{getattr(node, 'lineno', '?')}: {writer} (write results with report.write_report)"
                )
    return found


def test_no_library_file_but_the_report_writes_results_or_markdown_tables():
    found = writes_outside_the_report(LIB)
    assert not found, found


def test_the_writer_check_sees_a_file_that_writes_its_own_results(tmp_path):
    lib = tmp_path / "medmodels"
    (lib / "seg").mkdir(parents=True)
    (lib / "seg" / "evaluate.py").write_text(
        "import json\nfrom medmodels.atomic import write_json\n"
        "def save(r, p):\n    p.write_text(json.dumps(r))\n    return '| a |\\n|---|'\n",
        encoding="utf-8",
    )
    (lib / "report.py").write_text(
        "import json\ndef f(p):\n    json.dump({}, p)\n    return '|---|'\n", encoding="utf-8"
    )
    (lib / "phantom.py").write_text("def w(p):\n    p.write_text('{}')\n", encoding="utf-8")  # allowed, with reason
    found = writes_outside_the_report(lib)
    assert [f.split(":")[0] for f in found] == ["seg/evaluate.py"] * 3, found
