"""Where the module's files are, and a fresh Python to import them in: for every test of
the module, with or without slicer-core (this file imports nothing of Slicer)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "MissingModalityTools"
LIB_DIR = ROOT / "Lib"
CONTRACT_WORKER = MODULE_DIR / "Resources" / "Testing" / "slicer_contract_worker.py"  # shipped for the self-test
for _p in (str(LIB_DIR), str(MODULE_DIR)):
    if _p not in sys.path:
        sys.path.insert(0, _p)


def run_fresh_python(code: str) -> str:
    """stdout of ``code`` in a fresh Python that sees only the module folder and
    Lib/ (no site settings from this process): what a module import loads there.

    Args:
        code: the Python source to run.
    """
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": f"{MODULE_DIR}:{LIB_DIR}", "PATH": "/usr/bin:/bin"},
    )
    return out.stdout
