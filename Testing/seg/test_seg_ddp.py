"""DDP: train-seg under torchrun with two gloo processes on the CPU."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

LIB = str(Path(__file__).resolve().parents[2] / "Lib")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_train_seg(data, out, *extra: str) -> None:
    """train-seg of a tiny ShaSpec under torchrun, two gloo processes on the CPU (2 iterations, validation
    after each); ``extra``: more flags. Fails the test on a non-zero exit or a hang."""
    env = {
        **os.environ,
        "PYTHONPATH": LIB + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "MEDMODELS_PROGRESS": "lines",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "--master_addr=127.0.0.1",
        "-m",
        "medmodels",
        "train-seg",
        str(data),
        "--out",
        str(out),
        "--arch",
        "shaspec",
        "--width",
        "4",
        "--depth",
        "3",
        "--spacing",
        "8",
        "--patch",
        "16",
        "--batch-size",
        "1",
        "--iterations",
        "2",
        "--val-every",
        "1",
        "--device",
        "cpu",
        "--threads",
        "1",
        *extra,
    ]
    # own process group, so a hang cannot leave worker processes behind
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]


def test_train_seg_with_two_gloo_processes(phantom_dataset, tmp_path):
    out = tmp_path / "ddp"
    _torchrun_train_seg(phantom_dataset, out)
    history = json.loads((out / "history.json").read_text(encoding="utf-8"))
    assert history["world_size"] == 2
    assert history["params_in_sync"] is True  # DDP kept both processes' weights identical
    assert history["patches_seen"] == 2 * 1 * 2
    assert (out / "model.pt").exists()


def test_keep_best_under_ddp_is_written_by_the_main_process_without_a_hang(phantom_dataset, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"training": ["Phantom_000", "Phantom_001"], "validation": ["Phantom_002"]}))
    out = tmp_path / "ddp"
    _torchrun_train_seg(phantom_dataset, out, "--split", str(split), "--keep-best")
    history = json.loads((out / "history.json").read_text(encoding="utf-8"))
    assert history["world_size"] == 2 and history["params_in_sync"] is True
    assert history["best"]["iteration"] in (1, 2) and (out / "best.pt").exists()
    chosen = json.loads((out / "best.json").read_text(encoding="utf-8"))["training"]["best"]
    assert {k: chosen[k] for k in ("iteration", "score")} == history["best"]
