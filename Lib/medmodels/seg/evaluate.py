"""Evaluation over the 15 availability subsets (the layout of the ShaSpec
paper's Table 1). Segmenting cases is ``medmodels run --segment``.

For each case and each subset, the model segments the case from that subset
(a missing modality's file is simply not given), then ET, TC and WT are
scored against the expert labels with ``medmodels.metrics.region_scores``
(Dice; HD95 in mm; BraTS conventions for empty regions). Results: per case
(CSV, JSON) and averaged per subset (Markdown, JSON), several models side by side,
written as one report (``medmodels.report``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medmodels.datasets import discover_cases
from medmodels.errors import InputError
from medmodels.held_out import (
    CALIBRATED_ON,
    TRAINED_ON,
    calibrated_on_by_model,
    not_held_out_lines,
    trained_on_by_model,
)
from medmodels.io import read_header
from medmodels.labels import REGIONS
from medmodels.metrics import region_scores
from medmodels.modalities import AvailabilityMask
from medmodels.progress import progress
from medmodels.report import Report, Table, read_report, report_files, write_report
from medmodels.seg.inference import (
    BASELINE_NAME,
    BUNDLED_NAME,
    DEFAULT_THRESHOLD,
    Segmenter,
    load_segmenter,
    segmenter_file,
)
from medmodels.stats import paired_case_test

#: What ``write_results`` writes into the output folder, by kind: results.json, results.csv, results.md.
RESULT_FILES = report_files("results", markdown=True, csv=True)
#: The fix when the output folder holds earlier results.
NEW_RESULTS_FOLDER = "give another --out (--include OLD/results.json adds the earlier models to the new tables)"
METRICS = [f"Dice_{r}" for r in REGIONS] + [f"HD95_{r}" for r in REGIONS]


def parse_subsets(text: str) -> list[AvailabilityMask]:
    if text == "all":
        return AvailabilityMask.all_subsets()
    return [AvailabilityMask.from_bits(b.strip()) for b in text.split(",") if b.strip()]


def _evaluate_case(case, models: Mapping[str, Segmenter], subsets, cleanup: bool, with_hd95: bool, bar=None):
    """Rows of one case (every subset, every model) and the seconds each model took."""
    images, labels = case.load()
    rows, timing = [], {m: 0.0 for m in models}
    for mask in subsets:
        given = {k: images[k] for k in mask.keys}
        for model_name, seg in models.items():
            t0 = time.time()
            pred = seg.segment(given, mask, cleanup=cleanup, label_convention="2018")
            timing[model_name] += time.time() - t0
            spacing_zyx = tuple(labels.spacing)[::-1] if with_hd95 else None  # no spacing: Dice only
            s = region_scores(pred.array, labels.array, spacing_zyx)
            rows.append(
                {
                    "model": model_name,
                    "case": case.name,
                    "subset": mask.bits,
                    "modalities": mask.label,
                    **{k: round(v, 4) for k, v in s.items()},
                }
            )
            if bar is not None:
                next(bar, None)
                bar.set_postfix(case=case.name, subset=mask.label, dice_wt=s["Dice_WT"])
    return rows, timing


def _worker(args):
    """One case in a worker process (``jobs > 1``): one thread, models loaded there."""
    import torch

    case, checkpoints, subset_bits, cleanup, with_hd95, device, mirror_axes, threshold = args
    torch.set_num_threads(1)
    models = {
        n: load_segmenter(c, device=device, mirror_axes=mirror_axes, threshold=threshold)
        for n, c in checkpoints.items()
    }
    rows, timing = _evaluate_case(
        case, models, [AvailabilityMask.from_bits(b) for b in subset_bits], cleanup, with_hd95
    )
    return rows, timing, {n: m.threshold for n, m in models.items()}


def _evaluate_in_processes(cases: Sequence, models: Mapping, settings: tuple, jobs: int):
    """``evaluate``'s rows, seconds per model and thresholds per model, with one case per single-thread
    process (``_worker``), ``jobs`` at a time; ``settings``: the rest of ``_worker``'s arguments."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if any(isinstance(m, Segmenter) for m in models.values()):
        raise InputError("With jobs > 1, give checkpoints ('bundled', 'baseline' or paths), not loaded models.")
    rows, timing, thresholds = [], {m: 0.0 for m in models}, {}
    tasks = [(case, dict(models), *settings) for case in cases]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for case_rows, case_timing, case_thresholds in progress(
            pool.map(_worker, tasks), total=len(tasks), desc="Evaluating cases"
        ):
            thresholds.update(case_thresholds)  # the same models in every worker
            rows += case_rows
            for m, t in case_timing.items():
                timing[m] += t
    names, bits = [c.name for c in cases], settings[0]
    rows.sort(key=lambda r: (names.index(r["case"]), bits.index(r["subset"])))
    return rows, timing, thresholds


