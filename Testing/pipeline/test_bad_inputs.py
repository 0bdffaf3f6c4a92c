"""Issue 12, "Nothing lost, nothing silent": every bad input of the issue's
eleven groups ends with one ``ERROR:`` line and exit code 2 (never a
traceback), no command replaces a file it did not create, writes are verified,
an output folder is claimed by one run, and a study that is not skull-stripped
is reported. All data are generated (``medmodels.phantom``)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from cli_checks import RT, fails
from medmodels import io as mio
from medmodels.atomic import LOCK_NAME, claimed_folder
from medmodels.brain_mask import brain_mask
from medmodels.cli import main
from medmodels.contract import MANIFEST_NAME as MANIFEST
from medmodels.datasets import resolve_inputs
from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.inspection import looks_skull_stripped
from medmodels.io import check_nifti, read_image, write_image
from medmodels.modalities import AvailabilityMask
from medmodels.options import RunOptions
from medmodels.phantom import case_file_names, make_phantom, write_phantom_case
from medmodels.pipeline import PipelineResult, run_case, run_cases, write_outputs
from medmodels.seg.evaluate import METRICS, merge_results, read_included, summarise, write_results

ROOT = Path(__file__).resolve().parents[2]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture()
def named_case(small_phantom, tmp_path):
    """A folder with flair.nii.gz, t1.nii.gz, t1c.nii.gz, t2.nii.gz (a user's acquired scans)."""
    folder = tmp_path / "case"
    for key, image in small_phantom.images.items():
        write_image(image, folder / f"{key}.nii.gz")
    return folder


def _private_mount(script: str) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) in a private mount namespace (a tmpfs of our own); skip where that is not allowed."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("private mounts are not allowed here (needs root or user namespaces)")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, encoding="utf-8", env=env, timeout=300
    )


# -- 1. outputs never replace a file the run did not create ---------------------------------


def test_output_folder_holding_the_inputs_is_refused_and_nothing_changes(named_case, capsys):
    before = digests(named_case)
    line = fails(
        ["run", "--t1", named_case / "t1.nii.gz", "--t2", named_case / "t2.nii.gz", "--out", named_case, *RT],
        capsys,
        "flair.nii.gz",
        "t1c.nii.gz",
        "--out",
    )
    assert "never replaces" in line
    assert digests(named_case) == before


def test_a_users_segmentation_in_the_output_folder_is_refused(small_phantom, tmp_path, capsys):
    case = write_phantom_case(tmp_path, "Case1", (24, 24, 16), 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "segmentation.nii.gz").write_bytes(b"my own work")
    fails(["segment", case, "--out", out, *RT], capsys, "segmentation.nii.gz")
    assert (out / "segmentation.nii.gz").read_bytes() == b"my own work"
    assert sorted(p.name for p in out.iterdir()) == ["segmentation.nii.gz"]  # no lock, no partial folder left


