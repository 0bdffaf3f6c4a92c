"""train-syn under torchrun: two CPU processes (gloo) train one model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import medmodels
import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("adversarial", ["0", "0.2"])
def test_torchrun_two_processes(phantom_dataset, tmp_path, adversarial):
    """With --adversarial-weight the discriminator is a second DDP module of the same one step."""
    out = tmp_path / "ddp"
    lib = str(Path(medmodels.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": lib + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "-m",
        "medmodels",
        "train-syn",
        str(phantom_dataset),
        "--out",
        str(out),
        "--iterations",
        "4",
        "--val-every",
        "2",
        "--spacing",
        "8",
        "--patch",
        "32,32",
        "--channels",
        "8,16,16",
        "--encoder-channels",
        "4",
        "--batch-size",
        "2",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--adversarial-weight",
        adversarial,
    ]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, encoding="utf-8", timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((out / "history.json").read_text(encoding="utf-8"))
    assert summary["world_size"] == 2 and summary["slices_seen"] == 4 * 2 * 2
    assert [r["iteration"] for r in summary["history"]] == [2, 4]
    assert (out / "model.pt").exists()
    assert summary["params_in_sync"]  # the discriminator's weights too
    assert all(("loss_adv_d" in r) == (adversarial != "0") for r in summary["history"])
