"""A stand-in for ``python -m medmodels run`` that keeps the contract of
docs/architecture.md but needs no model weights.

The logic tests use it to drive every path of the module's logic (progress,
cancel in mid-run, a crashing worker, a failing worker, a run that never
writes its manifest, grids and oblique geometry) quickly and
deterministically. It is not a model: a synthesised modality is the reference
input scaled, and the segmentation is intensity bands of the reference input.
The end-to-end tests run the real ``medmodels``. The file names and the
manifest are those of ``medmodels.contract`` (the worker's Python has
medmodels on its path, as the real worker's does), and the defaults those of
``medmodels.options.RunOptions``.

Behaviour is chosen with the environment variable MMT_WORKER_MODE:
  ok (default) | slow | crash | error | nomanifest | badlabel | orphan
(orphan: finishes normally but leaves a child process holding its stdout)
MMT_WORKER_RECORD=<folder> makes it copy its argv, environment flags, inputs,
outputs and manifest there, for the tests to compare against.

``--prepare`` (auto | on | off) gives a plausible "preparation" entry in the
manifest, shaped as ``medmodels.preparation`` writes it: with more than one
input and preparation not off, every other input is "registered" onto the
reference with a known rigid matrix (``standin_matrix``), and the inputs are
"brain-extracted" when ``medmodels.inspection.looks_skull_stripped`` says they
are not skull-stripped (or with "on").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import SimpleITK as sitk
from medmodels.contract import MANIFEST_NAME, SEGMENTATION, SYNTHESISED, Manifest, planned_files
from medmodels.image import Image
from medmodels.inspection import looks_skull_stripped
from medmodels.modalities import MODALITY_KEYS as KEYS
from medmodels.options import RunOptions


def print_progress(fraction: float, message: str) -> None:
    print(f"PROGRESS {fraction:.3f} {message}", flush=True)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """The contract's command line (``run --flair F ... --out OUT ...``)."""
    p = argparse.ArgumentParser()
    p.add_argument("command")
    for k in KEYS:
        p.add_argument(f"--{k}")
    p.add_argument("--out", dest="output_dir", required=True)
    p.add_argument("--synthesize", action="store_true")
    p.add_argument("--segment", action="store_true")
    p.add_argument("--segment-on", default="acquired")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=RunOptions().steps)
    p.add_argument("--samples", type=int, default=RunOptions().samples)
    p.add_argument("--cleanup", dest="cleanup", action="store_true")
    p.add_argument("--no-cleanup", dest="cleanup", action="store_false")
    p.add_argument("--region-map", dest="region_map", action="store_true", default=RunOptions().region_map)
    p.add_argument("--no-region-map", dest="region_map", action="store_false")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels", choices=("2018", "2023"), default="2018")
    p.add_argument("--seg-checkpoint")
    p.add_argument("--syn-checkpoint")
    p.add_argument("--prepare", choices=("auto", "on", "off"), default="auto")
    return p.parse_args(argv)


def standin_matrix(index: int, centre) -> np.ndarray:
    """The "registration" of the ``index``-th other input (1, 2, ...): 4x4, LPS mm,
    reference point -> moving point (medmodels.registration's convention): a
    rotation of ``3 * index`` degrees about the superior axis through ``centre``
    and a shift of ``index * (2, -3, 1)`` mm."""
    angle = np.deg2rad(3.0 * index)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    centre = np.asarray(centre, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = centre - rotation @ centre + index * np.array([2.0, -3.0, 1.0])
    return m


def preparation_record(mode: str, images: dict, ref_key: str) -> tuple[dict, list[str]]:
    """The manifest's "preparation" entry and the run's notes, with a PROGRESS line per step."""
    print_progress(0.0, "Inspecting the inputs (skull-stripped? co-registered?)")
    # The library's one verdict (torch-free), as the real worker's inspection reaches it.
    stripped = looks_skull_stripped({k: Image.from_sitk(v) for k, v in images.items()})
    others = [k for k in KEYS if k in images and k != ref_key]
    findings = []
    if others:
        findings.append(
            {
                "code": "not_coregistered",
                "keys": others,
                "message": f"{', '.join(others)} do not line up with {ref_key}: they are registered onto it "
                "(--prepare auto), or register them before the run.",
            }
        )
    if not stripped:
        findings.append(
            {
                "code": "not_skull_stripped",
                "keys": list(images),
                "message": "The inputs are not skull-stripped: the brain is extracted (--prepare auto), "
                "or strip them before the run.",
            }
        )
    record = {"mode": mode, "inspection": {"reference": ref_key, "findings": findings}, "steps": []}
    if mode == "off":
        return record, [f"Warning: {f['message']}" for f in findings]
    notes = [f["message"] for f in findings]
    ref = images[ref_key]
    centre = ref.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in ref.GetSize()])
    if others:
        record["steps"].append("registration")
        record["registration"] = {}
        for index, key in enumerate(others, start=1):
            print_progress(0.02 + 0.08 * index / len(others), f"Registering {index}/{len(others)}")
            matrix = standin_matrix(index, centre)
            record["registration"][key] = {"matrix": matrix.tolist(), "mean_shift_mm": 3.0 * index}
            notes.append(f"{key} was registered onto {ref_key} (stand-in: a known rigid matrix).")
    if mode == "on" or not stripped:
        print_progress(0.12, "Extracting the brain")
        record["steps"].append("brain_extraction")
        record["brain_extraction"] = {"method": "stand-in", "used": list(images), "volume_ml": 0.0}
        notes.append("The brain was extracted (stand-in: nothing removed).")
    return record, notes


