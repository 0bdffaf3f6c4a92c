import subprocess
import sys

from medmodels.cli import main
from medmodels.datasets import find_case


def test_phantom_command(tmp_path, capsys):
    assert main(["phantom", str(tmp_path), "--seed", "4", "--size", "32x32x24", "--naming", "2023"]) == 0
    folder = capsys.readouterr().out.strip()
    case = find_case(folder, require_label=True)
    assert case.name == "Phantom_004" and case.naming == "2023"
    assert case.load()[0]["t1"].shape == (24, 32, 32)


def test_phantom_command_writes_the_lesion_style_asked_for(tmp_path, capsys):
    import numpy as np
    from medmodels.phantom import make_phantom

    for lesion in ("bright", "real"):
        argv = ["phantom", str(tmp_path / lesion), "--seed", "4", "--size", "32x32x24", "--lesion", lesion]
        assert main(argv) == 0
        images = find_case(capsys.readouterr().out.strip(), require_label=True).load()[0]
        made = make_phantom((32, 32, 24), 4, lesion=lesion)
        for key in images:
            np.testing.assert_array_equal(images[key].array, made.images[key].array)
    written = [find_case(tmp_path / s / "Phantom_004").load()[0]["flair"].array for s in ("bright", "real")]
    assert not np.array_equal(*written)


def test_errors_are_one_clear_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "medmodels",
            "run",
            "--out",
            str(tmp_path / "o"),
            "--t1",
            str(tmp_path / "missing.nii.gz"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("ERROR: ") and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_progress_lines_mode(monkeypatch, capsys):
    from medmodels.progress import progress, within

    monkeypatch.setenv("MEDMODELS_PROGRESS", "lines")
    with within(0.5, 1.0):
        bar = progress(range(3), desc="Work")
        for _ in bar:
            bar.set_postfix(loss=0.25)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("PROGRESS")]
    assert lines[0] == "PROGRESS 0.5000 Work 0/3"
    assert lines[-1] == "PROGRESS 1.0000 Work 3/3 loss=0.25"


def test_nested_progress_reports_on_the_outer_scale(monkeypatch, capsys):
    from medmodels.progress import emit, progress, within

    monkeypatch.setenv("MEDMODELS_PROGRESS", "lines")
    emit(0.1, "start")
    with within(0.2, 0.6):
        for _ in progress(range(2), desc="Inner"):
            pass
        with within(0.5, 1.0):
            emit(0.0, "deeper")
    emit(1.0, "end")
    fractions = [float(ln.split()[1]) for ln in capsys.readouterr().out.splitlines()]
    assert fractions == [0.1, 0.2, 0.6, 0.4, 1.0]