def evaluate(
    data_dir,
    case_names: Sequence[str] | None,
    models: Mapping[str, Segmenter | str | None],
    subsets: Sequence[AvailabilityMask] | None = None,
    cleanup: bool = True,
    with_hd95: bool = True,
    jobs: int = 1,
    device: str = "cpu",
    mirror_axes: tuple[int, ...] = (),
    threshold: float | None = None,
) -> dict:
    """Score every model on every case and subset; returns ``{"rows": [...], "summary": ...}``.

    ``models`` maps a column name to a loaded :class:`Segmenter`, or (any
    ``jobs``) to a checkpoint (a ``medmodels.checkpoint_ref.CheckpointRef`` or its text:
    "bundled" = bundled ShaSpec, "baseline", "ensemble", None = the default (``inference.DEFAULT_SEGMENTER``),
    or a path).
    ``jobs > 1`` evaluates cases in that many single-thread processes.
    ``mirror_axes``: test-time mirroring of the checkpoints loaded here (``seg.inference``).
    ``threshold``: the probability threshold of the checkpoints loaded here, instead of each one's own;
    the result's ``thresholds`` says which each model used.
    The result's ``TRAINED_ON`` maps each model given as a checkpoint to the evaluated cases it
    trained on (``held_out.trained_on_by_model``, read after the models loaded, so that a missing checkpoint
    is reported by the loader's own message); a loaded ``Segmenter`` has no record to read and no entry.
    ``CALIBRATED_ON`` likewise names the cases each threshold was chosen on (none when ``threshold`` is given).
    """
    subsets = list(subsets or AvailabilityMask.all_subsets())
    found, names = resolve_cases(data_dir, case_names)
    check_label_grids([found[n] for n in names])
    if jobs > 1:
        settings = ([m.bits for m in subsets], cleanup, with_hd95, device, tuple(mirror_axes), threshold)
        rows, timing, thresholds = _evaluate_in_processes([found[n] for n in names], models, settings, jobs)
    else:
        loaded = {
            n: (
                m
                if isinstance(m, Segmenter)
                else load_segmenter(m, device=device, mirror_axes=mirror_axes, threshold=threshold)
            )
            for n, m in models.items()
        }
        thresholds = {n: m.threshold for n, m in loaded.items()}
        rows, timing = [], {m: 0.0 for m in models}
        bar = progress(range(len(names) * len(subsets) * len(models)), desc="Evaluating")
        it = iter(bar)
        for name in names:
            case_rows, case_timing = _evaluate_case(found[name], loaded, subsets, cleanup, with_hd95, bar=it)
            rows += case_rows
            for m, t in case_timing.items():
                timing[m] += t
        next(it, None)
    # the files the loaders loaded (None: the default), so the held-out checks read their records
    given = {n: segmenter_file(m) for n, m in models.items() if not isinstance(m, Segmenter)}
    return {
        "cases": names,
        "subsets": [m.bits for m in subsets],
        "models": list(models),
        "cleanup": cleanup,
        "rows": rows,
        "summary": summarise(rows, list(models), subsets),
        "seconds_per_case_and_subset": {m: round(t / max(1, len(names) * len(subsets)), 2) for m, t in timing.items()},
        "thresholds": thresholds,
        TRAINED_ON: trained_on_by_model(given, names, BUNDLED_NAME, BASELINE_NAME),
        # a threshold given to evaluate() replaces the checkpoints' own, and with it their calibration
        CALIBRATED_ON: {}
        if threshold is not None
        else calibrated_on_by_model(given, names, BUNDLED_NAME, BASELINE_NAME),
    }


def resolve_cases(data_dir, case_names: Sequence[str] | None) -> tuple[dict, list[str]]:
    """The cases of ``data_dir`` (every one with all four images and labels) and the names to evaluate.

    Args:
        data_dir: the folder of BraTS case folders.
        case_names: the cases asked for; None or empty: every case found.

    Raises:
        InputError: a named case that is not in ``data_dir``.
    """
    found = discover_cases(data_dir, require_all=True, require_label=True)
    names = list(case_names) if case_names else list(found)
    missing = [n for n in names if n not in found]
    if missing:
        raise InputError(f"Cases not found in '{data_dir}': {', '.join(missing)}.")
    return found, names


