"""Evaluation of synthesis over the 14 missing patterns: M2DN against two baselines.

For each validation case (all four modalities acquired) and each missing
pattern, the missing modalities are synthesised by

- ``m2dn``: the diffusion model, DDIM with the default (or given) steps;
- ``regression``: the same network trained with the same budget, no diffusion;
- ``mean_fill``: the mean of the available modalities' z-scores (no model).

Scores, inside the brain mask, on the z-scores (the synthesis itself, not the
intensity-scale estimate of ``synthesize``) mapped to [0, 1] by the ground
truth's minimum and maximum inside the brain of that case and modality (both
images clipped to [0, 1], background 0, as synthesis papers do; SSIM is not
shift-invariant, so raw z-scores around 0 would make its luminance term
meaningless): PSNR (peak 1), SSIM (Gaussian 11 x 11, sigma 1.5; the SSIM map
averaged over brain pixels) and MAE (in that [0, 1] unit). They are
computed per axial slice at the working spacing on a fixed subset of brain
slices (every ``slice_stride``-th slice with brain), kept per slice, case and
missing modality, and summarised per pattern. Paired two-sided Wilcoxon
signed-rank tests compare M2DN with each baseline on slices (case x modality
x slice; labelled slice-level: slices of one case are not independent, so
these p-values are too small) and on cases (below).

On the input grid (1 mm for BraTS: what the user sees; ``input_grid=True``,
the default), each missing modality of each case and pattern is synthesised
as a whole volume by ``Synthesizer.synthesize`` (M2DN and regression; the mean
fill from the inputs' z-scores) and scored in 3D inside the brain and inside
the tumour (whole tumour of the case's label file, when it has one). The
synthesised volume is in an intensity scale estimated from the inputs (MR
units are arbitrary), so each image is z-scored by its own brain statistics
(``Normalizer``, as the models' inputs are) and both are mapped to [0, 1] as
above: the scores measure structure and contrast, not the scale estimate.
SSIM is one 3D map over the brain, averaged over the brain and over the
tumour (``metrics.ssim_in_regions``). For T1c, the enhancement: excess
contrast mean(ET) / mean(edema) - 1 (``metrics.enhancement_contrast``) of the
true T1c and of the synthesised one mapped to the true one's intensity scale
(same normalisation), and their ratio per case.

Per-case paired tests (``medmodels.stats.paired_case_test``): cases are the unit; per case,
the mean over its slices and missing modalities (working grid) or its missing
modalities (input grid); M2DN against the regression U-Net by an exact
two-sided Wilcoxon signed-rank test. With n cases the smallest possible p is
2 / 2**n (0.125 for 4 cases), so few cases cannot give a small p, whatever the
difference; the number of cases M2DN wins is reported beside it.

The metrics themselves are ``medmodels.metrics`` (per slice, inside the brain).
This file runs the evaluation and writes its result as one report
(``medmodels.report``: evaluation.json and evaluation.md, never over earlier
ones); the scores of one case are ``medmodels.syn.scoring``'s, the per-pattern
summaries and tests ``medmodels.syn.summaries``', the Markdown
``medmodels.syn.tables``' (made from the result alone). The downstream score
(segmentation Dice on the synthesised full set) needs the segmenter too, so it
lives one layer up, in ``medmodels.downstream``, which adds it to the result
before the result is written: ``evaluate-syn --dice`` writes its files once.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from medmodels.datasets import split_cases
from medmodels.errors import InputError
from medmodels.held_out import TRAINED_ON, trained_on_by_model
from medmodels.modalities import AvailabilityMask
from medmodels.options import samples_problem
from medmodels.progress import progress
from medmodels.report import Report, markdown_text, write_report
from medmodels.stats import CASE_TEST
from medmodels.syn.conditioning import RegionSource
from medmodels.syn.inference import BASELINE_NAME, BUNDLED_NAME, load_synthesizer, synthesizer_file
from medmodels.syn.masks import PATTERNS
from medmodels.syn.scoring import score_input_grid_case, score_working_grid_case
from medmodels.syn.summaries import (
    summarise_calibration,
    summarise_enhancement,
    summarise_input_grid,
    summarise_working_grid,
)
from medmodels.syn.tables import evaluation_body


def parse_patterns(text: str | None) -> list[AvailabilityMask]:
    """Comma-separated availability bits ("1101,1000"); None = the 14 missing patterns."""
    return [AvailabilityMask.from_bits(b.strip()) for b in text.split(",") if b.strip()] if text else list(PATTERNS)


def evaluation_report(result: dict, command: str | None = None) -> Report:
    """``result`` as a report: the JSON is ``result``, the Markdown ``syn.tables.evaluation_body`` of it.

    Args:
        result: what ``evaluate`` returned (with ``"dice"`` when ``medmodels.downstream`` added it).
        command: the command line that made it (``report.command_line``), None from the library.
    """
    cases = ", ".join(result["validation_cases"])
    return Report(
        kind="evaluate-syn",
        title=f"Synthesis per missing pattern: M2DN against the regression U-Net and the mean fill ({cases})",
        data=result,
        body=evaluation_body(result),
        command=command,
    )


def write_result(result: dict, out, command: str | None = None) -> Path:
    """Write ``result`` as ``out`` (its JSON, e.g. OUT/evaluation.json) and the Markdown beside it (.md), all or
    nothing (``report.write_report``); an earlier evaluation there is refused, never replaced.

    Args:
        result: what ``evaluate`` returned.
        out: the JSON file's path; the Markdown gets its name with ``.md``.
        command: the command line, for the JSON's provenance.
    """
    out = Path(out)
    stem = out.name[: -len(".json")] if out.name.endswith(".json") else out.name
    write_report(evaluation_report(result, command), out.parent, stem, "give another --out")
    return out


def _rounded(rows: list[dict]) -> list[dict]:
    """Per-slice scores of working-grid rows as JSON lists (5 decimals, None for NaN)."""
    return [
        {
            k: (
                v
                if not isinstance(v, dict) or k == "calibration"
                else {mk: [None if not np.isfinite(x) else round(float(x), 5) for x in mv] for mk, mv in v.items()}
            )
            for k, v in r.items()
        }
        for r in rows
    ]


def _trained_on(checkpoint, baseline, cases: list[str]) -> dict[str, list[str]]:
    """``held_out.trained_on_by_model`` for "m2dn" and "regression" (``evaluate``'s checkpoints; a baseline of
    None is the bundled regression), over the evaluated ``cases``."""
    refs = {"m2dn": synthesizer_file(checkpoint), "regression": synthesizer_file(baseline or "baseline")}
    return trained_on_by_model(refs, cases, BUNDLED_NAME, BASELINE_NAME)


def _load_models(checkpoint, baseline, device: str, regions: RegionSource | None):
    """The M2DN and regression synthesizers ``evaluate`` compares (see its arguments).

    Raises:
        InputError: the baseline is not a regression, or the two work on other grids.
    """
    syn = load_synthesizer(checkpoint, device, regions)
    reg = load_synthesizer(baseline if baseline is not None else "baseline", device, regions)
    if reg.kind != "regression":
        raise InputError("--baseline must be a regression-baseline checkpoint (trained with --model regression).")
    if syn.spacing != reg.spacing:
        raise InputError(f"M2DN ({syn.spacing}) and the baseline ({reg.spacing}) use different working spacings.")
    return syn, reg


def evaluate(
    data,
    split,
    out=None,
    checkpoint=None,
    baseline=None,
    steps: int | None = None,
    slice_stride: int = 4,
    max_cases: int | None = None,
    patterns: str | None = None,
    device: str = "auto",
    seed: int = 0,
    input_grid: bool = True,
    samples: int = 1,
    regions: RegionSource | None = None,
) -> dict:
    """Run the evaluation on the validation cases of ``split``; writes ``out`` (JSON) and ``out.md``.

    Args:
        data, split: the dataset folder and the split JSON (its validation cases are scored).
        out: the JSON path, the Markdown beside it (``.md``); None: the caller writes (``write_result``).
        checkpoint, baseline: M2DN and regression checkpoints (None: the bundled ones).
        steps: DDIM steps (None: the synthesizer's default).
        slice_stride: every k-th brain slice of the working grid is scored.
        max_cases: score only the first validation cases.
        patterns: comma-separated availability bits (None: all 14).
        device: "auto", "cpu", "cuda", ...
        seed: the samplers' seed.
        input_grid: also synthesise whole volumes and score them on the input grid (brain, tumour, T1c
            enhancement); the slow part.
        samples: M2DN's output is the mean of this many samples (the posterior mean's estimate; ``run --samples``).
        regions: where a synthesizer conditioned on the tumour regions gets their map (``Synthesizer``;
            ``medmodels.region_condition``); unconditioned ones never call it.

    The result's ``TRAINED_ON`` is ``_trained_on``'s. Its ``"dice"`` is None here;
    ``medmodels.downstream.add_downstream_dice`` fills it (and its ``"markdown"``) before it is written.
    """
    t_start = time.time()
    if samples_problem(samples):
        raise InputError(samples_problem(samples))
    syn, reg = _load_models(checkpoint, baseline, device, regions)
    chosen = parse_patterns(patterns)
    cases = split_cases(data, split, "validation", require_label=False)[: max_cases or None]
    rows: list[dict] = []
    input_rows: list[dict] = []
    for c in progress(cases, desc="Evaluating cases"):
        images, label_image = c.load()  # read once: both grids score the same files
        rows += score_working_grid_case(c.name, images, syn, reg, chosen, slice_stride, steps, seed, samples)
        if input_grid:
            models = {"m2dn": syn, "regression": reg}
            input_rows += score_input_grid_case(c.name, images, label_image, models, chosen, steps, seed, samples)
    table = summarise_working_grid(rows, chosen)
    input_table = summarise_input_grid(input_rows, chosen)
    enhancement_table = summarise_enhancement(input_rows, chosen)
    calibration_table = summarise_calibration(rows, chosen)
    result = {
        "validation_cases": [c.name for c in cases],
        "steps": syn._check_steps(steps),
        "samples": samples,
        "slice_stride": slice_stride,
        "spacing": list(syn.spacing),
        "seed": seed,
        "case_test": CASE_TEST,
        "table": table,
        "input_grid": input_table if input_grid else None,
        "enhancement": enhancement_table if input_grid else None,
        "calibration": calibration_table or None,
        "dice": None,
        # what a conditioned model read its map from is added by the command (it knows the segmenter)
        "region_condition": syn.config.get("condition"),
        "per_case": _rounded(rows),
        "per_case_input_grid": input_rows if input_grid else None,
        "wall_s": round(time.time() - t_start, 1),
        "threads": torch.get_num_threads(),
        TRAINED_ON: _trained_on(checkpoint, baseline, [c.name for c in cases]),
    }
    result["markdown"] = markdown_text(evaluation_body(result))  # the .md file's text, kept in the JSON too
    if out is not None:
        write_result(result, out)
    return result