def test_write_outputs_never_replaces_an_earlier_file(small_phantom, tmp_path):
    result = PipelineResult("flair", {"t1c": small_phantom.images["t1c"]}, segmentation=small_phantom.labels)
    (tmp_path / "t1c.nii.gz").write_bytes(b"an acquired scan")
    with pytest.raises(InputError, match="t1c.nii.gz"):
        write_outputs(result, tmp_path, RunOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t1c.nii.gz"]
    assert (tmp_path / "t1c.nii.gz").read_bytes() == b"an acquired scan"


# -- 2. writes are verified; a failing disk is an ERROR, never a truncated file -------------


def test_a_short_write_is_caught_before_the_rename(small_phantom, tmp_path, monkeypatch):
    real = sitk.WriteImage

    def short_write(image, path, *args, **kwargs):  # what a full disk did: the writer returned, the file is cut
        real(image, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 3])

    monkeypatch.setattr(mio.sitk, "WriteImage", short_write)
    with pytest.raises(InputError, match="Could not write .*t1.nii.gz"):
        write_image(small_phantom.images["t1"], tmp_path / "t1.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_an_oserror_while_writing_is_an_input_error(small_phantom, tmp_path, monkeypatch):
    def full(image, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mio.sitk, "WriteImage", full)
    result = PipelineResult("flair", {"t1c": small_phantom.images["t1c"]})
    with pytest.raises(InputError, match="No space left"):
        write_outputs(result, tmp_path / "out", RunOptions())
    assert list((tmp_path / "out").iterdir()) == []


def test_a_really_full_disk(tmp_path):
    script = (
        "mount -t tmpfs -o size=64k tmpfs /mnt && "
        f'{sys.executable} -c "import numpy as np; from medmodels.image import Image; from medmodels.io import '
        "write_image; write_image(Image(np.random.default_rng(0).random((64, 64, 64), np.float32)), "
        "'/mnt/big.nii.gz')\"; echo rc=$?; ls -a /mnt"
    )
    done = _private_mount(script)
    assert "InputError: Could not write '/mnt/big.nii.gz'" in done.stderr, done.stderr
    assert "rc=1" in done.stdout and "big.nii.gz" not in done.stdout and ".partial" not in done.stdout


# -- 3. one run per output folder -------------------------------------------------------------


def test_a_claimed_folder_is_refused_to_a_second_run(tmp_path, small_phantom):
    holding, release = threading.Event(), threading.Event()

    def first():
        with claimed_folder(tmp_path / "out"):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=first)
    thread.start()
    holding.wait(30)
    try:
        with pytest.raises(InputError, match="in use by process"):
            run_cases([("c", {"t1": "unused.nii.gz"})], tmp_path / "out", RunOptions(segment=False))
        with pytest.raises(InputError, match="in use"):
            write_outputs(PipelineResult("t1"), tmp_path / "out", RunOptions())
    finally:
        release.set()
        thread.join()
    assert not (tmp_path / "out" / LOCK_NAME).exists()


def test_a_lock_of_a_killed_run_says_so(tmp_path, capsys):
    (tmp_path / LOCK_NAME).write_text("999999999\n", encoding="ascii")
    with claimed_folder(tmp_path):  # issue 23: the stale lock is removed, with a note saying so
        pass
    assert "no longer running" in capsys.readouterr().err


@pytest.mark.slow
def test_two_runs_started_together_into_one_folder(tmp_path):
    case = write_phantom_case(tmp_path, "Case1", (24, 24, 16), 1)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "medmodels", "segment", str(case), "--out", str(out), *RT]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", env=env)
        for _ in "ab"
    ]
    results = [(p.wait(300), p.stderr.read()) for p in runs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    assert "ERROR:" in loser and "Traceback" not in loser
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "segmentation.nii.gz"]


# -- 4. geometry no head has; memory --------------------------------------------------------


@pytest.mark.parametrize(
    "spacing,words",
    [((50.0, 50.0, 50.0), "voxels of 50 mm"), ((0.001, 0.001, 0.001), "in metres"), ((1, 1, 1), "covers 8 mm")],
)
def test_implausible_geometry_is_refused_before_any_work(tmp_path, capsys, spacing, words):
    size = (8, 8, 8) if spacing == (1, 1, 1) else (40, 64, 64)
    array = np.random.default_rng(0).random(size, np.float32) + 1
    write_image(Image(array, spacing), tmp_path / "t1.nii.gz")
    fails(["run", "--t1", tmp_path / "t1.nii.gz", "--out", tmp_path / "out", *RT], capsys, words)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_memory_is_estimated_before_the_working_grids(small_phantom, monkeypatch):
    monkeypatch.setattr(mio, "available_memory_bytes", lambda: 1 << 20)
    with pytest.raises(InputError, match="needs about .* GiB of memory"):
        run_case({"t1": small_phantom.images["t1"]}, RunOptions(segment=False, device="cpu"))


def test_the_slicer_worker_runs_under_a_memory_cap_and_says_so(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "MissingModalityTools"))
    from MissingModalityToolsLib.worker import WorkerProcess, default_memory_limit

    assert default_memory_limit() is None or default_memory_limit() > 0
    worker = WorkerProcess(
        [sys.executable, "-c", "x = bytearray(4 * 2**30)"], dict(os.environ), memory_limit_bytes=512 * 2**20
    )
    worker.start()
    assert worker.wait(60) != 0
    worker.poll()
    assert worker.ran_out_of_memory()
    assert "ran out of memory (its limit is 0.5 GiB)" in worker.failure_message()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the cap is set with prlimit, Linux only")
