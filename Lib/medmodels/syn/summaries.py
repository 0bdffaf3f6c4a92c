"""Per-pattern summaries of the synthesis evaluation's rows, with the paired tests.

The rows are ``medmodels.syn.scoring``'s (case x pattern x missing modality).
Working grid: means over slices and slice-level Wilcoxon tests, and per-case
paired tests (``medmodels.stats.paired_case_test``) of M2DN against each
baseline; input grid: means over cases of per-case means and the per-case
tests; the T1c enhancement ratios; the std maps' calibration.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy.stats import wilcoxon

from medmodels.modalities import BY_KEY, AvailabilityMask
from medmodels.stats import paired_case_test
from medmodels.syn.scoring import METHODS, METRICS, REGIONS_SCORED


def paired_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2 or np.allclose(a[ok], b[ok]):
        return None
    return float(wilcoxon(a[ok], b[ok]).pvalue)


def _case_means(rows: list[dict], value) -> tuple[list[str], np.ndarray]:
    """Case names in order of appearance and, per case, the mean of ``value(row)`` over its rows (NaN: none finite)."""
    cases = list(dict.fromkeys(x["case"] for x in rows))
    means = []
    for case in cases:
        values = np.array([value(x) for x in rows if x["case"] == case], float)
        means.append(float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else float("nan"))
    return cases, np.array(means)


def summarise_working_grid(rows: list[dict], patterns: Sequence[AvailabilityMask]) -> list[dict]:
    """Working grid, per pattern: mean of each metric and method over slices; M2DN against each
    baseline: ``p_<metric>_vs_<base>`` over slices (slice-level), ``test_<metric>_vs_<base>_cases``
    (``paired_case_test`` of per-case means) and its p as ``p_<metric>_vs_<base>_cases``."""
    table = []
    for mask in patterns:
        r = [x for x in rows if x["pattern"] == mask.bits]
        if not r:
            continue
        entry: dict = {
            "pattern": mask.bits,
            "available": mask.label,
            "missing": "+".join(BY_KEY[k].display for k in mask.missing_keys),
            "n_case_modality": len(r),
            "n_slices": int(sum(len(x["slices"]) for x in r)),
        }
        for metric in METRICS:
            for method in METHODS:
                per_slice = np.concatenate([x[method][metric] for x in r])
                entry[f"{method}_{metric}"] = float(np.nanmean(per_slice))
            for base in METHODS[1:]:
                a = np.concatenate([x["m2dn"][metric] for x in r])
                b = np.concatenate([x[base][metric] for x in r])
                entry[f"p_{metric}_vs_{base}"] = paired_p(a, b)
                test = paired_case_test(
                    *(_case_means(r, lambda x, m=m, k=metric: np.nanmean(x[m][k]))[1] for m in ("m2dn", base))
                )
                entry[f"test_{metric}_vs_{base}_cases"] = test
                entry[f"p_{metric}_vs_{base}_cases"] = test["p"]
        table.append(entry)
    return table


def _pattern_entry(mask: AvailabilityMask, n_cases: int) -> dict:
    return {
        "pattern": mask.bits,
        "available": mask.label,
        "missing": "+".join(BY_KEY[k].display for k in mask.missing_keys),
        "n_cases": n_cases,
    }


def _mean(values) -> float | None:
    values = np.asarray([np.nan if v is None else v for v in values], float)
    return float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else None


def _nan(value: float | None) -> float:
    return np.nan if value is None else value


def summarise_input_grid(rows: list[dict], patterns: Sequence[AvailabilityMask]) -> list[dict]:
    """Input grid, per pattern: ``<method>_<region>_<metric>`` = the mean over cases of each
    case's mean over its missing modalities, and ``test_<region>_<metric>`` =
    ``paired_case_test`` of M2DN against the regression U-Net on those per-case means."""
    table = []
    for mask in patterns:
        r = [x for x in rows if x["pattern"] == mask.bits]
        if not r:
            continue
        entry = _pattern_entry(mask, len({x["case"] for x in r}))
        for region, metric in itertools.product(REGIONS_SCORED, METRICS):
            per_case = {}
            for method in METHODS:
                _, per_case[method] = _case_means(r, lambda x, m=method, g=region, k=metric: _nan(x[m][g][k]))
                entry[f"{method}_{region}_{metric}"] = _mean(per_case[method])
            entry[f"test_{region}_{metric}"] = paired_case_test(per_case["m2dn"], per_case["regression"])
        table.append(entry)
    return table


def summarise_enhancement(rows: list[dict], patterns: Sequence[AvailabilityMask]) -> list[dict]:
    """T1c enhancement, per pattern with T1c missing: the per-case excess contrasts (true and
    each method), each method's ratio to the true one (None where the true contrast is not
    positive), and their means over cases; ``m2dn_reaches_half``: mean M2DN ratio >= 0.5."""
    table = []
    for mask in patterns:
        r = [x for x in rows if x["pattern"] == mask.bits and x.get("enhancement")]
        if "t1c" not in mask.missing_keys or not r:
            continue
        cases = []
        for x in r:
            e = x["enhancement"]
            ok = e["true"] is not None and e["true"] > 0
            ratios = {f"{m}_ratio": e[m] / e["true"] if ok and e[m] is not None else None for m in METHODS}
            cases.append({"case": x["case"], **e, **ratios})
        entry = {**_pattern_entry(mask, len(cases)), "cases": cases}
        for key in ("true", *METHODS, *(f"{m}_ratio" for m in METHODS)):
            entry[key] = _mean([c[key] for c in cases])
        ratio = entry["m2dn_ratio"]
        entry["m2dn_reaches_half"] = None if ratio is None else bool(ratio >= 0.5)
        table.append(entry)
    return table


def summarise_calibration(rows: list[dict], patterns: Sequence[AvailabilityMask]) -> list[dict]:
    """Per pattern: the mean over cases of each case's mean calibration figures (rows that have them)."""
    table = []
    for mask in patterns:
        r = [x for x in rows if x["pattern"] == mask.bits and "calibration" in x]
        if not r:
            continue
        entry = _pattern_entry(mask, len({x["case"] for x in r}))
        for key in ("spearman", "error_ratio"):
            entry[key] = _mean(_case_means(r, lambda x, k=key: _nan(x["calibration"][k]))[1])
        table.append(entry)
    return table
