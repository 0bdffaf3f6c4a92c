"""The synthesis evaluation's Markdown tables, from ``medmodels.syn.summaries``' per-pattern tables."""

from __future__ import annotations

import numpy as np

from medmodels.stats import CASE_TEST
from medmodels.syn.scoring import METHODS


def fmt(value: float | None, digits: int = 2) -> str:
    """A figure for the Markdown tables ('-' for none)."""
    return "-" if value is None else f"{value:.{digits}f}"


def working_grid_markdown(table: list[dict]) -> str:
    """The working-grid per-pattern table (PSNR, SSIM, slice-level p-values) with the mean of patterns as last row."""
    f = fmt

    def p(v):
        return "-" if v is None else (f"{v:.1e}" if v < 1e-3 else f"{v:.3f}")

    lines = [
        "| available | missing | PSNR M2DN | PSNR reg. | PSNR mean | p slices vs reg. | p slices vs mean "
        "| SSIM M2DN | SSIM reg. | SSIM mean | p slices vs reg. | p slices vs mean | slices |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        lines.append(
            f"| {e['available']} | {e['missing']} | {f(e['m2dn_psnr'])} | {f(e['regression_psnr'])} | "
            f"{f(e['mean_fill_psnr'])} | {p(e['p_psnr_vs_regression'])} | {p(e['p_psnr_vs_mean_fill'])} | "
            f"{f(e['m2dn_ssim'], 3)} | {f(e['regression_ssim'], 3)} | {f(e['mean_fill_ssim'], 3)} | "
            f"{p(e['p_ssim_vs_regression'])} | {p(e['p_ssim_vs_mean_fill'])} | {e['n_slices']} |"
        )
    avg = (
        {k: float(np.mean([e[k] for e in table])) for k in table[0] if k.endswith(("_psnr", "_ssim", "_mae"))}
        if table
        else {}
    )
    if avg:
        lines.append(
            f"| **mean of patterns** | | {f(avg['m2dn_psnr'])} | {f(avg['regression_psnr'])} | "
            f"{f(avg['mean_fill_psnr'])} | | | {f(avg['m2dn_ssim'], 3)} | {f(avg['regression_ssim'], 3)} | "
            f"{f(avg['mean_fill_ssim'], 3)} | | | |"
        )
    return "\n".join(lines)


def case_tests_markdown(table: list[dict], input_table: list[dict]) -> str:
    """Per-case paired tests, M2DN minus regression, on the working grid and (when scored) the input grid."""
    by_pattern = {e["pattern"]: e for e in input_table}
    cols = [("SSIM working", "ssim", 3), ("PSNR working", "psnr", 2)]
    extra = [("SSIM input brain", "brain_ssim", 3), ("PSNR input brain", "brain_psnr", 2)]
    extra += [("SSIM input tumour", "tumour_ssim", 3)]
    extra = extra if input_table else []
    lines = [
        "Per-case paired tests, M2DN minus regression U-Net: mean difference over cases (cases M2DN wins / "
        f"cases, p). {CASE_TEST}; with n cases the smallest possible p is 2/2^n (0.125 for 4 cases).",
        "",
        "| available | missing | " + " | ".join(c[0] for c in cols + extra) + " |",
        "|---|---|" + "---|" * len(cols + extra),
    ]
    for e in table:
        cells = [_test_cell(e[f"test_{key}_vs_regression_cases"], d) for _, key, d in cols]
        i = by_pattern.get(e["pattern"])
        cells += [_test_cell(i[f"test_{key}"], d) if i else "-" for _, key, d in extra]
        lines.append(f"| {e['available']} | {e['missing']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _test_cell(test: dict, digits: int) -> str:
    """'+0.012 (3/4, p 0.250)': mean difference, cases won, p."""
    if test["mean_difference"] is None:
        return "-"
    p = "-" if test["p"] is None else f"{test['p']:.3f}"
    return f"{test['mean_difference']:+.{digits}f} ({test['wins']}/{test['n']}, p {p})"


def input_grid_markdown(input_table: list[dict], enhancement_table: list[dict]) -> str:
    """The input-grid table (brain and tumour) and the T1c enhancement table."""
    f = fmt
    lines = [
        "Input grid (whole volumes as synthesised), mean over cases:",
        "",
        "| available | missing | SSIM brain M2DN | reg. | mean | PSNR brain M2DN | reg. | mean "
        "| SSIM tumour M2DN | reg. | mean | PSNR tumour M2DN | reg. | cases |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in input_table:
        cells = [f(e[f"{m}_brain_ssim"], 3) for m in METHODS] + [f(e[f"{m}_brain_psnr"]) for m in METHODS]
        cells += [f(e[f"{m}_tumour_ssim"], 3) for m in METHODS] + [f(e[f"{m}_tumour_psnr"]) for m in METHODS[:2]]
        lines.append(f"| {e['available']} | {e['missing']} | " + " | ".join(cells) + f" | {e['n_cases']} |")
    if enhancement_table:
        lines += [
            "",
            "T1c enhancement, excess contrast mean(ET) / mean(edema) - 1 on the true T1c's scale; ratio = "
            "synthesised / true, mean over cases (the floor: M2DN ratio >= 0.5):",
            "",
            "| available | true | M2DN | reg. | mean fill | M2DN / true | reg. / true | cases |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for e in enhancement_table:
            cells = [f(e[k]) for k in ("true", *METHODS, "m2dn_ratio", "regression_ratio")]
            lines.append(f"| {e['available']} | " + " | ".join(cells) + f" | {e['n_cases']} |")
        for e in enhancement_table:
            per_case = ", ".join(f"{c['case']} {f(c['true'])} / {f(c['m2dn'])}" for c in e["cases"])
            lines.append(f"\n{e['available']}, per case (true / M2DN): {per_case}.")
    return "\n".join(lines)


def calibration_markdown(table: list[dict]) -> str:
    lines = [
        "Std map against the error of the mean (working grid, brain pixels of the scored slices; mean over cases): "
        "Spearman rank correlation of std and |error|, and the mean |error| where std is in its top 20 % over "
        "where it is in its bottom 20 %:",
        "",
        "| available | missing | Spearman rho | error ratio top/bottom 20 % std | cases |",
        "|---|---|---|---|---|",
    ]
    for e in table:
        lines.append(
            f"| {e['available']} | {e['missing']} | {fmt(e['spearman'], 3)} | {fmt(e['error_ratio'])} | {e['n_cases']} |"
        )
    return "\n".join(lines)


def evaluation_markdown(table, input_table, enhancement_table, calibration_table) -> str:
    """The evaluation's Markdown: working grid, per-case tests, input grid (None: not scored), calibration."""
    text = working_grid_markdown(table) + "\n\n" + case_tests_markdown(table, input_table or [])
    if input_table is not None:
        text += "\n\n" + input_grid_markdown(input_table, enhancement_table)
    if calibration_table:
        text += "\n\n" + calibration_markdown(calibration_table)
    return text