def test_the_memory_cap_is_set_on_the_started_child_not_in_preexec_fn(monkeypatch):
    """Issue 21, defect 8: preexec_fn can deadlock the child of a multi-threaded process (Slicer);
    the cap is set with resource.prlimit on the running child instead."""
    import resource
    import subprocess

    monkeypatch.syspath_prepend(str(ROOT / "MissingModalityTools"))
    from MissingModalityToolsLib import worker as worker_module

    seen = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        seen.append(kwargs)
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(worker_module.subprocess, "Popen", recording_popen)
    cap = 768 * 2**20
    worker = worker_module.WorkerProcess(
        [sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ), memory_limit_bytes=cap
    )
    worker.start()
    try:
        assert "preexec_fn" not in seen[0]
        soft, _ = resource.prlimit(worker.proc.pid, resource.RLIMIT_DATA)
        assert soft == cap
    finally:
        worker.cancel()


# -- 5. damaged NIfTI files --------------------------------------------------------------------


def test_a_truncated_nifti_is_refused(small_phantom, tmp_path):
    for name in ("t1.nii.gz", "t1.nii"):
        path = write_image(small_phantom.images["t1"], tmp_path / name)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(InputError, match="truncated"):
            read_image(path)


def test_nan_and_inf_in_nifti_are_refused(tmp_path):
    array = np.ones((16, 16, 16), np.float32)
    array[3, 4, 5], array[0, 0, 0] = np.nan, np.inf
    for name in ("nan.nii.gz", "nan.nii"):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
        with pytest.raises(InputError, match="2 NaN or infinite voxels"):
            read_image(tmp_path / name)
        check_nifti(tmp_path / name, check_finite=False)  # the bytes themselves are whole


def test_a_damaged_nifti_on_the_command_line(small_phantom, tmp_path, capsys):
    path = write_image(small_phantom.images["t1"], tmp_path / "t1.nii.gz")
    path.write_bytes(path.read_bytes()[:-200])
    fails(["run", "--t1", path, "--out", tmp_path / "out", *RT], capsys, "truncated")


# -- 6. one resolver, one rule set -----------------------------------------------------------


@pytest.mark.parametrize("label_name", ["t1_seg.nii.gz", "t1_post_mask.nii.gz", "flair_label.nii.gz"])
def test_label_maps_are_never_images(small_phantom, tmp_path, label_name):
    folder = tmp_path / "p"
    write_image(small_phantom.images["t2"], folder / "t2.nii.gz")
    write_image(small_phantom.labels, folder / label_name)
    assert resolve_inputs(folder) == [("p", {"t2": folder / "t2.nii.gz"})]


def test_a_name_of_two_modalities_is_never_guessed(small_phantom, tmp_path):
    folder = tmp_path / "p"
    write_image(small_phantom.images["t2"], folder / "flair.nii.gz")
    write_image(small_phantom.images["t1"], folder / "t1_t2_mix.nii.gz")
    with pytest.raises(InputError, match="'t1_t2_mix.nii.gz' names several modalities"):
        resolve_inputs(folder)


