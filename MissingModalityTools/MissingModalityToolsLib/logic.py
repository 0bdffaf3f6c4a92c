"""The module's logic, free of Qt: check the inputs, run medmodels, load the results.

It takes the scene and the nodes as arguments, reports progress through
callbacks and raises exceptions, so the same code runs in the Slicer panel,
in Slicer's Python console, and in pytest against slicer-core's real scene.

A run is two halves: ``start`` (write the inputs, launch the worker) and
``finish`` (load the results as new nodes). Between them the caller keeps
calling ``Run.poll()``: the panel from a QTimer, ``run_blocking`` from a loop.
The scene is changed only by ``finish`` of a successful run, and a failure
while loading removes whatever was added: a cancelled, crashed or failed run
leaves the scene as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from medmodels.errors import InputError
from medmodels.modalities import BY_KEY, MODALITY_KEYS, AvailabilityMask, assign_modalities, check_distinct_sources

from MissingModalityToolsLib import nodes as nodeio
from MissingModalityToolsLib.options import RunOptions, build_arguments, output_names, quote_command, segmentation_name
from MissingModalityToolsLib.worker import RunCancelled, WorkerError, WorkerProcess, default_python

ProgressCallback = Callable[[float, str], None]
LogCallback = Callable[[str], None]


def display_name(key: str) -> str:
    return BY_KEY[key].display


def selected_inputs(inputs: Mapping[str, object]) -> dict:
    """The chosen nodes only, in canonical modality order."""
    return {k: inputs[k] for k in MODALITY_KEYS if inputs.get(k) is not None}


def availability(inputs: Mapping[str, object]) -> AvailabilityMask | None:
    """The availability mask of a selection, or None when nothing is selected."""
    chosen = selected_inputs(inputs)
    return AvailabilityMask.from_keys(chosen) if chosen else None


def describe_availability(inputs: Mapping[str, object], options: RunOptions | None = None) -> str:
    """One line for the panel: which modalities are acquired and what becomes of the rest."""
    mask = availability(inputs)
    if mask is None:
        return "No volume selected."
    parts = [("\u2713 " if a else "\u2717 ") + display_name(k) for k, a in zip(MODALITY_KEYS, mask)]
    text = "   ".join(parts) + f"   (mask {mask.bits})"
    if mask.missing_keys:
        fate = "will be synthesised" if options is None or options.synthesize else "left out"
        text += f"; {', '.join(display_name(k) for k in mask.missing_keys)} {fate}"
    return text


def assign_by_name(volume_nodes: Sequence) -> tuple[dict, list[str]]:
    """Fill the modality slots from node names with medmodels' name registry.

    Returns (modality key -> node, sentences about names that were ambiguous).
    Two nodes with the same name are never guessed between.
    """
    by_name: dict[str, list] = {}
    for node in volume_nodes:
        by_name.setdefault(node.GetName(), []).append(node)
    assignment = assign_modalities(by_name)
    chosen, notes = {}, list(assignment.problems())
    for key, name in assignment.assigned.items():
        if len(by_name[name]) == 1:
            chosen[key] = by_name[name][0]
        else:
            notes.append(f"{len(by_name[name])} volumes are named '{name}'; choose one for {display_name(key)}.")
    return chosen, notes


def input_problems(inputs: Mapping[str, object], options: RunOptions) -> list[str]:
    """Why the run cannot start, as sentences that each name the fix; empty = it can.

    The panel shows these as the Apply button's tooltip.
    """
    problems = list(options.problems())
    unknown = sorted(set(inputs) - set(MODALITY_KEYS))
    if unknown:
        problems.append(f"Unknown modality slot(s) {unknown}: use {', '.join(MODALITY_KEYS)}.")
    chosen = selected_inputs(inputs)
    if not chosen:
        problems.append("No volume selected: choose at least one of FLAIR, T1, T1c or T2.")
        return problems
    try:
        check_distinct_sources({k: n.GetID() or str(id(n)) for k, n in chosen.items()})
    except InputError as e:
        message = str(e)
        for n in chosen.values():
            if n.GetID():
                message = message.replace(f"'{n.GetID()}'", f"'{n.GetName()}'")
        problems.append(message)
    usable = {}
    for key, node in chosen.items():
        label = f"{display_name(key)} volume '{node.GetName()}'"
        image = node.GetImageData()
        if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
            problems.append(f"{label} is not a scalar MR volume: choose a scalar volume.")
        elif image is None or min(image.GetDimensions()) < 1 or image.GetNumberOfPoints() == 0:
            problems.append(f"{label} has no voxels: load the image again or choose another volume.")
        elif image.GetNumberOfScalarComponents() != 1:
            problems.append(f"{label} has {image.GetNumberOfScalarComponents()} components per voxel: "
                            "choose a single-component (grey-scale) volume.")
        elif node.GetParentTransformNode() is not None:
            problems.append(f"{label} is under transform '{node.GetParentTransformNode().GetName()}': "
                            "harden the transform first (Data module, right-click, Harden transform), "
                            "so the worker sees the volume where the scene shows it.")
        else:
            usable[key] = node
    # Grids may differ (medmodels resamples onto the reference input's grid),
    # but volumes that do not even overlap cannot be brought together.
    if len(usable) > 1:
        ref_key = next(iter(usable))
        ref_bounds = nodeio.ras_bounds(usable[ref_key])
        for key, node in list(usable.items())[1:]:
            if not nodeio.bounds_overlap(ref_bounds, nodeio.ras_bounds(node)):
                problems.append(
                    f"{display_name(key)} volume '{node.GetName()}' does not overlap the reference "
                    f"{display_name(ref_key)} volume '{usable[ref_key].GetName()}' in space, so their grids "
                    "cannot be brought together: choose volumes of the same patient and session, "
                    "or register them first."
                )
    mask = AvailabilityMask.from_keys(chosen)
    if options.synthesize and not options.segment and mask.is_complete:
        problems.append("All four modalities are selected, so there is nothing to synthesise: "
                        "tick 'Segment tumour', or leave out a modality to synthesise it.")
    return problems


@dataclass
class RunResult:
    """The nodes a successful run added to the scene.

    Attributes:
        synthesized: modality key -> new scalar volume node.
        uncertainty: modality key -> standard-deviation volume (``samples > 1``).
        segmentation: the new segmentation node, or None when not segmenting.
        reference_key: modality whose grid the outputs are on.
        seconds: wall time of the run.
    """

    synthesized: dict = field(default_factory=dict)
    uncertainty: dict = field(default_factory=dict)
    segmentation: object = None
    reference_key: str = ""
    seconds: float = 0.0

    def nodes(self) -> list:
        return [*self.synthesized.values(), *self.uncertainty.values(),
                *([self.segmentation] if self.segmentation is not None else [])]


class Run:
    """A run in progress: the worker process, its folders, and the caller's callbacks."""

    def __init__(self, inputs: dict, options: RunOptions, worker: WorkerProcess, temp_dir: str,
                 output_dir: str, on_progress: ProgressCallback | None, on_log: LogCallback | None):
        self.inputs = inputs
        self.options = options
        self.worker = worker
        self.temp_dir = temp_dir
        self.output_dir = output_dir
        self.on_progress = on_progress
        self.on_log = on_log
        self.started = time.monotonic()
        self.last_fraction = 0.0
        self._last_phase = None

    def poll(self) -> bool:
        """Pass new worker lines to the callbacks; True while the run is still going."""
        for event in self.worker.poll():
            if event.kind == "progress":
                self.last_fraction = event.fraction
                if self.on_progress:
                    self.on_progress(event.fraction, event.text)
                # The log gets one line per phase ("Synthesising", "Segmenting"), not one per step.
                phase = event.text.split(" ", 1)[0]
                if self.on_log and event.text and phase != self._last_phase:
                    self.on_log(f"{event.fraction:4.0%} {event.text}")
                self._last_phase = phase
            elif self.on_log:
                self.on_log(event.text)
        return not self.worker.finished()

    def cancel(self) -> None:
        """Kill the worker and its children now; ``finish`` then raises RunCancelled."""
        self.worker.cancel()

    @property
    def cancelled(self) -> bool:
        return self.worker.cancelled


