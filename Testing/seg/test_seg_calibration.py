"""The probability threshold: chosen on validation cases (``evaluate-seg --calibrate``), recorded in the checkpoint,
used by inference, overridable in ``evaluate-seg``."""

import json

import numpy as np
import pytest
from medmodels.cli import main
from medmodels.datasets import discover_cases
from medmodels.errors import InputError
from medmodels.labels import labels_to_regions, regions_to_labels
from medmodels.modalities import AvailabilityMask
from medmodels.seg.calibration import CANDIDATES, calibrate, choose, edge_note, leave_one_case_out
from medmodels.seg.inference import Segmenter, load_segmenter
from medmodels.weights import read_record, sha256_of


@pytest.fixture(scope="module")
def tiny_shaspec(tiny_seg_models):
    return tiny_seg_models["shaspec"]


class UnsureSegmenter(Segmenter):
    """A segmenter whose probabilities are the truth's regions times ``level``: right everywhere, but never
    sure. Thresholds at or below ``level`` segment every case perfectly; above it, nothing is found."""

    def __init__(self, base: Segmenter, cases: dict, level: float):
        super().__init__(base.model, base.config, base.device)
        self.cases, self.level = cases, level  # {name: (images, labels)}

    def probabilities(self, images, spacing_xyz, mask, chain=None):
        key = next(iter(images))
        (truth,) = [lab for imgs, lab in self.cases.values() if np.array_equal(imgs[key].array, images[key].array)]
        return labels_to_regions(truth.array).astype(np.float32) * self.level


def test_choose_takes_the_best_mean_and_breaks_ties_towards_the_default():
    scores = {0.2: {"a": 0.9, "b": 0.5}, 0.3: {"a": 0.8, "b": 0.7}, 0.5: {"a": 0.6, "b": 0.6}}
    assert choose(scores) == 0.3  # means 0.70, 0.75, 0.60
    assert choose(scores, ["a"]) == 0.2
    assert choose({0.2: {"a": 0.5}, 0.4: {"a": 0.5}, 0.5: {"a": 0.5}}) == 0.5
    assert choose({0.2: {"a": 0.5}, 0.4: {"a": 0.5}, 0.5: {"a": 0.4}}) == 0.4


def test_leaving_one_case_out_chooses_on_the_other_cases():
    # a prefers 0.2; b and c prefer 0.5: a's own preference never picks a's threshold
    scores = {
        0.2: {"a": 0.9, "b": 0.5, "c": 0.5},
        0.5: {"a": 0.6, "b": 0.7, "c": 0.7},
    }
    loo = {r["case"]: r for r in leave_one_case_out(scores)}
    assert loo["a"]["threshold_chosen_on_the_others"] == 0.5 and loo["a"]["score"] == 0.6
    assert loo["b"]["threshold_chosen_on_the_others"] == 0.2  # a + c: 0.70 at 0.2 against 0.65 at 0.5
    assert loo["b"]["score"] == 0.5 and loo["b"]["score_at_default"] == 0.7
    assert loo["a"]["score_at_default"] == 0.6
    with pytest.raises(InputError, match="at least two cases"):
        leave_one_case_out({0.5: {"a": 0.6}})


def test_calibration_finds_the_threshold_an_unsure_model_needs(tiny_shaspec, phantom_dataset):
    found = discover_cases(phantom_dataset)
    names = sorted(found)[:2]
    seg = UnsureSegmenter(load_segmenter(tiny_shaspec, device="cpu"), {n: found[n].load() for n in names}, level=0.3)
    subsets = [AvailabilityMask.from_bits(b) for b in ("1000", "1111")]
    result = calibrate(seg, {n: found[n] for n in names}, subsets, thresholds=(0.2, 0.3, 0.4))
    assert result["candidates"] == [0.2, 0.3, 0.4, 0.5]  # the default is always tried
    assert result["threshold"] == 0.3  # 0.2 and 0.3 both segment perfectly; 0.3 is nearer the default
    assert result["mean_score"]["0.3"] == pytest.approx(1.0) and result["mean_score"]["0.5"] < 0.5
    assert {r["threshold_chosen_on_the_others"] for r in result["leave_one_case_out"]} == {0.3}
    assert len(result["rows"]) == 2 * 2 * 4
    assert result["edge_note"] is None  # 0.3 is inside the candidates' range
    # the best candidate at the range's edge: the choice is the range's, and the result says so
    at_edge = calibrate(seg, {n: found[n] for n in names}, subsets[:1], thresholds=(0.3, 0.4))
    assert at_edge["threshold"] == 0.3 and "lowest candidate" in at_edge["edge_note"]


