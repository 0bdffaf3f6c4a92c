"""The pipeline with the bundled weights: one case in memory -> files with a manifest."""

import json

import numpy as np
import pytest
from medmodels.cli import main
from medmodels.contract import MANIFEST_NAME as MANIFEST
from medmodels.errors import InputError
from medmodels.io import read_image
from medmodels.options import RunOptions
from medmodels.pipeline import run_case, write_outputs
from medmodels.resampling import resample_to_spacing

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def case(small_phantom):
    return {k: v for k, v in small_phantom.images.items() if k != "t1c"}


@pytest.fixture(scope="module")
def result(case):
    return run_case(case, RunOptions(steps=2, samples=2, seed=1, device="cpu"))


def test_missing_modality_synthesised_on_the_reference_grid(result, case):
    assert list(result.synthesised) == ["t1c"] and list(result.uncertainty) == ["t1c"]
    assert result.reference == "flair"
    for image in (result.synthesised["t1c"], result.uncertainty["t1c"], result.segmentation):
        assert image.same_grid(case["flair"])
    brain = case["flair"].array != 0
    assert np.isfinite(result.synthesised["t1c"].array).all()
    assert result.synthesised["t1c"].array[brain].mean() > 0 and (result.uncertainty["t1c"].array >= 0).all()
    assert set(np.unique(result.segmentation.array)) <= {0, 1, 2, 4}


def test_inputs_are_not_modified(case, small_phantom):
    for k, v in case.items():
        np.testing.assert_array_equal(v.array, small_phantom.images[k].array)


def test_inputs_on_other_grids_are_brought_together(case):
    moved = dict(case)
    moved["t2"] = resample_to_spacing(case["t2"], (6.0, 6.0, 6.0))
    out = run_case(moved, RunOptions(synthesize=False, device="cpu"))
    assert out.segmentation.same_grid(case["flair"]) and any("T2" in n for n in out.notes)


def test_same_seed_same_volume(case):
    opts = RunOptions(segment=False, steps=2, seed=5, device="cpu")
    a, b = run_case(case, opts), run_case(case, opts)
    np.testing.assert_array_equal(a.synthesised["t1c"].array, b.synthesised["t1c"].array)


def test_outputs_written_whole_with_manifest_last(result, tmp_path):
    options = RunOptions(steps=2, samples=2)
    manifest = json.loads(write_outputs(result, tmp_path, options).read_text(encoding="utf-8"))
    assert manifest["synthesised"] == {"t1c": "t1c.nii.gz"} and manifest["segmentation"] == "segmentation.nii.gz"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["t1c.nii.gz", "t1c_std.nii.gz", "segmentation.nii.gz", MANIFEST]
    )
    assert read_image(tmp_path / "t1c.nii.gz").same_grid(result.synthesised["t1c"])
    with pytest.raises(InputError, match="already holds a finished run"):
        write_outputs(result, tmp_path, options)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(synthesize=False, segment=False), "Nothing to run"),
        (dict(synthesize=False, segment_on="all"), "needs synthesis"),
        (dict(samples=0), "at least 1"),
    ],
)
def test_bad_options(case, kwargs, match):
    with pytest.raises(InputError, match=match):
        run_case(case, RunOptions(**kwargs))


def test_run_command_on_a_folder_of_named_volumes(tmp_path, capsys):
    assert main(["phantom", str(tmp_path / "in"), "--size", "40x40x32", "--naming", "2023", "--seed", "2"]) == 0
    folder = tmp_path / "in" / "Phantom_002"
    (folder / "Phantom_002-t1c.nii.gz").unlink()
    (folder / "Phantom_002-seg.nii.gz").unlink()
    assert (
        main(
            ["run", str(folder), "--out", str(tmp_path / "out"), "--steps", "2", "--labels", "2023", "--device", "cpu"]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["synthesised"] == {"t1c": "t1c.nii.gz"} and manifest["label_convention"] == "2023"
    assert 4 not in np.unique(read_image(tmp_path / "out" / "segmentation.nii.gz").array)


def test_demo_command_reports_against_the_truth(tmp_path, capsys):
    assert main(["demo", str(tmp_path), "--size", "48x48x32", "--steps", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Synthesised T1c: PSNR" in out and "Dice WT" in out
    assert (tmp_path / "output" / MANIFEST).exists()
