"""Which evaluated cases a checkpoint trained on (``medmodels.held_out``), from its record alone."""

import json

from medmodels.held_out import TRAINED_ON, not_held_out, not_held_out_models, trained_on_cases

SHA = "0" * 64


def record_beside(tmp_path, name: str, record: dict):
    """A checkpoint path whose JSON record is ``record`` (the record is all ``trained_on_cases`` reads)."""
    path = tmp_path / f"{name}.pt"
    path.with_suffix(".json").write_text(json.dumps({"file": path.name, "sha256": SHA, **record}), encoding="utf-8")
    return path


def test_the_evaluated_cases_a_record_lists_as_training_cases_sorted(tmp_path):
    ckpt = record_beside(tmp_path, "m", {"training": {"training_cases": ["B", "A", "C"], "validation_cases": ["X"]}})
    assert trained_on_cases(ckpt, ["X", "C", "A"]) == ["A", "C"]
    assert trained_on_cases(ckpt, ["X", "Y"]) == []  # held out


def test_a_record_without_the_list_names_no_case(tmp_path):
    older = record_beside(tmp_path, "older", {"training": {"iterations": 5}})
    imported = record_beside(tmp_path, "imported", {"imported_from": "elsewhere"})
    # a lineage entry's training_cases is a note (a string), not the checkpoint's list
    lineage = record_beside(tmp_path, "lineage", {"training": {"lineage": [{"training_cases": "A, B (11 cases)"}]}})
    for ckpt in (older, imported, lineage):
        assert trained_on_cases(ckpt, ["A", "B"]) == []


def test_cases_an_earlier_stage_trained_on_are_not_held_out(tmp_path):
    # continued on A, B from weights that had also seen C: C is not held out either
    stages = [{"sha256": SHA, "training_cases": ["C", "A"]}, {"sha256": SHA, "training_cases": "D (a note)"}]
    ckpt = record_beside(tmp_path, "m", {"training": {"training_cases": ["A", "B"], "lineage": stages}})
    assert trained_on_cases(ckpt, ["C", "B", "D", "E"]) == ["B", "C"]


def test_the_sentence_and_the_flagged_models_of_a_result():
    sentence = not_held_out("ShaSpec", ["A", "B"], 4)
    assert sentence.startswith("ShaSpec was trained on 2 of the 4 evaluated case(s) (A, B)") and "held-out" in sentence
    assert not_held_out_models({TRAINED_ON: {"ShaSpec": ["A"], "Baseline": []}}) == {"ShaSpec": ["A"]}
    assert not_held_out_models({"rows": []}) == {}  # results from before the check