def test_edge_note_names_the_side_to_widen():
    assert 0.7 in CANDIDATES and 0.1 in CANDIDATES  # the default range reaches above 0.5
    assert "rise above it" in edge_note(0.7, CANDIDATES) and "--thresholds reaching above 0.7" in edge_note(
        0.7, CANDIDATES
    )
    assert "rise below it" in edge_note(0.1, CANDIDATES)
    assert edge_note(0.5, CANDIDATES) is None and edge_note(0.5, [0.5]) is None


def test_segmenter_thresholds_at_its_checkpoint_s_value_unless_told_otherwise(tiny_shaspec, small_phantom):
    base = load_segmenter(tiny_shaspec, device="cpu")
    assert base.threshold == 0.5  # no threshold in the config
    assert load_segmenter(tiny_shaspec, device="cpu", threshold=0.2).threshold == 0.2
    for bad in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(InputError, match="between 0 and 1"):
            load_segmenter(tiny_shaspec, device="cpu", threshold=bad)
    images = small_phantom.images
    mask = AvailabilityMask.from_keys(list(images))
    probs = base.probabilities(images, None, mask)
    got = {}
    for t in (0.3, 0.6):
        seg = Segmenter(base.model, {**base.config, "threshold": t}, base.device)
        got[t] = seg.segment(images, cleanup=False).array
        np.testing.assert_array_equal(got[t], regions_to_labels(probs >= t, "2018"))
    assert not np.array_equal(got[0.3], got[0.6])


def test_evaluate_seg_calibrate_writes_its_report_and_a_calibrated_checkpoint(
    tiny_shaspec, phantom_dataset, tmp_path, capsys
):
    argv = [
        "evaluate-seg",
        "--calibrate",
        str(phantom_dataset),
        "--cases",
        "Phantom_000",
        "Phantom_001",
        "--subsets",
        "1111,0011",
    ]
    argv += ["--checkpoint", str(tiny_shaspec), "--thresholds", "0.3,0.4", "--device", "cpu", "--threads", "1"]
    written = tmp_path / "calibrated" / "model.pt"
    assert main([*argv, "--out", str(tmp_path / "cal"), "--write", str(written)]) == 0
    result = json.loads((tmp_path / "cal" / "calibration.json").read_text(encoding="utf-8"))
    assert result["candidates"] == [0.3, 0.4, 0.5] and result["cases"] == ["Phantom_000", "Phantom_001"]
    md = (tmp_path / "cal" / "calibration.md").read_text(encoding="utf-8")
    assert f"**Chosen threshold: {result['threshold']:g}**" in md and "Leaving one case out" in md
    assert (tmp_path / "cal" / "calibration.csv").exists()
    # the copy: the same weights, the threshold in its config, the source's record plus the calibration
    record, source = read_record(written), read_record(tiny_shaspec)
    assert record["sha256"] == sha256_of(written) != source["sha256"]
    assert record["config"]["threshold"] == result["threshold"]
    assert record["training"] == source["training"]
    assert record["calibration"]["cases"] == ["Phantom_000", "Phantom_001"]
    assert record["calibration"]["calibrated_from_sha256"] == source["sha256"]
    assert load_segmenter(written, device="cpu").threshold == result["threshold"]
    # the tiny model trained on every phantom case, the calibration's among them: the run says so
    assert "note: the checkpoint was trained on Phantom_000, Phantom_001: calibrate on cases it never saw" in (
        capsys.readouterr().err
    )
    # evaluate-seg uses each checkpoint's own threshold, or the one it is given, and says which
    ev = ["evaluate-seg", str(phantom_dataset), "--cases", "Phantom_002", "--subsets", "1111", "--no-hd95"]
    ev += ["--checkpoint", str(written), "--name", "Calibrated", "--checkpoint", str(tiny_shaspec), "--name", "Plain"]
    ev += ["--device", "cpu", "--threads", "1"]
    assert main([*ev, "--out", str(tmp_path / "ev")]) == 0
    saved = json.loads((tmp_path / "ev" / "results.json").read_text(encoding="utf-8"))
    assert saved["thresholds"] == {"Calibrated": result["threshold"], "Plain": 0.5}
    assert main([*ev, "--threshold", "0.35", "--out", str(tmp_path / "ev2")]) == 0
    saved = json.loads((tmp_path / "ev2" / "results.json").read_text(encoding="utf-8"))
    assert saved["thresholds"] == {"Calibrated": 0.35, "Plain": 0.35}
    assert "Probability thresholds: Calibrated 0.35, Plain 0.35." in (tmp_path / "ev2" / "results.md").read_text(
        encoding="utf-8"
    )
    assert saved["threshold_chosen_on_evaluated_cases"] == {}  # the given threshold replaced the calibrated one
    # on a case the threshold was chosen on, the figures say so
    capsys.readouterr()
    ev[3] = "Phantom_000"
    assert main([*ev, "--out", str(tmp_path / "ev3")]) == 0
    saved = json.loads((tmp_path / "ev3" / "results.json").read_text(encoding="utf-8"))
    assert saved["threshold_chosen_on_evaluated_cases"] == {"Calibrated": ["Phantom_000"], "Plain": []}
    md = (tmp_path / "ev3" / "results.md").read_text(encoding="utf-8")
    assert "**Threshold chosen on these cases**: Calibrated's probability threshold was chosen on 1 of the 1" in md
    assert "note: Calibrated's probability threshold was chosen on Phantom_000" in capsys.readouterr().err


