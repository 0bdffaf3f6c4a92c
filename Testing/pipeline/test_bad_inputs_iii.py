"""Issue 23, "Nothing silent, nothing lost (II)", groups 2 and 5 to 8 and the
warnings: no command replaces an earlier file, empty splits, non-finite
weights, names that leave their folder, tracebacks, stale locks, SIGTERM,
``--resume`` and ``--samples``. All data are generated (``medmodels.phantom``)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from cli_checks import RT, fails
from medmodels.atomic import LOCK_NAME, claimed_folder, staging_prefix
from medmodels.cli import main
from medmodels.errors import CheckpointError, InputError
from medmodels.io import write_image
from medmodels.phantom import write_phantom_case
from medmodels.report import Report, write_report
from medmodels.weights import bundled_checkpoint, load_checkpoint, save_checkpoint


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> its SHA-256: what a refused command must leave as it was."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# -- 2. no command replaces an earlier file -------------------------------------------------------


def test_phantom_never_replaces_an_existing_case(tmp_path, capsys):
    argv = ["phantom", tmp_path, "--case", "Mine", "--size", "24x24x16"]
    assert main([str(a) for a in argv]) == 0
    labels = tmp_path / "Mine" / "Mine_seg.nii.gz"
    labels.write_bytes(b"the user's own corrected labels")
    before = tree(tmp_path)
    fails(argv + ["--seed", "5"], capsys, "Mine_seg.nii.gz", "another case name")
    assert tree(tmp_path) == before


def test_demo_refuses_an_earlier_demo_before_writing_anything(tmp_path, capsys):
    demo = tmp_path / "demo"
    (demo / "output").mkdir(parents=True)
    (demo / "output" / "manifest.json").write_text("{}", encoding="utf-8")
    fails(["demo", demo, "--size", "24x24x16", *RT], capsys, "manifest.json", "another folder")
    assert not (demo / "input").exists()  # refused before the phantom was written
    write_phantom_case(demo / "input", "Phantom_007", (24, 24, 16), 7)
    (demo / "output" / "manifest.json").unlink()
    before = tree(demo)
    fails(["demo", demo, "--size", "24x24x16", *RT], capsys, "Phantom_007_flair.nii.gz")
    assert tree(demo) == before


@pytest.mark.parametrize(
    "command,earlier",
    [
        (["evaluate-seg", "{data}", "--cases", "Phantom_000"], "results.md"),
        (["evaluate-syn", "{data}", "--split", "{split}"], "evaluation.json"),
        (["bench-seg"], "bench_seg.json"),
        (["bench-seg"], "bench_seg.md"),
        (["evaluate-syn", "{data}", "--split", "{split}"], "evaluation.md"),
        (["bench-seg", "--training"], "bench_seg_training.json"),
        (["bench-syn", "--training"], "bench_syn_training.json"),
        (["bench-syn", "{data}/Phantom_000"], "bench_syn.json"),
    ],
)
def test_results_of_an_earlier_run_are_never_replaced(phantom_dataset, tmp_path, capsys, command, earlier):
    split = tmp_path / "split.json"
    split.write_text('{"training": ["Phantom_000"], "validation": ["Phantom_001"]}', encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / earlier).write_text("earlier figures", encoding="utf-8")
    argv = [a.format(data=phantom_dataset, split=split) for a in command]
    fails(argv + ["--out", out, *RT], capsys, earlier, "another --out")
    assert (out / earlier).read_text(encoding="utf-8") == "earlier figures"


def test_export_never_replaces_a_checkpoint(tmp_path, capsys):
    save_checkpoint(tmp_path / "run" / "model.pt", {"state_dict": {"w": torch.ones(2)}, "config": {}})
    out = tmp_path / "weights"
    argv = ["export", tmp_path / "run", "--name", "mine", "--out", out]
    assert main([str(a) for a in argv]) == 0
    before = tree(out)
    fails(argv, capsys, "mine.pt", "mine.json", "another --name")
    assert tree(out) == before


# -- 5. an empty validation split ---------------------------------------------------------------


def _split(tmp_path: Path, training: list[str] | None, validation: list[str] | None) -> Path:
    """A split file with these lists (None: the list left out)."""
    parts = {k: v for k, v in (("training", training), ("validation", validation)) if v is not None}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(parts), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate-seg", "{data}", "--split", "{split}", "--out", "{out}", "--subsets", "1111"],
        ["evaluate-syn", "{data}", "--split", "{split}", "--out", "{out}", "--patterns", "1110"],
        ["train-seg", "{data}", "--split", "{split}", "--out", "{out}", "--iterations", "1", "--patch", "16"],
        ["train-syn", "{data}", "--split", "{split}", "--out", "{out}", "--iterations", "1"],
    ],
)
def test_an_empty_validation_split_is_refused(phantom_dataset, tmp_path, capsys, command):
    split = _split(tmp_path, ["Phantom_000", "Phantom_001"], [])
    argv = [a.format(data=phantom_dataset, split=split, out=tmp_path / "out") for a in command]
    fails(argv + RT, capsys, "split.json", "no validation cases")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    _split(tmp_path, ["Phantom_000"], None)
    fails(argv + RT, capsys, "split.json", "'validation'")


@pytest.mark.parametrize("command", ["train-seg", "train-syn"])
def test_an_empty_training_list_is_refused(phantom_dataset, tmp_path, capsys, command):
    split = _split(tmp_path, [], ["Phantom_002"])
    fails([command, phantom_dataset, "--split", split, "--out", tmp_path / "out", *RT], capsys, "no training cases")


def test_evaluate_seg_with_no_case_named(phantom_dataset, tmp_path, capsys):
    fails(["evaluate-seg", phantom_dataset, "--cases", "--out", tmp_path / "out", *RT], capsys, "--cases")


# -- 6. weights checked for finite values at load -----------------------------------------------


def test_a_checkpoint_with_nan_weights_is_refused(small_phantom, tmp_path, capsys):
    payload = load_checkpoint(bundled_checkpoint("shaspec_brats18"))
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name] = torch.full_like(payload["state_dict"][name], float("nan"))
    save_checkpoint(tmp_path / "diverged.pt", payload)
    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(tmp_path / "diverged.pt")
    write_image(small_phantom.images["t1"], tmp_path / "t1.nii.gz")
    argv = ["segment", "--t1", tmp_path / "t1.nii.gz", "--out", tmp_path / "out", "--seg-checkpoint"]
    fails(argv + [tmp_path / "diverged.pt", *RT], capsys, "diverged.pt", "NaN or infinite")
    assert not (tmp_path / "out" / "segmentation.nii.gz").exists()


# -- 7. names cannot leave their folder ---------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "..", "a/../../x", "{tmp}/x", "sub\\..\\..\\x", "C:x"])
def test_a_name_that_would_leave_its_folder_is_refused(tmp_path, capsys, name):
    name = name.format(tmp=tmp_path)
    save_checkpoint(tmp_path / "run" / "model.pt", {"state_dict": {"w": torch.ones(2)}, "config": {}})
    inside = tmp_path / "a" / "b"
    fails(["export", tmp_path / "run", "--name", name, "--out", inside], capsys, "--name", "not a plain name")
    fails(["phantom", inside, "--case", name, "--size", "24x24x16"], capsys, "--case", "not a plain name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written, inside or outside


# -- 8. an ERROR line, never a traceback ----------------------------------------------------------


def _case_with(small_phantom, folder: Path, key: str, image) -> Path:
    """FLAIR and T2 of the phantom and ``image`` (an Image, or a SimpleITK image) as ``key``."""
    for other in ("flair", "t2"):
        write_image(small_phantom.images[other], folder / f"{other}.nii.gz")
    if isinstance(image, sitk.Image):
        sitk.WriteImage(image, str(folder / f"{key}.nii.gz"))
    else:
        write_image(image, folder / f"{key}.nii.gz")
    return folder


@pytest.mark.parametrize("peak", [1e30, 3e38])
def test_values_near_1e30_are_refused(small_phantom, tmp_path, capsys, peak):
    t1 = small_phantom.images["t1"]
    huge = t1.with_array((t1.array / t1.array.max() * np.float32(peak)).astype(np.float32))
    case = _case_with(small_phantom, tmp_path / "case", "t1", huge)
    for prepare in ("auto", "off"):
        fails(
            ["segment", case, "--out", tmp_path / prepare, "--prepare", prepare, *RT], capsys, "t1.nii.gz", "scl_slope"
        )


def test_a_complex_valued_nifti_is_refused(small_phantom, tmp_path, capsys):
    t1 = small_phantom.images["t1"]
    complex_t1 = sitk.GetImageFromArray(t1.array.astype(np.complex64))
    complex_t1.CopyInformation(t1.to_sitk())
    case = _case_with(small_phantom, tmp_path / "case", "t1", complex_t1)
    fails(["segment", case, "--out", tmp_path / "out", *RT], capsys, "t1.nii.gz", "complex", "magnitude")


def test_a_24_mm_volume_next_to_normal_ones(small_phantom, tmp_path, capsys):
    t1 = small_phantom.images["t1"].to_sitk()
    thick = sitk.Resample(t1, [48, 48, 7], sitk.Transform(), sitk.sitkLinear, t1.GetOrigin(), (5.0, 5.0, 24.0))
    case = _case_with(small_phantom, tmp_path / "case", "t1", thick)
    fails(["segment", case, "--out", tmp_path / "out", *RT], capsys, "T1", "24 mm")


@pytest.mark.parametrize(
    "record,words",
    [("not JSON {", "is not JSON"), ('{"file": "c.pt"}', "without a SHA-256"), ('["abc"]', "a JSON list")],
)
def test_a_malformed_checkpoint_record(small_phantom, tmp_path, capsys, record, words):
    torch.save({"state_dict": {"w": torch.ones(2)}, "config": {}}, tmp_path / "c.pt")
    (tmp_path / "c.json").write_text(record, encoding="utf-8")
    write_image(small_phantom.images["t1"], tmp_path / "t1.nii.gz")
    argv = ["segment", "--t1", tmp_path / "t1.nii.gz", "--out", tmp_path / "out", "--seg-checkpoint", tmp_path / "c.pt"]
    fails(argv + RT, capsys, "c.json", words, "restore")
    fails(["export", tmp_path / "c.pt", "--name", "e", "--out", tmp_path / "w"], capsys, "c.json", words)


# -- warnings: a stale lock, SIGTERM, --resume, --samples ------------------------------------------


def _dead_pid() -> int:
    """The pid of a process that has just ended (so no process has it now, barring reuse)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_lock_of_a_killed_run_is_removed_with_a_note(small_phantom, tmp_path, capsys):
    write_image(small_phantom.images["t1"], tmp_path / "t1.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{_dead_pid()} {socket.gethostname()}\n", encoding="ascii")
    argv = ["segment", "--t1", tmp_path / "t1.nii.gz", "--out", out, "--seg-checkpoint", tmp_path / "none.pt"]
    fails(argv + RT, capsys, "none.pt")  # any error after the claim: the claim itself went through
    assert not (out / LOCK_NAME).exists()
    with claimed_folder(out):
        pass
    (out / LOCK_NAME).write_text(f"{_dead_pid()}\n", encoding="ascii")
    with claimed_folder(out):
        assert (out / LOCK_NAME).read_text(encoding="ascii").split()[0] == str(os.getpid())
    assert "removed the lock file" in capsys.readouterr().err


