"""Downstream score of synthesis: does filling in the missing modalities help
the tumour segmenter?

For each missing pattern and validation case, the segmenter (the bundled one unless another is given:
``evaluate-syn --seg-checkpoint``) segments
the case twice on the case's own grid: from the incomplete set (the acquired
modalities only, its missing-modality path) and from the full set with the
missing modalities synthesised by M2DN. Both are scored against the expert
labels with Dice of ET, TC and WT (``medmodels.metrics``), averaged per pattern.

This is pipeline level: it uses both ``medmodels.syn`` and ``medmodels.seg``,
which do not import each other. ``medmodels evaluate-syn --dice`` runs it after
the synthesis evaluation and adds it to that evaluation's result (``"dice"``,
and its table to the Markdown) before the result is written, once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medmodels.checkpoint_ref import BUNDLED
from medmodels.datasets import Case, split_cases
from medmodels.held_out import TRAINED_ON, trained_on_cases
from medmodels.labels import labels_to_regions
from medmodels.metrics import dice_per_channel
from medmodels.modalities import AvailabilityMask
from medmodels.progress import progress
from medmodels.report import markdown_text
from medmodels.seg.inference import Segmenter, load_segmenter, segmenter_file, segmenter_record
from medmodels.syn.conditioning import RegionSource
from medmodels.syn.evaluate import parse_patterns
from medmodels.syn.inference import Synthesizer, load_synthesizer
from medmodels.syn.tables import evaluation_body

ALL_FOUR = AvailabilityMask((True,) * 4)


def case_dice(
    syn: Synthesizer,
    seg: Segmenter,
    case: Case,
    mask: AvailabilityMask,
    steps: int | None,
    seed: int,
    samples: int = 1,
) -> tuple[list[float], list[float]]:
    """Dice (ET, TC, WT) of one case with the modalities of ``mask``: from the
    incomplete set, and from the set completed by synthesis (the mean of ``samples``)."""
    images, labels = case.load()
    truth = labels_to_regions(labels.array)
    given = {k: images[k] for k in mask.keys}
    filled = dict(given)
    for key, (mean, _std) in syn.synthesize(given, mask, steps=steps, samples=samples, seed=seed).items():
        filled[key] = mean
    scores = []
    for imgs, m in ((given, mask), (filled, ALL_FOUR)):
        pred = labels_to_regions(seg.segment(imgs, m, label_convention="2018").array, "2018")
        scores.append(dice_per_channel(pred, truth))
    return scores[0], scores[1]


def downstream_dice(
    syn: Synthesizer,
    seg: Segmenter,
    cases: Sequence[Case],
    patterns: Sequence[AvailabilityMask],
    steps: int | None = None,
    seed: int = 0,
    samples: int = 1,
) -> list[dict]:
    """Per pattern: mean Dice ``[ET, TC, WT]`` over ``cases`` from the incomplete
    set (``"incomplete"``) and the synthesised full set (``"synthesised"``), and
    the same per case (``"per_case"``: cases are the unit of the paired comparison)."""
    out = []
    for mask in patterns:
        incomplete, synthesised, per_case = [], [], []
        for case in progress(cases, desc=f"Dice {mask.label}"):
            inc, full = case_dice(syn, seg, case, mask, steps, seed, samples)
            incomplete.append(inc)
            synthesised.append(full)
            per_case.append({"case": case.name, "incomplete": inc, "synthesised": full})
        out.append(
            {
                "pattern": mask.bits,
                "available": mask.label,
                "incomplete": np.mean(incomplete, 0).tolist(),
                "synthesised": np.mean(synthesised, 0).tolist(),
                "cases": len(cases),
                "per_case": per_case,
            }
        )
    return out


def add_downstream_dice(
    result: dict,
    data,
    split,
    checkpoint=None,
    segmenter=None,
    steps: int | None = None,
    max_cases: int | None = None,
    patterns: str | None = None,
    device: str = "auto",
    seed: int = 0,
    samples: int = 1,
    regions: RegionSource | None = None,
) -> dict:
    """``result`` of ``medmodels.syn.evaluate.evaluate`` with the downstream Dice added (``"dice"``, and its
    table in ``"markdown"``); writes nothing: ``syn.evaluate.write_result`` writes the whole result after.
    The segmenter that ran is recorded (``"dice_segmenter"``: its file and SHA-256), and the evaluated
    cases it trained on join the result's ``held_out.TRAINED_ON`` as ``"segmenter"``.

    Args:
        result: what ``evaluate`` returned for the same data, split and cases.
        data, split, max_cases: as given to ``evaluate`` (the validation cases, which need labels here).
        checkpoint: the M2DN checkpoint (None = bundled).
        segmenter: the segmentation checkpoint (None or "bundled" = bundled ShaSpec, "baseline", or a path).
        steps, seed, device, samples: sampler steps, random seed, device and
            M2DN samples averaged, as for ``evaluate``.
        patterns: comma-separated availability bits (None = the 14 missing patterns).
        regions: a conditioned synthesizer's region source, as for ``evaluate``.
    """
    cases = split_cases(data, split, "validation", require_label=True)[: max_cases or None]
    syn = load_synthesizer(checkpoint, device, regions)
    segmenter = BUNDLED if segmenter is None else segmenter  # ShaSpec: every downstream figure so far used it
    seg = load_segmenter(segmenter, device)
    seg_path = segmenter_file(segmenter)
    result = {
        **result,
        "dice": downstream_dice(syn, seg, cases, parse_patterns(patterns), steps, seed, samples),
        # load_segmenter checked the file against its record's SHA-256, so the record's is the file's
        "dice_segmenter": segmenter_record(segmenter),
        TRAINED_ON: {
            **(result.get(TRAINED_ON) or {}),
            "segmenter": trained_on_cases(seg_path, [c.name for c in cases]),
        },
    }
    result["markdown"] = markdown_text(evaluation_body(result))
    return result
