"""Issue 23, warnings: a file that the input resolver passes over is named, and
why (a modality left out is synthesised instead); BrainLes names are read; the
labels follow the BraTS 2023 naming of the inputs unless --labels says
otherwise. All data are generated (``medmodels.phantom``)."""

from __future__ import annotations

import json
import os

import numpy as np
from medmodels.cli import main
from medmodels.datasets import resolve_inputs, skipped_inputs
from medmodels.io import read_image, write_image
from medmodels.phantom import case_file_names, write_phantom_case


def test_brainles_fla_bet_names_are_read_as_flair(small_phantom, tmp_path):
    folder = tmp_path / "BraTS-GLI-00001-000"
    names = {"flair": "fla_bet.nii.gz", "t1": "t1_bet.nii.gz", "t1c": "t1c_bet.nii.gz", "t2": "t2_bet.nii.gz"}
    for key, name in names.items():
        write_image(small_phantom.images[key], folder / f"BraTS-GLI-00001-000_{name}")
    [(_, files)] = resolve_inputs(folder)
    assert {k: p.name for k, p in files.items()} == {k: f"BraTS-GLI-00001-000_{n}" for k, n in names.items()}


def test_every_file_passed_over_is_named_with_the_reason(small_phantom, tmp_path):
    folder = tmp_path / "p"
    for key in ("flair", "t1", "t1c", "t2"):
        write_image(small_phantom.images[key], folder / f"{key}.nii.gz")
    write_image(small_phantom.images["t2"], folder / "pd_axial.nii.gz")  # a volume named after no modality
    write_image(small_phantom.labels, folder / "tumour_seg.nii.gz")  # a label map: left out, as expected
    (folder / "notes.txt").write_text("not a volume", encoding="utf-8")
    # a stale manifest of an earlier run, beside the acquired T1c
    (folder / "manifest.json").write_text(json.dumps({"synthesised": {"t1c": "t1c.nii.gz"}}), encoding="utf-8")
    (folder / "t2.nii.gz").unlink()
    os.symlink(folder / "t2.nii.gz", folder / "t2.nii.gz")  # a link loop where T2 was
    cases = resolve_inputs(folder)
    assert list(cases[0][1]) == ["flair", "t1"]  # T1c and T2 would be synthesised
    notes = skipped_inputs(cases)
    assert len(notes) == 3, notes
    pd, t1c, t2 = notes
    assert pd.startswith(f"'{folder / 'pd_axial.nii.gz'}' was left out: its name says no modality")
    assert t1c.startswith(f"'{folder / 't1c.nii.gz'}' was left out: the folder's manifest.json lists it")
    assert "move manifest.json out of the folder" in t1c
    assert t2.startswith(f"'{folder / 't2.nii.gz'}' was left out: it is a broken link or a link loop")


def test_run_names_passed_over_files_and_follows_the_2023_label_naming(tmp_path, capsys):
    folder = write_phantom_case(tmp_path / "in", "Case1", (40, 40, 32), 2, "2023")
    names = case_file_names("Case1", "2023")
    (folder / names["seg"]).unlink()
    (folder / names["t1c"]).unlink()
    os.symlink(folder / names["t1c"], folder / names["t1c"])  # a link loop: T1c left out
    out = tmp_path / "out"
    argv = ["segment", str(folder), "--out", str(out), "--device", "cpu", "--threads", "1"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"WARNING: '{folder / names['t1c']}' was left out: it is a broken link or a link loop" in err
    assert "note: the inputs are named in BraTS 2023 style, so the labels are too (ET = 3)" in err
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["label_convention"] == "2023"
    values = np.unique(read_image(out / "segmentation.nii.gz").array)
    assert 4 not in values and 3 in values, values
