"""A phantom case made offline by ``medmodels phantom``: the demo case and the self-test's data.

The phantom generator runs in the worker's Python (numpy, SciPy and
SimpleITK only: no torch, no network), so the "Load demo case" button and the
self-test work in a Slicer that has not installed PyTorch yet, and in the
extension factory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

from MissingModalityToolsLib import nodes as nodeio
from MissingModalityToolsLib.inputs import assign_by_name

#: The demo case: a phantom of BraTS's field of view at a coarse grid (a few seconds to make).
DEMO_SEED = 7
DEMO_SIZE = "96x96x64"
#: T1c is left out of the demo, so that Apply shows it synthesised.
DEMO_MODALITIES = ("flair", "t1", "t2")
#: Generating a phantom takes seconds; this bounds a stuck worker Python.
PHANTOM_TIMEOUT_SECONDS = 120


class DemoError(RuntimeError):
    """The phantom could not be made; the message holds the worker's stderr tail and the fix."""


def medmodels_command(logic) -> list[str]:
    """``<worker python> -m medmodels``: the library's command line in the worker's Python."""
    return [logic.worker_command[0], "-m", "medmodels"]


def make_phantom_case(logic, out_dir: str, seed: int, size: str, timeout: float = PHANTOM_TIMEOUT_SECONDS) -> str:
    """Write a phantom case folder with ``medmodels phantom``; returns ``out_dir/Phantom_<seed>``.

    Args:
        logic: the module's logic (its worker Python and environment are used).
        out_dir: folder to write into (created).
        seed: the phantom's seed (everything random follows it).
        size: voxels "XxYxZ", e.g. "96x96x64".
        timeout: seconds before the generator is stopped.
    """
    os.makedirs(out_dir, exist_ok=True)
    command = medmodels_command(logic) + ["phantom", out_dir, "--seed", str(seed), "--size", size]
    try:
        made = subprocess.run(command, env=logic.environment(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise DemoError(f"The phantom generator took longer than {timeout:.0f} s and was stopped.") from e
    except OSError as e:
        raise DemoError(f"Could not start {command[0]} ({e}): reinstall the extension.") from e
    if made.returncode != 0:
        # The worker's own words (its stderr tail) are the only useful clue here.
        raise DemoError(
            f"The phantom generator failed (exit {made.returncode}); its stderr ends with:\n"
            f"{made.stderr[-2000:]}\nIf it names a missing package, reinstall the extension."
        )
    return os.path.join(out_dir, f"Phantom_{seed:03d}")


def load_case_volumes(scene, folder: str, keys: Sequence[str], name_prefix: str) -> list:
    """New scalar volume nodes from a BraTS-named case folder, named ``<prefix>_<key>``."""
    case = os.path.basename(folder)
    return [
        nodeio.read_scalar_volume(scene, os.path.join(folder, f"{case}_{key}.nii.gz"), f"{name_prefix}_{key}")
        for key in keys
    ]


def load_demo_case(logic, seed: int = DEMO_SEED, size: str = DEMO_SIZE) -> dict:
    """Make the demo phantom offline and load FLAIR, T1 and T2 into the logic's scene.

    Returns modality key -> new node, ready for the selectors (the names say
    the modality, so auto-assign finds them too). The generated files are
    removed; the nodes hold the voxels. Raises DemoError.

    Args:
        logic: the module's logic (scene, worker Python, temporary folder).
        seed: the phantom's seed.
        size: voxels "XxYxZ".
    """
    work = tempfile.mkdtemp(prefix="MissingModalityTools-demo-", dir=logic.temp_root)
    try:
        folder = make_phantom_case(logic, work, seed, size)
        loaded = load_case_volumes(logic.scene, folder, DEMO_MODALITIES, f"Demo{seed:03d}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    chosen, notes = assign_by_name(loaded)
    if sorted(chosen) != sorted(DEMO_MODALITIES) or notes:
        nodeio.remove_nodes(logic.scene, loaded)
        raise DemoError(f"The demo volumes were not recognised by name ({sorted(chosen)}, {notes}).")
    return chosen