def start_child(record: str | None, seconds: int) -> None:
    """A child process that outlives this one (it inherits stdout); its ID goes to the record."""
    child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    if record:  # written whole, then renamed: a cancel never leaves a reader an empty file
        path = os.path.join(record, "child.pid")
        with open(path + ".tmp", "w") as f:
            f.write(str(child.pid))
        os.replace(path + ".tmp", path)


def misbehave(mode: str, record: str | None, write, ref_arr: np.ndarray) -> int | None:
    """The failure modes before any output: an ERROR line, a crash, a slow run; an exit code or None."""
    if mode == "error":
        print("ERROR: The T2 volume is all zeros: choose the T2 series with image data.", file=sys.stderr, flush=True)
        return 2
    if mode in ("slow", "crash"):
        write(ref_arr, "partial.nii.gz")  # a partial output that must not survive
    if mode == "crash":
        print_progress(0.1, "about to crash")
        print("Traceback (most recent call last): simulated segfault", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    if mode == "slow":
        start_child(record, 600)
        for i in range(600):
            print_progress(i / 600, f"step {i}")
            time.sleep(0.1)
    return None


def write_stand_in_outputs(a: argparse.Namespace, mode: str, write, ref_arr: np.ndarray, inputs: dict) -> Manifest:
    """ "Synthesis" (the reference scaled) and "segmentation" (intensity bands of the reference);
    returns the manifest listing what was written."""
    manifest = Manifest(label_convention="2018")
    files = planned_files(inputs, a)
    synthesised = [f for f in files if f.kind == SYNTHESISED]
    for output in files:
        if output.kind == SYNTHESISED:
            print_progress(0.2 + 0.5 * synthesised.index(output) / len(synthesised), f"synthesising {output.key}")
            write(ref_arr * 0.5 + 7.0, output.name)
        elif output.kind == SEGMENTATION:
            print_progress(0.8, "segmenting")
            write(segmentation_labels(ref_arr, mode), output.name)
        else:
            write(np.full_like(ref_arr, 0.25), output.name)
        manifest.list_file(output, output.name)
    return manifest


def segmentation_labels(ref_arr: np.ndarray, mode: str) -> np.ndarray:
    """BraTS 2018 labels from intensity bands of the reference (ET as 3 with MMT_WORKER_MODE=badlabel)."""
    labels = np.zeros(ref_arr.shape, np.uint8)
    hi = ref_arr.max()
    labels[ref_arr > 0.6 * hi] = 2
    labels[ref_arr > 0.8 * hi] = 1
    labels[ref_arr > 0.9 * hi] = 4
    if mode == "badlabel":
        labels[labels == 4] = 3
    return labels


def main(argv: list[str]) -> int:
    a = parse_arguments(argv)
    mode = os.environ.get("MMT_WORKER_MODE", "ok")
    record = os.environ.get("MMT_WORKER_RECORD")
    if record:
        os.makedirs(record, exist_ok=True)
        with open(os.path.join(record, "argv.json"), "w") as f:
            json.dump(
                {
                    "argv": argv,
                    "MEDMODELS_PROGRESS": os.environ.get("MEDMODELS_PROGRESS"),
                    "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                },
                f,
            )
    inputs = {k: getattr(a, k) for k in KEYS if getattr(a, k)}
    print("Device: cpu (the stand-in worker runs no model)", flush=True)  # first line, as medmodels run prints it
    print_progress(0.0, "reading inputs")
    images = {k: sitk.ReadImage(v) for k, v in inputs.items()}
    if record:
        for k, v in inputs.items():
            shutil.copy(v, os.path.join(record, f"input_{k}.nrrd"))
    ref_key = next(iter(images))
    ref = images[ref_key]
    out = a.output_dir
    os.makedirs(out, exist_ok=True)

    def write(array: np.ndarray, name: str) -> None:
        img = sitk.GetImageFromArray(array)
        img.CopyInformation(ref)
        sitk.WriteImage(img, os.path.join(out, name))
        if record:
            sitk.WriteImage(img, os.path.join(record, name))

    ref_arr = sitk.GetArrayFromImage(ref).astype(np.float32)
    preparation, notes = preparation_record(a.prepare, images, ref_key)
    code = misbehave(mode, record, write, ref_arr)
    if code is not None:
        return code
    manifest = write_stand_in_outputs(a, mode, write, ref_arr, inputs)
    print_progress(1.0, "done")
    if mode != "nomanifest":
        manifest.reference, manifest.inputs, manifest.device = ref_key, inputs, "cpu"
        manifest.notes, manifest.preparation = notes, preparation
        for folder in [out] + ([record] if record else []):
            manifest.write(os.path.join(folder, MANIFEST_NAME))
    if mode == "orphan":
        start_child(record, 120)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
