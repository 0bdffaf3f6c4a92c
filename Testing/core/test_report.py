"""medmodels.report: a report as data, its one writer (all files or none, never over an earlier one),
the one Markdown table renderer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from medmodels import report as report_module
from medmodels.errors import InputError
from medmodels.report import Report, Table, command_line, markdown_table, read_report, report_files, write_report


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


def test_read_report_says_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_report(tmp_path / "none.json")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(InputError, match="not a report"):
        read_report(tmp_path / "list.json")
    (tmp_path / "old.json").write_text('{"rows": []}', encoding="utf-8")  # written before reports had provenance
    assert read_report(tmp_path / "old.json").data == {"rows": []}
