"""The synthesis evaluation's Markdown, from ``medmodels.syn.summaries``' per-pattern tables: each
section as report blocks (paragraphs and ``medmodels.report.Table``), ``evaluation_body`` all of them."""

from __future__ import annotations

import numpy as np

from medmodels.held_out import not_held_out_lines
from medmodels.report import Table
from medmodels.stats import CASE_TEST
from medmodels.syn.scoring import METHODS


def fmt(value: float | None, digits: int = 2) -> str:
    """A figure for the Markdown tables ('-' for none)."""
    return "-" if value is None else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    """A p-value for the tables: '-' for none, three decimals, or the exponent below 0.001."""
    return "-" if value is None else (f"{value:.1e}" if value < 1e-3 else f"{value:.3f}")


def working_grid_table(table: list[dict]) -> Table:
    """The working-grid per-pattern table (PSNR, SSIM, slice-level p-values) with the mean of patterns as last row."""
    columns, headings, digits = ["available", "missing"], ["available", "missing"], {"psnr": 2, "ssim": 3}
    for metric, name in (("psnr", "PSNR"), ("ssim", "SSIM")):
        columns += [f"{m}_{metric}" for m in METHODS] + [f"p_{metric}_vs_{b}" for b in METHODS[1:]]
        headings += [f"{name} M2DN", f"{name} reg.", f"{name} mean", "p slices vs reg.", "p slices vs mean"]
    columns.append("n_slices")
    headings.append("slices")

    def cell(key: str, value) -> str:
        if key.startswith("p_"):
            return _p(value)
        return fmt(value, digits[key.rsplit("_", 1)[1]]) if key.endswith(("_psnr", "_ssim")) else str(value)

    rows = [{k: cell(k, e[k]) for k in columns} for e in table]
    if table:
        means = {k: float(np.mean([e[k] for e in table])) for k in columns if k.endswith(("_psnr", "_ssim"))}
        rows.append({"available": "**mean of patterns**", **{k: cell(k, v) for k, v in means.items()}})
    return Table(columns, rows, headings)


def case_tests_body(table: list[dict], input_table: list[dict]) -> list[str | Table]:
    """Per-case paired tests, M2DN minus regression, on the working grid and (when scored) the input grid."""
    by_pattern = {e["pattern"]: e for e in input_table}
    cols = [("SSIM working", "ssim", 3), ("PSNR working", "psnr", 2)]
    extra = [("SSIM input brain", "brain_ssim", 3), ("PSNR input brain", "brain_psnr", 2)]
    extra += [("SSIM input tumour", "tumour_ssim", 3)]
    extra = extra if input_table else []
    rows = []
    for e in table:
        row = {"available": e["available"], "missing": e["missing"]}
        row.update({name: _test_cell(e[f"test_{key}_vs_regression_cases"], d) for name, key, d in cols})
        i = by_pattern.get(e["pattern"])
        row.update({name: _test_cell(i[f"test_{key}"], d) if i else "-" for name, key, d in extra})
        rows.append(row)
    return [
        "Per-case paired tests, M2DN minus regression U-Net: mean difference over cases (cases M2DN wins / "
        f"cases, p). {CASE_TEST}; with n cases the smallest possible p is 2/2^n (0.125 for 4 cases).",
        Table(["available", "missing", *(c[0] for c in cols + extra)], rows),
    ]


def _test_cell(test: dict, digits: int) -> str:
    """'+0.012 (3/4, p 0.250)': mean difference, cases won, p."""
    if test["mean_difference"] is None:
        return "-"
    p = "-" if test["p"] is None else f"{test['p']:.3f}"
    return f"{test['mean_difference']:+.{digits}f} ({test['wins']}/{test['n']}, p {p})"


