import json

import pytest
import torch
from medmodels.errors import CheckpointError
from medmodels.weights import bundled_checkpoint, import_checkpoint, load_checkpoint, save_checkpoint, sha256_of


def _save(path):
    return save_checkpoint(path, {"state_dict": {"w": torch.arange(4.0)}, "config": {"width": 8}})


def test_save_and_load_with_recorded_hash(tmp_path):
    record = _save(tmp_path / "m.pt")
    assert record["sha256"] == sha256_of(tmp_path / "m.pt") and record["config"] == {"width": 8}
    assert json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))["sha256"] == record["sha256"]
    payload = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(payload["state_dict"]["w"], torch.arange(4.0))


def test_altered_checkpoint_is_refused(tmp_path):
    _save(tmp_path / "m.pt")
    data = bytearray((tmp_path / "m.pt").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "m.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256 .* but .* was recorded"):
        load_checkpoint(tmp_path / "m.pt")


def test_unrecorded_and_missing_checkpoints(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="no record"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match="No bundled checkpoint 'nothing'"):
        bundled_checkpoint("nothing")


def test_pickled_code_is_refused_by_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(tmp_path / "evil.pt", expected_sha256=sha256_of(tmp_path / "evil.pt"))


def test_import_checks_the_published_hash(tmp_path):
    torch.save({"state_dict": {}, "config": {"a": 1}}, tmp_path / "theirs.pt")
    with pytest.raises(CheckpointError, match="not the"):
        import_checkpoint(tmp_path / "theirs.pt", tmp_path / "mine", "0" * 64)
    dest = import_checkpoint(tmp_path / "theirs.pt", tmp_path / "mine", sha256_of(tmp_path / "theirs.pt"))
    assert load_checkpoint(dest)["config"] == {"a": 1}