def summarise(rows, model_names, subsets) -> dict:
    keys = [k for k in METRICS if rows and k in rows[0]]
    summary = {}
    for m in model_names:
        per_subset = {}
        for mask in subsets:
            sel = [r for r in rows if r["model"] == m and r["subset"] == mask.bits]
            per_subset[mask.bits] = {k: float(np.mean([r[k] for r in sel])) for k in keys}
        avg = {k: float(np.mean([v[k] for v in per_subset.values()])) for k in keys}
        partial = [v for b, v in per_subset.items() if b != "1111"]
        avg_partial = {k: float(np.mean([v[k] for v in partial])) for k in keys} if partial else {}
        dice_keys = [k for k in keys if k.startswith("Dice")]
        summary[m] = {
            "per_subset": per_subset,
            "average": avg,
            "average_fewer_than_4": avg_partial,
            "mean_dice_fewer_than_4": float(np.mean([avg_partial[k] for k in dice_keys])) if avg_partial else None,
        }
    return summary


def read_included(path: str | Path) -> dict:
    """The earlier results.json given to ``--include``, checked before any evaluation.

    Raises:
        InputError: a missing file, not JSON, or not the results of ``evaluate-seg``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"--include: '{path}' does not exist: give the results.json of an earlier run.")
    try:
        result = read_report(path).data
    except InputError as err:  # not JSON, or not a JSON object
        raise InputError(f"--include: not a results.json of evaluate-seg: {err}") from None
    needed = ("cases", "subsets", "models", "rows")
    if any(k not in result for k in needed):
        raise InputError(f"--include: '{path}' is not a results.json of evaluate-seg (it lacks {', '.join(needed)}).")
    return result


def check_label_grids(cases: Sequence) -> None:
    """Refuse, before any segmentation, a case whose labels are not on its images' grid.

    Only the headers are read (``read_header``), so this costs no time.

    Raises:
        InputError: naming the case, the two grids and the fix.
    """
    for case in cases:
        label = read_header(case.label)
        for key, path in case.images.items():
            image = read_header(path)
            if not image.same_grid(label):
                raise InputError(
                    f"Case '{case.name}': its labels '{case.label.name}' ({label.describe_grid()}) are not on the "
                    f"grid of its {key} image ({image.describe_grid()}): resample the labels onto the image grid "
                    "(nearest neighbour), or leave the case out."
                )


def scores_hd95(result: dict) -> bool:
    """Whether ``result`` (``evaluate``'s, or an earlier results.json) holds HD95 (not run with ``--no-hd95``)."""
    return bool(result["rows"]) and f"HD95_{REGIONS[0]}" in result["rows"][0]


def _differing(flag: str, earlier: Sequence[str], this: Sequence[str]) -> str:
    """The words for ``flag``'s values that only one of the two runs has (at most five of each)."""
    only = [sorted(set(a) - set(b)) for a, b in ((earlier, this), (this, earlier))]
    named = [", ".join(o[:5]) + (f" and {len(o) - 5} more" if len(o) > 5 else "") or "none" for o in only]
    return f"the two runs have other {flag} (only in the earlier run: {named[0]}; only in this one: {named[1]})"


def check_included(
    earlier: dict,
    cases: Sequence[str],
    subsets: Sequence[str],
    models: Sequence[str],
    with_hd95: bool,
    cleanup: bool,
    mirror: str | None,
) -> None:
    """Refuse, before any evaluation, an earlier result (``--include``) that cannot sit beside this run's.

    The merged tables compare models on one set of cases and subsets scored one way, and the JSON records
    one clean-up and one mirroring setting, so each must agree (the order of cases and subsets need not).
    Refusing keeps the tables complete: blank HD95 for one model, or Dice with and without clean-up side
    by side, would read as a like-for-like comparison.

    Args:
        earlier: the included results (``read_included``).
        cases: the names of the cases this run evaluates.
        subsets: the bit strings of this run's subsets (``AvailabilityMask.bits``).
        models: this run's column names.
        with_hd95: whether this run scores HD95.
        cleanup: whether this run cleans up its segmentations.
        mirror: this run's ``--mirror`` word; None: not recorded (``evaluate`` from the library).

    Raises:
        InputError: naming the first setting that differs and the fix.
    """
    fix = "drop --include"
    earlier_mirror = earlier.get("mirror", "none")  # results from before --mirror existed were not mirrored
    problem = None
    if set(earlier["cases"]) != set(cases):
        problem = (
            f"{_differing('cases', earlier['cases'], cases)}: give the same --cases or --split as the earlier "
            f"run, or {fix}"
        )
    elif set(earlier["subsets"]) != set(subsets):
        problem = (
            f"{_differing('subsets', earlier['subsets'], subsets)}: give the same --subsets as the earlier run, "
            f"or {fix}"
        )
    elif set(earlier["models"]) & set(models):
        problem = (
            f"the model name(s) {sorted(set(earlier['models']) & set(models))} are in both runs: give another --name"
        )
    elif mirror is not None and earlier_mirror != mirror:
        problem = (
            f"the earlier run was made with --mirror {earlier_mirror} and this one with --mirror {mirror}: "
            f"give --mirror {earlier_mirror} like the earlier run, or {fix}"
        )
    for flag, was_off, is_off in (
        ("--no-hd95", not scores_hd95(earlier), not with_hd95),
        ("--no-cleanup", not earlier.get("cleanup", True), not cleanup),
    ):
        if problem is None and was_off != is_off:
            made, redo = ("with", "give") if was_off else ("without", "leave out")
            problem = (
                f"the earlier run was made {made} {flag} and this one {'without' if was_off else 'with'} it: "
                f"{redo} {flag} like the earlier run, or {fix}"
            )
    if problem:
        raise InputError(f"--include: the earlier results cannot join this run's tables: {problem}.")


def merge_results(first: dict, second: dict) -> dict:
    """Put two evaluations of the same cases and subsets side by side (``check_included`` first)."""
    check_included(
        first,
        second["cases"],
        second["subsets"],
        second["models"],
        scores_hd95(second),
        second["cleanup"],
        second.get("mirror"),
    )
    models = first["models"] + second["models"]
    rows = first["rows"] + second["rows"]
    subsets = [AvailabilityMask.from_bits(b) for b in first["subsets"]]
    return {
        **second,
        "models": models,
        "rows": rows,
        "summary": summarise(rows, models, subsets),
        "seconds_per_case_and_subset": {
            **first.get("seconds_per_case_and_subset", {}),
            **second.get("seconds_per_case_and_subset", {}),
        },
        # results from before thresholds were recorded were all thresholded at 0.5
        "thresholds": {
            **{m: DEFAULT_THRESHOLD for m in first["models"]},
            **first.get("thresholds", {}),
            **second.get("thresholds", {}),
        },
        # the included models keep what their own run found (not recomputed: their checkpoints may be gone)
        TRAINED_ON: {**first.get(TRAINED_ON, {}), **second.get(TRAINED_ON, {})},
        CALIBRATED_ON: {**first.get(CALIBRATED_ON, {}), **second.get(CALIBRATED_ON, {})},
        "wall_s": {"earlier": first.get("wall_s"), "this": second.get("wall_s")},
    }


def paired_differences(result: dict, first: str, second: str) -> dict:
    """``first`` minus ``second``, case by case, over the incomplete subsets
    (fewer than four modalities): the unit of evidence is the case, since the
    subsets of one case share its anatomy. Returns per-case means of the Dice
    difference (mean of ET, TC, WT, in points), how many case x subset pairs
    ``first`` wins, and the two-sided Wilcoxon signed-rank p over cases of
    ``medmodels.stats.paired_case_test`` (None below 2 cases; with 4 cases the
    smallest possible p is 0.125)."""

    def score(row) -> float:
        return 100.0 * float(np.mean([row[f"Dice_{r}"] for r in REGIONS]))

    rows = {(r["model"], r["case"], r["subset"]): r for r in result["rows"] if r["subset"] != "1111"}
    per_case, wins, pairs = {}, 0, 0
    for case in result["cases"]:
        diffs = []
        for bits in result["subsets"]:
            a, b = rows.get((first, case, bits)), rows.get((second, case, bits))
            if a is None or b is None:
                continue
            diffs.append(score(a) - score(b))
            wins, pairs = wins + (diffs[-1] > 0), pairs + 1
        if diffs:
            per_case[case] = float(np.mean(diffs))
    values = list(per_case.values())
    test = paired_case_test(values, [0.0] * len(values))  # the per-case differences against no difference
    return {
        "first": first,
        "second": second,
        "per_case_mean_dice_difference": per_case,
        "mean_difference": test["mean_difference"],
        "pairs_won": wins,
        "pairs": pairs,
        "wilcoxon_p_over_cases": test["p"],
    }


def _paired_body(result: dict) -> list[str | Table]:
    """The paired per-case comparison of the last model with the first (none for one model)."""
    models = result["models"]
    if len(models) < 2:
        return []
    d = paired_differences(result, models[-1], models[0])
    if not d["per_case_mean_dice_difference"]:
        return []
    rows = [{"case": c, "difference": f"{v:+.2f}"} for c, v in d["per_case_mean_dice_difference"].items()]
    rows.append({"case": "**mean**", "difference": f"**{d['mean_difference']:+.2f}**"})
    p = "n/a" if d["wilcoxon_p_over_cases"] is None else f"{d['wilcoxon_p_over_cases']:.3f}"
    return [
        f"**Paired per case**: {d['first']} minus {d['second']}, mean Dice of ET/TC/WT (points) over the "
        "incomplete subsets",
        Table(("case", "difference"), rows),
        f"{d['first']} ahead in {d['pairs_won']} of {d['pairs']} case x subset pairs; Wilcoxon signed-rank over "
        f"cases p = {p}.",
    ]


def results_body(result: dict) -> list[str | Table]:
    """The Markdown of ``result``: per metric (Dice, HD95 when scored) a line naming the cases and a table
    of every subset and model (ET / TC / WT) with the averages; then the paired comparison."""
    models = result["models"]
    subsets = [AvailabilityMask.from_bits(b) for b in result["subsets"]]
    summ = result["summary"]
    body: list[str | Table] = []
    for metric, fmt, label in (
        ("Dice", lambda v: f"{100 * v:.2f}", "Dice (%)"),
        ("HD95", lambda v: f"{v:.2f}", "HD95 (mm)"),
    ):
        keys = [f"{metric}_{r}" for r in REGIONS]
        if keys[0] not in summ[models[0]]["average"]:
            continue
        flags = ["FLAIR", "T1", "T1c", "T2"]
        columns = [*flags, *(f"{m} {r}" for m in models for r in REGIONS)]
        rows = []
        for mask in subsets:
            marks = ["●" if a else "○" for a in mask.available]
            vals = [fmt(summ[m]["per_subset"][mask.bits][k]) for m in models for k in keys]
            rows.append(dict(zip(columns, marks + vals)))
        for row, field in (
            ("average (15 subsets)", "average"),
            ("average (14 subsets with < 4)", "average_fewer_than_4"),
        ):
            if summ[models[0]][field]:
                vals = [f"**{fmt(summ[m][field][k])}**" for m in models for k in keys]
                rows.append({flags[0]: row, **dict(zip(columns[4:], vals))})
        cases = f"{len(result['cases'])} case(s): " + ", ".join(result["cases"])
        body += [f"**{label}**, ET / TC / WT, mean over {cases}", Table(columns, rows)]
    thresholds = result.get("thresholds") or {}
    if any(t != DEFAULT_THRESHOLD for t in thresholds.values()):
        body.append("Probability thresholds: " + ", ".join(f"{m} {t:g}" for m, t in thresholds.items()) + ".")
    body += not_held_out_lines(result, len(result["cases"]))
    return body + _paired_body(result)


def results_report(result: dict, command: str | None = None) -> Report:
    """``result`` (``evaluate``'s, or ``merge_results``') as a report: the JSON is ``result``, the CSV its rows.

    Args:
        result: the evaluation.
        command: the command line that made it (``report.command_line``), None from the library.
    """
    return Report(
        kind="evaluate-seg",
        title="Segmentation per availability subset (Dice, HD95): " + ", ".join(result["models"]),
        data=result,
        body=results_body(result),
        csv=Table(list(result["rows"][0]), result["rows"]),
        command=command,
    )


def write_results(result: dict, out_dir, command: str | None = None) -> dict[str, Path]:
    """Write ``result`` into ``out_dir`` as ``RESULT_FILES`` (``results_report``); earlier results there are
    refused, never replaced. ``command``: the command line, for the JSON's provenance. Returns the paths by kind."""
    return write_report(results_report(result, command), out_dir, "results", NEW_RESULTS_FOLDER)