def test_a_lock_that_may_be_held_is_never_removed(tmp_path):
    for text in (f"{_dead_pid()} another-machine\n", f"{os.getpid()}\n", ""):  # a shared folder, alive, unreadable
        (tmp_path / LOCK_NAME).write_text(text, encoding="ascii")
        with pytest.raises(InputError, match="in use by"):
            with claimed_folder(tmp_path):
                pass
        assert (tmp_path / LOCK_NAME).read_text(encoding="ascii") == text


#: A run that receives SIGTERM while it writes its outputs: after the first staged file.
SIGTERM_WHILE_WRITING = """
import os, signal, sys, time
import medmodels.pipeline as pipeline
from medmodels.cli import main
write = pipeline.write_image
def write_then_terminate(image, path):
    written = write(image, path)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the signal arrives here
    return written
pipeline.write_image = write_then_terminate
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_is_handled_as_ctrl_c(small_phantom, tmp_path):
    write_image(small_phantom.images["t1"], tmp_path / "t1.nii.gz")
    out = tmp_path / "out"
    argv = ["segment", "--t1", str(tmp_path / "t1.nii.gz"), "--out", str(out), *RT]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", SIGTERM_WHILE_WRITING, *argv],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=300,
    )
    assert done.returncode == 143 and "ERROR: stopped by SIGTERM" in done.stderr, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == []  # no .partial-* folder, no lock, no output


def _staged_by(pid: int, rest: str) -> str:
    """A staging name (``atomic.staging_prefix``) as process ``pid`` of this machine would have made it."""
    return staging_prefix().replace(f"-{os.getpid()}@", f"-{pid}@", 1) + rest


def test_the_next_claim_removes_staging_a_dead_writer_left_and_keeps_a_live_ones(tmp_path, capsys):
    dead = _dead_pid()
    (tmp_path / _staged_by(dead, "folder")).mkdir()
    (tmp_path / _staged_by(dead, "folder") / "t1.nii.gz").write_bytes(b"half a volume")
    (tmp_path / _staged_by(dead, "file.json")).write_text("{", encoding="utf-8")
    kept = [
        staging_prefix() + "live",  # this process: a writer that is alive
        f".partial-{dead}@another-machine@x",  # a shared folder: another machine's pid says nothing here
        ".partial-abc123",  # an older version's name, which does not say who made it
    ]
    for name in kept:
        (tmp_path / name).mkdir()
    with claimed_folder(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + [LOCK_NAME])
    assert capsys.readouterr().err.count(f"left by process {dead}, which is no longer running") == 2


def test_a_report_removes_the_temporary_files_of_a_killed_report(tmp_path, capsys):
    dead = _staged_by(_dead_pid(), "x.json")
    live = staging_prefix() + "y.json"
    for name in (dead, live):
        (tmp_path / name).write_text("{", encoding="utf-8")
    write_report(Report("evaluate-test", "A report", {"n": 1}), tmp_path, "results")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live, "results.json"])
    assert "no longer running" in capsys.readouterr().err


#: A run killed with SIGKILL (no handler, no ``finally``) while it writes its outputs: after the first staged file.
SIGKILL_WHILE_WRITING = SIGTERM_WHILE_WRITING.replace("signal.SIGTERM", "signal.SIGKILL")


def test_the_staging_folder_of_a_run_killed_with_sigkill_goes_with_the_next_claim(small_phantom, tmp_path, capsys):
    write_image(small_phantom.images["t1"], tmp_path / "t1.nii.gz")
    out = tmp_path / "out"
    argv = ["segment", "--t1", str(tmp_path / "t1.nii.gz"), "--out", str(out), *RT]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", SIGKILL_WHILE_WRITING, *argv], env=env, timeout=300)
    assert done.returncode == -9
    left = sorted(p.name for p in out.iterdir())
    assert LOCK_NAME in left and any(name.startswith(".partial-") for name in left), left
    with claimed_folder(out):  # what the next run into ``out`` does first
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    assert sorted(out.iterdir()) == []
    assert "no longer running" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train-seg", "train-syn"])
def test_resume_without_last_pt_is_an_error(phantom_dataset, tmp_path, capsys, command):
    argv = [command, phantom_dataset, "--out", tmp_path / "run", "--resume", "--iterations", "1", *RT]
    fails(argv, capsys, "--resume", "last.pt", "leave --resume out")
    assert not (tmp_path / "run" / "model.pt").exists()  # nothing was trained from scratch


@pytest.mark.parametrize("samples", ["0", "33", "100000"])
def test_samples_are_bounded(small_phantom, phantom_dataset, tmp_path, capsys, samples):
    write_image(small_phantom.images["t1"], tmp_path / "t1.nii.gz")
    argv = ["synthesize", "--t1", tmp_path / "t1.nii.gz", "--out", tmp_path / "out", "--samples", samples]
    fails(argv + RT, capsys, "--samples", "at most 32", samples)
    split = _split(tmp_path, ["Phantom_000"], ["Phantom_001"])
    argv = ["evaluate-syn", phantom_dataset, "--split", split, "--out", tmp_path / "ev", "--samples", samples]
    fails(argv + RT, capsys, "--samples", "at most 32", samples)
    assert not (tmp_path / "out").exists() and not (tmp_path / "ev" / "evaluation.json").exists()