def input_grid_body(input_table: list[dict], enhancement_table: list[dict]) -> list[str | Table]:
    """The input-grid table (brain and tumour) and the T1c enhancement table with its per-case figures."""
    groups = [("brain_ssim", "SSIM brain", 3, METHODS), ("brain_psnr", "PSNR brain", 2, METHODS)]
    groups += [("tumour_ssim", "SSIM tumour", 3, METHODS), ("tumour_psnr", "PSNR tumour", 2, METHODS[:2])]
    columns, headings, digits = ["available", "missing"], ["available", "missing"], {}
    for key, name, d, methods in groups:
        columns += [f"{m}_{key}" for m in methods]
        headings += [f"{name} M2DN", "reg.", "mean"][: len(methods)]
        digits.update({f"{m}_{key}": d for m in methods})
    rows = [
        {**{k: e[k] for k in ("available", "missing", "n_cases")}, **{k: fmt(e[k], d) for k, d in digits.items()}}
        for e in input_table
    ]
    body: list[str | Table] = [
        "Input grid (whole volumes as synthesised), mean over cases:",
        Table([*columns, "n_cases"], rows, [*headings, "cases"]),
    ]
    if enhancement_table:
        keys = ["true", *METHODS, "m2dn_ratio", "regression_ratio"]
        heads = ["true", "M2DN", "reg.", "mean fill", "M2DN / true", "reg. / true"]
        rows = [
            {"available": e["available"], "n_cases": e["n_cases"], **{k: fmt(e[k]) for k in keys}}
            for e in enhancement_table
        ]
        body += [
            "T1c enhancement, excess contrast mean(ET) / mean(edema) - 1 on the true T1c's scale; ratio = "
            "synthesised / true, mean over cases (the floor: M2DN ratio >= 0.5):",
            Table(["available", *keys, "n_cases"], rows, ["available", *heads, "cases"]),
        ]
        for e in enhancement_table:
            per_case = ", ".join(f"{c['case']} {fmt(c['true'])} / {fmt(c['m2dn'])}" for c in e["cases"])
            body.append(f"{e['available']}, per case (true / M2DN): {per_case}.")
    return body


def calibration_body(table: list[dict]) -> list[str | Table]:
    """The std maps' calibration per pattern (Spearman rho, error ratio of the top and bottom 20 % std)."""
    rows = [
        {**{k: e[k] for k in ("available", "missing", "n_cases")}, "spearman": fmt(e["spearman"], 3)} for e in table
    ]
    for row, e in zip(rows, table):
        row["error_ratio"] = fmt(e["error_ratio"])
    return [
        "Std map against the error of the mean (working grid, brain pixels of the scored slices; mean over cases): "
        "Spearman rank correlation of std and |error|, and the mean |error| where std is in its top 20 % over "
        "where it is in its bottom 20 %:",
        Table(
            ["available", "missing", "spearman", "error_ratio", "n_cases"],
            rows,
            ["available", "missing", "Spearman rho", "error ratio top/bottom 20 % std", "cases"],
        ),
    ]


def downstream_dice_table(rows: list[dict]) -> Table:
    """The downstream Dice (``medmodels.downstream``'s rows, the result's ``"dice"``): one line per pattern,
    with the per-case differences (synthesised minus incomplete) of ET and WT and the cases where they are positive."""
    out = []
    for d in rows:
        row = {
            "available": d["available"],
            **{k: " / ".join(fmt(v, 3) for v in d[k]) for k in ("incomplete", "synthesised")},
        }
        for key, region in (("et", 0), ("wt", 2)):  # channels ET, TC, WT
            diffs = [c["synthesised"][region] - c["incomplete"][region] for c in d.get("per_case", [])]
            wins = sum(x > 0 for x in diffs)
            row[key] = f"{', '.join(f'{x:+.3f}' for x in diffs)} ({wins}/{len(diffs)} up)" if diffs else ""
        out.append(row)
    headings = ["available", "Dice ET/TC/WT incomplete", "Dice ET/TC/WT synthesised full set"]
    headings += ["ET difference per case", "WT difference per case"]
    return Table(["available", "incomplete", "synthesised", "et", "wt"], out, headings)


def evaluation_body(result: dict) -> list[str | Table]:
    """The evaluation's Markdown, from its result alone: working grid, per-case tests, input grid (when
    scored), calibration (when several samples), downstream Dice (when ``medmodels.downstream`` added it)."""
    body: list[str | Table] = [working_grid_table(result["table"])]
    body += case_tests_body(result["table"], result["input_grid"] or [])
    if result["input_grid"] is not None:
        body += input_grid_body(result["input_grid"], result["enhancement"] or [])
    if result["calibration"]:
        body += calibration_body(result["calibration"])
    if result.get("dice"):
        body.append(downstream_dice_table(result["dice"]))
    return body + not_held_out_lines(result, len(result["validation_cases"]))