def test_a_synthetic_volume_of_an_earlier_run_is_not_taken_as_acquired(small_phantom, tmp_path):
    folder = tmp_path / "p"
    for key in ("flair", "t1", "t1c"):
        write_image(small_phantom.images[key], folder / f"{key}.nii.gz")
    write_image(small_phantom.images["t1c"], folder / "t1c_std.nii.gz")
    manifest = {"synthesised": {"t1c": "t1c.nii.gz"}, "uncertainty": {"t1c": "t1c_std.nii.gz"}}
    (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    assert resolve_inputs(folder) == [("p", {"flair": folder / "flair.nii.gz", "t1": folder / "t1.nii.gz"})]


# -- 7. sheared grids -------------------------------------------------------------------------


def test_a_sheared_nrrd_is_refused(tmp_path, capsys):
    data = np.random.default_rng(1).random((40, 48, 48), np.float32) + 1
    header = (
        "NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: 48 48 40\n"
        "space directions: (4,0,0) (2,4,0) (0,0,4)\nkinds: domain domain domain\nendian: little\n"
        "encoding: raw\nspace origin: (0,0,0)\n\n"
    )
    path = tmp_path / "sheared.nrrd"
    path.write_bytes(header.encode("ascii") + data.astype("<f4").tobytes())
    with pytest.raises(InputError, match="non-orthonormal direction"):
        read_image(path)
    fails(["run", "--t1", path, "--out", tmp_path / "out", *RT], capsys, "sheared")


def test_a_sheared_image_in_memory_is_refused(small_phantom):
    t1 = small_phantom.images["t1"]
    sheared = Image(t1.array, t1.spacing, t1.origin, (1, 0.5, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(InputError, match="T1 volume has a sheared"):
        run_case({"t1": sheared}, RunOptions(segment=False, device="cpu"))


# -- 8. blank or constant modalities ----------------------------------------------------------


@pytest.mark.parametrize("value,words", [(0.0, "every voxel is 0"), (100.0, "every voxel is 100")])
def test_a_blank_or_constant_modality_is_refused_by_name(small_phantom, value, words):
    images = {k: small_phantom.images[k] for k in ("flair", "t1")}
    images["t2"] = small_phantom.images["t2"].with_array(np.full(small_phantom.images["t2"].shape, value, np.float32))
    with pytest.raises(InputError, match=f"The T2 volume is blank \\({words}\\)"):
        run_case(images, RunOptions(device="cpu"))


def test_brain_mask_of_a_constant_volume_does_not_say_zero(small_phantom):
    constant = small_phantom.images["t1"].with_array(np.full(small_phantom.images["t1"].shape, 100, np.float32))
    with pytest.raises(InputError) as caught:
        brain_mask({"t1": constant})
    assert "zero" not in str(caught.value) and "constant" in str(caught.value)


# -- 9. outputs checked before computing ------------------------------------------------------


def test_out_that_is_a_file_is_one_error_line(small_phantom, tmp_path, capsys):
    write_image(small_phantom.images["t1"], tmp_path / "t1.nii.gz")
    (tmp_path / "a_file").write_text("x", encoding="utf-8")
    fails(["synthesize", "--t1", tmp_path / "t1.nii.gz", "--out", tmp_path / "a_file", *RT], capsys, "is a file")
    with pytest.raises(InputError, match="is a file"):
        run_cases([("c", {"t1": tmp_path / "t1.nii.gz"})], tmp_path / "a_file", RunOptions())


def test_read_only_output_folder_fails_before_computing(small_phantom, tmp_path):
    write_image(small_phantom.images["t1"], tmp_path / "t1.nii.gz")
    script = (
        f"mount -t tmpfs -o size=1m tmpfs /mnt && mount -o remount,ro /mnt && cd {ROOT} && "
        f"{sys.executable} -m medmodels run --t1 {tmp_path / 't1.nii.gz'} --out /mnt/out --device cpu --threads 1; "
        "echo rc=$?"
    )
    done = _private_mount(script)
    assert "rc=2" in done.stdout and "Traceback" not in done.stderr, done.stderr
    assert "ERROR: Cannot write into the output folder '/mnt/out' (Read-only file system)" in done.stderr
    assert "PROGRESS" not in done.stdout and "Synthesising" not in done.stderr  # nothing was computed


def test_evaluate_include_missing_fails_before_evaluating(phantom_dataset, tmp_path, capsys):
    argv = ["evaluate-seg", phantom_dataset, "--out", tmp_path / "ev", "--include", tmp_path / "nope.json", *RT]
    fails(argv, capsys, "--include", "nope.json")
    (tmp_path / "bad.json").write_text("[1, 2]", encoding="utf-8")
    argv[-5] = tmp_path / "bad.json"
    fails(argv, capsys, "not a results.json")


def _earlier_results(folder: Path, cases=("Phantom_000",), subsets=("1111",), hd95=False, **settings) -> Path:
    """An earlier evaluate-seg's results.json (model 'Old'), written by the command's own writer.

    ``settings``: ``cleanup`` (default True), ``mirror`` (default "none"), ``model`` (default "Old")."""
    model = settings.get("model", "Old")
    metrics = [k for k in METRICS if hd95 or k.startswith("Dice")]
    rows = [
        {"model": model, "case": c, "subset": b, "modalities": b, **{k: 0.5 for k in metrics}}
        for c in cases
        for b in subsets
    ]
    result = {
        "cases": list(cases),
        "subsets": list(subsets),
        "models": [model],
        "cleanup": settings.get("cleanup", True),
        "mirror": settings.get("mirror", "none"),
        "rows": rows,
        "summary": summarise(rows, [model], [AvailabilityMask.from_bits(b) for b in subsets]),
    }
    return write_results(result, folder)["json"]


@pytest.mark.parametrize(
    ("earlier", "argv", "words"),
    [
        ({"hd95": True}, ["--no-hd95"], ["made without --no-hd95", "leave out --no-hd95", "drop --include"]),
        ({"hd95": False}, [], ["made with --no-hd95", "give --no-hd95", "drop --include"]),
        ({"cleanup": False}, ["--no-hd95"], ["give --no-cleanup"]),
        ({"mirror": "x"}, ["--no-hd95"], ["--mirror x", "--mirror none"]),
        ({"cases": ("Phantom_001",)}, ["--no-hd95"], ["Phantom_001", "--cases"]),
        ({"subsets": ("0010",)}, ["--no-hd95"], ["0010", "--subsets"]),
        ({"model": "ShaSpec"}, ["--no-hd95"], ["ShaSpec", "--name"]),
    ],
)
def test_evaluate_include_of_other_settings_fails_before_evaluating(
    phantom_dataset, tmp_path, capsys, monkeypatch, earlier, argv, words
):
    """Issue: --include of a run with HD95 and --no-hd95 (or the reverse) raised KeyError 'HD95_ET' after the
    whole evaluation; every setting the merge needs is now checked first."""
    included = _earlier_results(tmp_path / "old", **earlier)

    def evaluated(*args, **kwargs):
        raise AssertionError("the evaluation ran before the --include check")

    monkeypatch.setattr("medmodels.seg.evaluate.evaluate", evaluated)
    base = ["evaluate-seg", phantom_dataset, "--cases", "Phantom_000", "--subsets", "1111", "--checkpoint", "bundled"]
    fails([*base, "--out", tmp_path / "ev", "--include", included, *argv, *RT], capsys, "--include", *words)
    assert not (tmp_path / "ev").exists()


def test_evaluate_include_of_the_same_settings_reaches_the_evaluation(phantom_dataset, tmp_path, monkeypatch):
    """The check refuses only what cannot merge: the same cases in another order are evaluated."""
    included = _earlier_results(tmp_path / "old", cases=("Phantom_000", "Phantom_001"), hd95=True)

    def evaluated(*args, **kwargs):
        raise RuntimeError("evaluating")

    monkeypatch.setattr("medmodels.seg.evaluate.evaluate", evaluated)
    argv = ["evaluate-seg", phantom_dataset, "--cases", "Phantom_001", "Phantom_000", "--subsets", "1111"]
    with pytest.raises(RuntimeError, match="evaluating"):
        main([str(a) for a in [*argv, "--out", tmp_path / "ev", "--include", included, *RT]])


def test_merge_results_of_hd95_and_dice_only_is_an_input_error(tmp_path):
    with_hd95 = read_included(_earlier_results(tmp_path / "a", hd95=True))
    dice_only = read_included(_earlier_results(tmp_path / "b", model="New"))
    with pytest.raises(InputError, match="--no-hd95"):
        merge_results(with_hd95, dice_only)
    merged = merge_results(read_included(_earlier_results(tmp_path / "c", model="Other")), dice_only)
    assert merged["models"] == ["Other", "New"] and set(merged["summary"]) == {"Other", "New"}


@pytest.mark.slow
def test_evaluate_only_the_full_set(phantom_dataset, tmp_path, capsys):
    argv = ["evaluate-seg", phantom_dataset, "--cases", "Phantom_000", "--subsets", "1111", "--checkpoint", "bundled"]
    assert main([str(a) for a in argv + ["--out", tmp_path / "ev", "--no-hd95", *RT]]) == 0
    assert "n/a" in capsys.readouterr().out


# -- 10. bad input before any work ------------------------------------------------------------


def test_a_symlink_loop_is_one_error_line(tmp_path, capsys):
    loop = tmp_path / "t1.nii.gz"
    os.symlink(loop, loop)
    fails(["run", "--t1", loop, "--out", tmp_path / "out", *RT], capsys, "t1.nii.gz")


def test_a_checkpoint_holding_a_bare_tensor(small_phantom, tmp_path, capsys):
    write_image(small_phantom.images["t1"], tmp_path / "t1.nii.gz")
    torch.save(torch.zeros(3), tmp_path / "bare.pt")
    digest = hashlib.sha256((tmp_path / "bare.pt").read_bytes()).hexdigest()
    (tmp_path / "bare.json").write_text(json.dumps({"sha256": digest}), encoding="utf-8")
    argv = ["run", "--t1", tmp_path / "t1.nii.gz", "--out", tmp_path / "out", "--segment"]
    fails(argv + ["--seg-checkpoint", tmp_path / "bare.pt", *RT], capsys, "holds Tensor")
    fails(["import-weights", tmp_path / "bare.pt", "--sha256", digest, "--out", tmp_path / "w"], capsys, "Tensor")


def test_import_weights_path_errors(tmp_path, capsys):
    good = tmp_path / "theirs.pt"
    torch.save({"state_dict": {}, "config": {}}, good)
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    (tmp_path / "a_file").write_text("x", encoding="utf-8")
    for source, out, words in (
        (tmp_path / "missing.pt", tmp_path / "w", "does not exist"),
        (tmp_path, tmp_path / "w", "is a folder"),
        (good, tmp_path, "already in"),
        (good, tmp_path / "a_file", "is a file"),
    ):
        fails(["import-weights", source, "--sha256", digest, "--out", out], capsys, words)
    assert main(["import-weights", str(good), "--sha256", digest, "--out", str(tmp_path / "w")]) == 0
    fails(["import-weights", good, "--sha256", digest, "--out", tmp_path / "w"], capsys, "exists already")


@pytest.mark.parametrize("flags,words", [(["--threads", "-1"], "--threads"), (["--seed", str(2**62)], "seed")])
def test_bad_numbers(small_phantom, tmp_path, capsys, flags, words):
    write_image(small_phantom.images["t1"], tmp_path / "t1.nii.gz")
    fails(["run", "--t1", tmp_path / "t1.nii.gz", "--out", tmp_path / "out", "--device", "cpu", *flags], capsys, words)


def test_evaluate_labels_on_another_grid(tmp_path, capsys):
    root = tmp_path / "data"
    write_phantom_case(root, "Case1", (24, 24, 16), 1)
    labels = root / "Case1" / case_file_names("Case1")["seg"]
    other = make_phantom((20, 20, 16), seed=1).labels
    labels.unlink()
    write_image(other, labels)
    fails(["evaluate-seg", root, "--out", tmp_path / "ev", *RT], capsys, "Case1", "not on the grid")


# -- 11. a study that is not skull-stripped --------------------------------------------------


def _with_scalp(image: Image) -> Image:
    """The phantom with a non-zero background (a head as the scanner gives it, not stripped)."""
    array = image.array.astype(np.float32)
    return image.with_array(np.where(array == 0, np.float32(80), array))


def test_looks_skull_stripped(small_phantom):
    assert looks_skull_stripped(small_phantom.images)
    assert not looks_skull_stripped({k: _with_scalp(v) for k, v in small_phantom.images.items()})


@pytest.mark.slow
def test_a_study_that_is_not_skull_stripped_is_reported(small_phantom, tmp_path, capsys):
    for key in ("flair", "t1"):
        write_image(_with_scalp(small_phantom.images[key]), tmp_path / "in" / f"{key}.nii.gz")
    # Without preparation (no brain extraction) the models see the scalp: a WARNING line and a manifest note.
    argv = ["segment", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--prepare", "off", *RT]
    assert main(argv) == 0
    assert "WARNING: in: the inputs do not look skull-stripped" in capsys.readouterr().err
    notes = json.loads((tmp_path / "out" / MANIFEST).read_text(encoding="utf-8"))["notes"]
    assert any("do not look skull-stripped" in note for note in notes)
    # With the default preparation the brain is extracted, and the run says that too.
    assert main(["segment", str(tmp_path / "in"), "--out", str(tmp_path / "out2"), *RT]) == 0
    assert "skull-stripped" in capsys.readouterr().err
