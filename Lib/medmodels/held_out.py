"""Whether an evaluation's cases are held out from a checkpoint's training.

A checkpoint's record lists the cases it trained on (``training.training_cases``, written by
``train-seg``/``train-syn`` and kept by ``export``). Figures measured on those cases are not
held-out figures, and nothing in them shows it: ``evaluate-seg`` and ``evaluate-syn`` ask
``trained_on_cases`` for every checkpoint they evaluate and say so (the result's JSON, a line
in its Markdown, a note on stderr) in the words of ``not_held_out``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from medmodels.weights import read_record, resolve_checkpoint

#: The entry of an evaluation's result (results.json, evaluation.json): per model, the evaluated cases
#: its checkpoint trained on (empty: held out).
TRAINED_ON = "trained_on_evaluated_cases"
#: The entry of ``evaluate-seg``'s result: per model, the evaluated cases its checkpoint's probability
#: threshold was chosen on (``evaluate-seg --calibrate`` records them as ``calibration.cases``; empty: none).
CALIBRATED_ON = "threshold_chosen_on_evaluated_cases"
#: What the user can do about figures that are not held out (the start of each command's ``note:`` fix).
FIX = "evaluate on cases these weights never saw, or pass weights trained on the split's training cases only"


def trained_on_cases(checkpoint: str | os.PathLike, cases: Sequence[str]) -> list[str]:
    """The cases among ``cases`` that ``checkpoint`` was trained on, sorted.

    Args:
        checkpoint: the ``.pt`` file (its JSON record beside it is read; ``weights.read_record``).
        cases: the names of the cases an evaluation scores.

    Returns:
        The sorted names in both ``cases`` and the record's ``training.training_cases`` or the
        ``training_cases`` list of any stage of ``training.lineage`` (the runs it was continued from:
        weights once trained on a case are not held out on it); empty when the record has no such
        list (records from before it existed, imported weights). A stage's ``training_cases``
        string (written by hand in older records) is a note, not a list, and is not read.

    Raises:
        CheckpointError: no record beside ``checkpoint``, or one that is not a checkpoint record.
    """
    training = read_record(checkpoint).get("training")
    stages = [training, *(training.get("lineage") or [])] if isinstance(training, dict) else []
    return sorted({name for stage in stages for name in _listed(stage, "training_cases", cases)})


def calibrated_on_cases(checkpoint: str | os.PathLike, cases: Sequence[str]) -> list[str]:
    """The cases among ``cases`` that ``checkpoint``'s probability threshold was chosen on (its record's
    ``calibration.cases``, written by ``evaluate-seg --calibrate``), sorted; empty when it records none."""
    return _listed(read_record(checkpoint).get("calibration"), "cases", cases)


def _listed(part, key: str, cases: Sequence[str]) -> list[str]:
    """The names in both ``cases`` and ``part[key]`` (a list), sorted; empty when ``part`` is not a dict
    or the entry is absent or not a list (a note)."""
    listed = part.get(key) if isinstance(part, dict) else None
    if not isinstance(listed, list):
        return []
    return sorted(set(cases) & {str(name) for name in listed})


def trained_on_by_model(
    refs: Mapping[str, str | os.PathLike | None],
    cases: Sequence[str],
    bundled: str,
    baseline: str,
) -> dict[str, list[str]]:
    """Per model, the cases among ``cases`` its checkpoint trained on (``trained_on_cases``; empty: held out).

    Args:
        refs: a model's name in the evaluation -> its checkpoint reference as the loaders take it (None or
            "bundled", "baseline", or a path; ``weights.resolve_checkpoint``; segmentation passes the
            files ``seg.inference.segmenter_file`` resolved, its "ensemble" and default included).
        cases: the names of the evaluated cases.
        bundled, baseline: the family's bundled checkpoint names the references stand for.
    """
    return _by_model(trained_on_cases, refs, cases, bundled, baseline)


def calibrated_on_by_model(
    refs: Mapping[str, str | os.PathLike | None],
    cases: Sequence[str],
    bundled: str,
    baseline: str,
) -> dict[str, list[str]]:
    """Per model, the cases among ``cases`` its checkpoint's threshold was chosen on (``calibrated_on_cases``);
    the arguments as ``trained_on_by_model``."""
    return _by_model(calibrated_on_cases, refs, cases, bundled, baseline)


def _by_model(listed_cases, refs: Mapping, cases: Sequence[str], bundled: str, baseline: str) -> dict:
    """``{name: listed_cases(checkpoint, cases)}`` for each model's resolved checkpoint reference."""
    return {name: listed_cases(resolve_checkpoint(ref, bundled, baseline), cases) for name, ref in refs.items()}


def not_held_out(model: str, trained: Sequence[str], evaluated: int) -> str:
    """The sentence that says a model's figures are not held out, e.g. "ShaSpec was trained on 2 of
    the 4 evaluated cases (A, B): its figures on them are not held-out figures."

    Args:
        model: the model's name in the evaluation (a results column, "m2dn", "segmenter", ...).
        trained: the evaluated cases it trained on (``trained_on_cases``), not empty.
        evaluated: how many cases the evaluation scored.
    """
    return (
        f"{model} was trained on {len(trained)} of the {evaluated} evaluated case(s) ({', '.join(trained)}): "
        "its figures on them are not held-out figures"
    )


def not_held_out_models(result: dict) -> dict[str, list[str]]:
    """The models of an evaluation's result that trained on some of its cases, with those cases.

    Args:
        result: an evaluation's result or its JSON (``evaluate-seg``'s results.json, ``evaluate-syn``'s
            evaluation.json) with its ``TRAINED_ON`` entry; results from before the check existed
            have none, and so no model here.
    """
    return {m: list(cases) for m, cases in (result.get(TRAINED_ON) or {}).items() if cases}


def not_held_out_lines(result: dict, evaluated: int) -> list[str]:
    """The Markdown lines an evaluation's report ends its tables with: one per model that is not held out.

    Args:
        result: the evaluation's result, with its ``TRAINED_ON`` entry (``not_held_out_models``).
        evaluated: how many cases the evaluation scored.
    """
    lines = [
        f"**Not held out**: {not_held_out(m, trained, evaluated)}."
        for m, trained in not_held_out_models(result).items()
    ]
    lines += [
        f"**Threshold chosen on these cases**: {m}'s probability threshold was chosen on {len(chosen)} of the "
        f"{evaluated} evaluated case(s) ({', '.join(chosen)}) by evaluate-seg --calibrate: its figures on them include that "
        "choice (evaluate-seg --calibrate's leave-one-case-out figures do not)."
        for m, chosen in (result.get(CALIBRATED_ON) or {}).items()
        if chosen
    ]
    return lines
