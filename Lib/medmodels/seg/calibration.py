"""Choosing a segmentation checkpoint's probability threshold on validation cases.

A network trained on a few cases is less sure of tumours unlike the ones it saw: on unseen
cases its sigmoid probabilities fall below 0.5 over much of the tumour, and thresholding at
0.5 under-segments (on the 4 validation cases of ``splits/brats18_shared.json`` the bundled
ShaSpec kept 89-99 % precision and 30-76 % recall of the whole tumour; docs/segmentation.md,
"The probability threshold"). The threshold is a property of the trained weights, so it is
chosen on cases they never trained on and recorded in the checkpoint (``config["threshold"]``,
read by ``seg.inference.Segmenter``).

``calibrate(segmenter, cases, subsets, thresholds)``:

1. each case and subset is run once (``Segmenter.probabilities``); every candidate threshold
   is applied to the same probabilities with the rule inference uses
   (``regions_from_probabilities``: threshold, then clean-up) and scored (Dice of ET, TC, WT);
2. a case's score at a threshold is its mean Dice over subsets and regions; the threshold with
   the best mean over cases is chosen (ties: the one nearest ``DEFAULT_THRESHOLD``);
3. leave one case out: for each case, the threshold chosen on the others and that case's
   score at it, against its score at the default. With a handful of cases this is the honest
   estimate of what the choice is worth on a case it did not see.

``write_calibrated(source, destination, calibration)`` copies a checkpoint with the
threshold in its config and the calibration in its record, so the weights, their SHA-256 and
the threshold travel together.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medmodels.errors import InputError
from medmodels.labels import REGIONS, regions_to_labels
from medmodels.metrics import region_scores
from medmodels.modalities import AvailabilityMask
from medmodels.report import Report, Table, report_files, write_report
from medmodels.seg.inference import DEFAULT_THRESHOLD, Segmenter, check_threshold, regions_from_probabilities

#: The thresholds tried by default: 0.1 to 0.7 in steps of 0.05. Above 0.5 too: a model that
#: over-segments may have its best threshold there (the tumour-mixing ensemble's TC peaks at 0.55),
#: and a range that stopped at 0.5 would choose its edge without saying what lies beyond.
CANDIDATES = tuple(round(0.1 + 0.05 * i, 2) for i in range(13))


def check_candidates(thresholds: Sequence[float]) -> tuple[float, ...]:
    """Sorted distinct thresholds, each in (0, 1), at least one; the default is always among them,
    so the calibration can say what it gains over it."""
    values = sorted({check_threshold(t) for t in thresholds} | {DEFAULT_THRESHOLD})
    return tuple(values)


def score_case(
    segmenter: Segmenter,
    images,
    labels,
    subsets: Sequence[AvailabilityMask],
    thresholds: Sequence[float],
    cleanup: bool = True,
    bar=None,
) -> list[dict]:
    """Rows ``{subset, threshold, Dice_ET, Dice_TC, Dice_WT}`` of one case.

    Args:
        segmenter: the loaded model (its own threshold is not used here).
        images: ``{key: Image}`` of the case, on one grid; labels: its ``Image`` of BraTS labels.
        subsets: the availability subsets to run; thresholds: the candidates (``check_candidates``).
        cleanup: the connected-component clean-up, as ``Segmenter.segment``.
        bar: an iterator advanced once per subset (a progress bar), or None.
    """
    rows = []
    for mask in subsets:
        probs = segmenter.probabilities({k: images[k] for k in mask.keys}, None, mask)
        for t in thresholds:
            regions = regions_from_probabilities(probs, t, labels.spacing, cleanup)
            scores = region_scores(regions_to_labels(regions, "2018"), labels.array, None)
            rows.append(
                {"subset": mask.bits, "threshold": t, **{f"Dice_{r}": round(scores[f"Dice_{r}"], 4) for r in REGIONS}}
            )
        if bar is not None:
            next(bar, None)
    return rows


def edge_note(threshold: float, candidates: Sequence[float]) -> str | None:
    """A warning when ``threshold`` is the lowest or highest of several candidates: the score may still
    improve beyond it, so the choice is the range's, not the model's; ``None`` inside the range."""
    low, high = min(candidates), max(candidates)
    if low == high or low < threshold < high:
        return None
    side, beyond = ("highest", "above") if threshold == high else ("lowest", "below")
    return (
        f"The chosen threshold {threshold:g} is the {side} candidate: the score may still rise {beyond} it. "
        f"Calibrate again with --thresholds reaching {beyond} {threshold:g}."
    )


def case_scores(rows: Sequence[dict]) -> dict[float, dict[str, float]]:
    """``{threshold: {case: mean Dice over the case's subsets and the three regions}}`` of rows
    that carry ``case``, ``threshold`` and ``Dice_ET/TC/WT``."""
    out: dict[float, dict[str, list[float]]] = {}
    for row in rows:
        out.setdefault(row["threshold"], {}).setdefault(row["case"], []).extend(row[f"Dice_{r}"] for r in REGIONS)
    return {t: {c: float(np.mean(v)) for c, v in per_case.items()} for t, per_case in out.items()}


def choose(scores: dict[float, dict[str, float]], cases: Sequence[str] | None = None) -> float:
    """The threshold whose mean score over ``cases`` (default: all) is highest; ties go to the
    one nearest ``DEFAULT_THRESHOLD``, so the default stays unless another does better."""
    if not scores:
        raise InputError("No thresholds were scored: give at least one case and one subset.")

    def mean(t: float) -> float:
        per_case = scores[t]
        names = list(per_case) if cases is None else list(cases)
        return float(np.mean([per_case[c] for c in names]))

    return max(sorted(scores), key=lambda t: (round(mean(t), 10), -abs(t - DEFAULT_THRESHOLD)))


def leave_one_case_out(scores: dict[float, dict[str, float]]) -> list[dict]:
    """Per case: the threshold chosen on the other cases, the case's score at it and at the default.

    Needs at least two cases (each choice is made on the others)."""
    cases = sorted(next(iter(scores.values())))
    if len(cases) < 2:
        raise InputError("Leaving one case out needs at least two cases: calibrate on two or more validation cases.")
    out = []
    for case in cases:
        t = choose(scores, [c for c in cases if c != case])
        out.append(
            {
                "case": case,
                "threshold_chosen_on_the_others": t,
                "score": round(scores[t][case], 4),
                "score_at_default": round(scores[DEFAULT_THRESHOLD][case], 4),
            }
        )
    return out


def calibrate(
    segmenter: Segmenter,
    cases: dict,
    subsets: Sequence[AvailabilityMask],
    thresholds: Sequence[float] = CANDIDATES,
    cleanup: bool = True,
    bar=None,
) -> dict:
    """Score every candidate threshold on every case and subset, and choose one.

    Args:
        segmenter: the loaded model.
        cases: ``{name: case}`` with ``case.load() -> (images, labels)`` (``seg.evaluate.resolve_cases``).
        subsets, thresholds, cleanup, bar: as ``score_case``.

    Returns:
        ``{"threshold", "edge_note", "candidates", "cases", "subsets", "cleanup", "mean_score",
        "leave_one_case_out", "rows"}``; ``mean_score`` maps each candidate to its mean over cases;
        ``edge_note`` is ``edge_note``'s warning or ``None``.
    """
    thresholds = check_candidates(thresholds)
    rows = []
    for name, case in cases.items():
        images, labels = case.load()
        rows += [{"case": name, **r} for r in score_case(segmenter, images, labels, subsets, thresholds, cleanup, bar)]
    scores = case_scores(rows)
    chosen = choose(scores)
    return {
        "threshold": chosen,
        "edge_note": edge_note(chosen, thresholds),
        "candidates": list(thresholds),
        "cases": list(cases),
        "subsets": [m.bits for m in subsets],
        "cleanup": cleanup,
        "mean_score": {str(t): round(float(np.mean(list(per.values()))), 4) for t, per in sorted(scores.items())},
        "leave_one_case_out": leave_one_case_out(scores) if len(cases) > 1 else [],
        "rows": rows,
    }


def write_calibrated(source: str | os.PathLike, destination: str | os.PathLike, calibration: dict) -> dict:
    """Copy the checkpoint ``source`` to ``destination`` with ``calibration["threshold"]`` in its config.

    The record keeps the source's (training, lineage) and gains ``calibration`` (the choice,
    the cases, the scores; not the per-row figures). ``destination`` may be ``source``: the
    file is read whole first and replaced atomically, record last (``weights.save_checkpoint``).

    Returns:
        The new record.
    """
    from medmodels.weights import load_checkpoint, read_record, save_checkpoint

    # SHA-256 checked; tensors and config saved as stored (float16 exports stay float16, flat configs flat)
    payload = load_checkpoint(source, config_as_stored=True)
    source_record = read_record(source)
    record = {k: v for k, v in source_record.items() if k not in ("file", "sha256", "size_bytes", "config")}
    payload = {**payload, "config": {**payload["config"], "threshold": check_threshold(calibration["threshold"])}}
    record["calibration"] = {k: v for k, v in calibration.items() if k != "rows"}
    record["calibration"]["calibrated_from_sha256"] = source_record["sha256"]
    return save_checkpoint(Path(destination), payload, record)


#: The files ``evaluate-seg --calibrate`` writes into its --out.
REPORT_FILES = report_files("calibration", markdown=True, csv=True)


def threshold_calibration_body(result: dict) -> list[str | Table]:
    """The Markdown of a calibration: the candidates' scores per case, the leave-one-case-out
    check, and the choice."""
    cases = result["cases"]
    scores = case_scores(result["rows"])
    rows = []
    for t in sorted(scores):
        picked = [r for r in result["rows"] if r["threshold"] == t]
        rows.append(
            {
                "threshold": f"{t:g}" + (" (chosen)" if t == result["threshold"] else ""),
                "mean over cases": f"{100 * np.mean(list(scores[t].values())):.2f}",
                **{c: f"{100 * scores[t][c]:.1f}" for c in cases},
                **{r: f"{100 * np.mean([p[f'Dice_{r}'] for p in picked]):.1f}" for r in REGIONS},
            }
        )
    body: list[str | Table] = [
        f"Mean Dice (%) over {len(result['subsets'])} subset(s) and the regions ET, TC, WT, per case and its mean "
        f"over the {len(cases)} case(s); the last three columns: each region's mean over cases and subsets. "
        f"Clean-up {'on' if result['cleanup'] else 'off'}.",
        Table(["threshold", "mean over cases", *cases, *REGIONS], rows),
    ]
    loo = result["leave_one_case_out"]
    if loo:
        gain = np.mean([r["score"] - r["score_at_default"] for r in loo])
        body += [
            f"Leaving one case out: each case scored at the threshold chosen on the others, against "
            f"{DEFAULT_THRESHOLD:g}; mean change {100 * gain:+.2f} points per case.",
            Table(
                ["case", "threshold chosen on the others", "score", f"score at {DEFAULT_THRESHOLD:g}"],
                [
                    {
                        "case": r["case"],
                        "threshold chosen on the others": f"{r['threshold_chosen_on_the_others']:g}",
                        "score": f"{100 * r['score']:.1f}",
                        f"score at {DEFAULT_THRESHOLD:g}": f"{100 * r['score_at_default']:.1f}",
                    }
                    for r in loo
                ],
            ),
        ]
    body.append(f"**Chosen threshold: {result['threshold']:g}** (checkpoint {result.get('checkpoint', '?')}).")
    if result.get("edge_note"):
        body.append(f"Note: {result['edge_note']}")
    return body


def write_calibration(result: dict, out_dir, command: str | None = None) -> dict[str, Path]:
    """Write ``result`` (``calibrate``'s) into ``out_dir`` as ``REPORT_FILES``; an earlier calibration there
    is refused, never replaced. Returns the paths by kind."""
    report = Report(
        kind="evaluate-seg --calibrate",
        title="Probability threshold of a segmentation checkpoint",
        data=result,
        body=threshold_calibration_body(result),
        csv=Table(list(result["rows"][0]), result["rows"]),
        command=command,
    )
    return write_report(report, out_dir, "calibration", "give another --out")