class MissingModalityLogic:
    """Synthesis and segmentation of one case in a scene.

    Args:
        scene: the MRML scene the inputs are in and the results go to.
        worker_command: the command before ``run ...``; default
            ``[<python>, "-m", "medmodels"]``, with PythonSlicer as the Python
            inside Slicer and this interpreter elsewhere.
        pythonpath: folders put in front of the worker's PYTHONPATH (where
            ``medmodels`` is installed, next to the module).
        base_env: the environment the worker starts from (default: this
            process's); Slicer passes its startup environment.
        temp_root: where the per-run temporary folder is made.
        extra_arguments: appended to every ``run`` command line, e.g.
            ``["--seg-checkpoint", path]`` for weights other than the bundled ones.
    """

    def __init__(self, scene, worker_command: Sequence[str] | None = None, pythonpath: Sequence[str] = (),
                 base_env: Mapping[str, str] | None = None, temp_root: str | None = None,
                 extra_arguments: Sequence[str] = ()):
        self.scene = scene
        self.worker_command = list(worker_command) if worker_command else [default_python(), "-m", "medmodels"]
        self.pythonpath = [str(p) for p in pythonpath]
        self.base_env = dict(base_env) if base_env is not None else dict(os.environ)
        self.temp_root = temp_root
        self.extra_arguments = [str(a) for a in extra_arguments]

    # -- checks ----------------------------------------------------------------
    def problems(self, inputs: Mapping[str, object], options: RunOptions) -> list[str]:
        problems = input_problems(inputs, options)
        for node in selected_inputs(inputs).values():
            if node.GetScene() is not self.scene:
                problems.append(f"Volume '{node.GetName()}' is not in this scene: choose a volume from the scene.")
        return problems

    # -- the run -----------------------------------------------------------------
    def environment(self) -> dict:
        env = dict(self.base_env)
        env["MEDMODELS_PROGRESS"] = "lines"  # PROGRESS lines instead of a tqdm bar (the contract)
        env["PYTHONUNBUFFERED"] = "1"  # lines arrive as they are printed, not at exit
        env["PYTHONIOENCODING"] = "utf-8"
        if self.pythonpath:
            old = env.get("PYTHONPATH", "")
            env["PYTHONPATH"] = os.pathsep.join(self.pythonpath + ([old] if old else []))
        return env

    def start(self, inputs: Mapping[str, object], options: RunOptions,
              on_progress: ProgressCallback | None = None, on_log: LogCallback | None = None) -> Run:
        """Check the inputs, write them to a temporary folder and launch the worker.

        Raises InputError (listing every problem) before anything is written.
        """
        problems = self.problems(inputs, options)
        if problems:
            raise InputError(" ".join(problems))
        chosen = selected_inputs(inputs)
        temp_dir = tempfile.mkdtemp(prefix="MissingModalityTools-", dir=self.temp_root)
        try:
            input_dir = os.path.join(temp_dir, "inputs")
            output_dir = os.path.join(temp_dir, "outputs")
            os.makedirs(input_dir)
            files = {}
            for key, node in chosen.items():
                files[key] = os.path.join(input_dir, f"{key}.nrrd")
                nodeio.write_volume(node, files[key])
            command = self.worker_command + build_arguments(files, output_dir, options) + self.extra_arguments
            if on_log:
                on_log("Running: " + quote_command(command))
            worker = WorkerProcess(command, self.environment(), cwd=temp_dir)
            worker.start()
        except BaseException:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        return Run(chosen, options, worker, temp_dir, output_dir, on_progress, on_log)

    def finish(self, run: Run) -> RunResult:
        """Load a finished run's results as new nodes; always removes the temporary folder.

        Raises RunCancelled or WorkerError with the scene unchanged.
        """
        try:
            if run.worker.running:
                run.worker.wait()
            run.poll()  # the last lines, so the log is complete
            if run.cancelled:
                raise RunCancelled("Cancelled: the worker was stopped and nothing was added to the scene.")
            if run.worker.returncode != 0:
                raise WorkerError(run.worker.failure_message())
            manifest_path = os.path.join(run.output_dir, "manifest.json")
            if not os.path.exists(manifest_path):
                raise WorkerError("The worker exited without writing manifest.json, so its outputs may be "
                                  "incomplete; nothing was loaded. Rerun, and report it with the log if it repeats.")
            with open(manifest_path, encoding="utf-8") as f:
                manifest = json.load(f)
            result = self._load(run, manifest)
            result.seconds = time.monotonic() - run.started
            return result
        finally:
            shutil.rmtree(run.temp_dir, ignore_errors=True)

    def _load(self, run: Run, manifest: dict) -> RunResult:
        mask = AvailabilityMask.from_keys(run.inputs)
        ref_key = manifest.get("reference") if manifest.get("reference") in run.inputs else next(iter(run.inputs))
        reference = run.inputs[ref_key]
        prefix = run.options.name_prefix
        result = RunResult(reference_key=ref_key)
        added = []

        def expect(filename: str, listed=None) -> str:
            # The manifest names the files; the contract's names are the fallback.
            filename = listed or filename
            path = os.path.join(run.output_dir, os.path.basename(filename))
            if not os.path.exists(path):
                raise WorkerError(f"The worker reported success but did not write {filename}. "
                                  "The medmodels version may not match the module: reinstall the extension.")
            return path

        try:
            if run.options.synthesize:
                for key in mask.missing_keys:
                    names = output_names(display_name(key), prefix)
                    node = nodeio.read_scalar_volume(self.scene, expect(f"{key}.nii.gz", (manifest.get("synthesised") or {}).get(key)), names["volume"])
                    added.append(node)
                    result.synthesized[key] = node
                    if run.options.samples > 1:
                        std = nodeio.read_scalar_volume(self.scene, expect(f"{key}_std.nii.gz", (manifest.get("uncertainty") or {}).get(key)), names["uncertainty"])
                        added.append(std)
                        result.uncertainty[key] = std
            if run.options.segment:
                seg = nodeio.read_segmentation(self.scene, expect("segmentation.nii.gz", manifest.get("segmentation")),
                                               segmentation_name(prefix), reference,
                                               str(manifest.get("label_convention", "2018")))
                added.append(seg)
                result.segmentation = seg
            for node in [*result.synthesized.values(), *result.uncertainty.values()]:
                if not nodeio.same_grid(node, reference) and run.on_log:
                    run.on_log(f"Note: '{node.GetName()}' is not on the grid of the reference "
                               f"{display_name(ref_key)} volume '{reference.GetName()}'.")
            nodeio.place_with(self.scene, added, reference)
        except BaseException:
            nodeio.remove_nodes(self.scene, added)
            raise
        return result

    def run_blocking(self, inputs: Mapping[str, object], options: RunOptions,
                     on_progress: ProgressCallback | None = None, on_log: LogCallback | None = None,
                     should_cancel: Callable[[], bool] | None = None, poll_seconds: float = 0.1,
                     timeout: float | None = None) -> RunResult:
        """Start, wait (cancelling when ``should_cancel()`` says so or at ``timeout``) and finish.

        For scripts, the self-test and pytest; the panel uses start/poll/finish
        so that Slicer stays responsive.
        """
        run = self.start(inputs, options, on_progress, on_log)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while run.poll():
                if should_cancel is not None and should_cancel():
                    run.cancel()
                    break
                if deadline is not None and time.monotonic() > deadline:
                    run.cancel()
                    if on_log:
                        on_log(f"Stopped: the run took longer than {timeout:.0f} s.")
                    break
                time.sleep(poll_seconds)
        except BaseException:
            run.cancel()
            self.finish_quietly(run)
            raise
        return self.finish(run)

    def finish_quietly(self, run: Run) -> None:
        """Clean up a run whose result nobody wants (the panel closing, an exception)."""
        try:
            self.finish(run)
        except (RunCancelled, WorkerError):
            pass