def test_evaluate_seg_calibrate_refuses_bad_requests_before_any_work(tiny_shaspec, phantom_dataset, tmp_path, capsys):
    base = [
        "evaluate-seg",
        "--calibrate",
        str(phantom_dataset),
        "--checkpoint",
        str(tiny_shaspec),
        "--out",
        str(tmp_path / "c"),
    ]
    assert main(base) == 2  # no cases named: never calibrate on every case (the training cases among them)
    assert "--split" in capsys.readouterr().err
    assert main([*base, "--cases", "Phantom_000", "--thresholds", "0.3,x"]) == 2
    assert "comma-separated" in capsys.readouterr().err
    assert main([*base, "--cases", "Phantom_000", "--thresholds", "1.5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    for extra in (["--threshold", "0.3"], ["--mirror", "x"], ["--checkpoint", str(tiny_shaspec)], ["--jobs", "2"]):
        assert main([*base, "--cases", "Phantom_000", *extra]) == 2
        assert "one checkpoint on its own" in capsys.readouterr().err
    plain = [a for a in base if a != "--calibrate"]
    assert main([*plain, "--cases", "Phantom_000", "--write", str(tmp_path / "w.pt")]) == 2  # --write without it
    assert "add --calibrate" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "w.pt").exists()


def test_the_pipeline_uses_the_calibrated_threshold_only_on_studies_it_did_not_prepare(
    tiny_shaspec, small_phantom, tmp_path
):
    """A checkpoint's threshold was chosen on BraTS-style cases: the pipeline uses it on such input, and
    segments a study it registered, resampled or brain-extracted at 0.5, with a note that says so."""
    from medmodels.options import RunOptions
    from medmodels.pipeline import PREPARED_THRESHOLD_NOTE, prepared_study_threshold, run_case
    from medmodels.resampling import resample_to_spacing
    from medmodels.seg.calibration import write_calibrated

    assert prepared_study_threshold(0.2, changed=False) == 0.2
    assert prepared_study_threshold(0.2, changed=True) == 0.5
    calibrated = tmp_path / "calibrated.pt"
    write_calibrated(tiny_shaspec, calibrated, {"threshold": 0.3, "cases": ["Phantom_000"]})
    options = RunOptions(synthesize=False, device="cpu", seg_checkpoint=str(calibrated))
    images = dict(small_phantom.images)
    brats_style = run_case(images, options)
    assert brats_style.preparation["steps"] == [] and not any("probability threshold" in n for n in brats_style.notes)
    seg = load_segmenter(calibrated, device="cpu")
    np.testing.assert_array_equal(brats_style.segmentation.array, seg.segment(images).array)
    images["t2"] = resample_to_spacing(images["t2"], (7.5, 7.5, 7.2))  # a series on its own, coarser grid
    prepared = run_case(images, options)
    assert prepared.preparation["steps"]  # brought onto the reference grid
    assert PREPARED_THRESHOLD_NOTE.format(calibrated=0.3, used=0.5) in prepared.notes
