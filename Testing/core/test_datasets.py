import json
import subprocess
import sys

import pytest
from medmodels.datasets import discover_cases, read_split, split_cases, write_split
from medmodels.errors import InputError


def test_discover_and_split(phantom_dataset, tmp_path):
    cases = discover_cases(phantom_dataset, require_label=True)
    assert list(cases) == ["Phantom_000", "Phantom_001", "Phantom_002"]
    split = tmp_path / "split.json"
    write_split(split, ["Phantom_000", "Phantom_001"], ["Phantom_002"])
    assert [c.name for c in split_cases(phantom_dataset, split, "validation")] == ["Phantom_002"]


def test_missing_file_names_the_file_and_case(phantom_dataset, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(phantom_dataset, root)
    (root / "Phantom_001" / "Phantom_001_t2.nii.gz").unlink()
    with pytest.raises(InputError, match=r"Case 'Phantom_001' lacks its T2 file .*Phantom_001_t2.nii.gz"):
        discover_cases(root)
    assert "t2" not in discover_cases(root, require_all=False)["Phantom_001"].images


def test_split_errors(phantom_dataset, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": ["A"], "validation": ["A"]}), encoding="utf-8")
    with pytest.raises(InputError, match="both training and validation"):
        read_split(bad)
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(InputError, match="not valid JSON"):
        read_split(bad)
    bad.write_text(json.dumps({"training": ["Phantom_000", "Nope"], "validation": []}), encoding="utf-8")
    with pytest.raises(InputError, match="Nope"):
        split_cases(phantom_dataset, bad, "training")


def test_project_split_file_is_valid():
    from pathlib import Path

    split = read_split(Path(__file__).resolve().parents[2] / "splits" / "brats18_shared.json")
    assert len(split["training"]) == 11 and len(split["validation"]) == 4


def test_a_split_file_is_never_replaced(tmp_path):
    split = tmp_path / "split.json"
    write_split(split, ["A", "B"], ["C"])
    before = split.read_bytes()
    assert json.loads(before) == {"training": ["A", "B"], "validation": ["C"]}
    with pytest.raises(InputError, match=r"already holds split\.json.*give the split another file name"):
        write_split(split, ["D"], ["E"])
    assert split.read_bytes() == before


@pytest.mark.skipif(sys.platform == "win32", reason="file-size limits are POSIX")
def test_a_split_that_fails_mid_write_leaves_no_file(tmp_path):
    """A disk that fills up while the split is written (a 16-byte file-size limit): neither a cut
    split file nor a temporary one is left."""
    code = (
        "import resource, signal; from medmodels.datasets import write_split; "
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (16, resource.getrlimit(resource.RLIMIT_FSIZE)[1])); "
        f"write_split({str(tmp_path / 'split.json')!r}, ['Case_%03d' % i for i in range(50)], ['Other'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "File too large" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []
