"""The module's one logic, free of Qt: run medmodels on the chosen volumes, load the results.

``MissingModalityToolsLogic`` takes the scene and the nodes as arguments,
reports progress through callbacks and raises exceptions, so the same object
runs in the Slicer panel, in Slicer's Python console, and in pytest against
slicer-core's real scene. The module file's ``MissingModalityToolsLogic``
subclasses it only to fill in Slicer's scene, PythonSlicer, startup
environment and temporary folder, and to add the parameter node; the panel
makes one and keeps it. Whether a run can start is decided in ``inputs.py``.

A run is two halves: ``start`` (write the inputs, launch the worker) and
``finish`` (load the results as new nodes). Between them the caller keeps
calling ``Run.poll()``: the panel from a QTimer, ``run_blocking`` from a loop.
The scene is changed only by ``finish`` of a successful run, and a failure
while loading removes whatever was added: a cancelled, crashed or failed run
leaves the scene as it was.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable

# Only the standard library and the worker at import time: the Slicer module
# file imports this file at Slicer's start, and medmodels (numpy, SimpleITK)
# with the input checks and node I/O built on it are imported when a run
# starts, so a broken install is reported at Apply, not as a module that
# fails to load.
from MissingModalityToolsLib.worker import RunCancelled, WorkerError, WorkerProcess, default_python

ProgressCallback = Callable[[float, str], None]
LogCallback = Callable[[str], None]


@dataclass(frozen=True)
class ExpectedOutput:
    """One file the worker is to write, and the node it becomes.

    Attributes:
        file: the file, as ``medmodels.contract`` names it (its kind, modality
            key and contract name, used when the manifest does not name the file).
        node_name: name of the new node.
    """

    file: object
    node_name: str


def plan_run(options, input_files: Mapping[str, str], output_dir: str) -> tuple[list[str], list[ExpectedOutput]]:
    """Everything the run takes from the options: the worker's arguments and the outputs to load.

    The one place in this file that reads the options (built in options.py),
    so a change of the options touches only this function.

    Args:
        options: the run's RunOptions.
        input_files: modality key -> file written for it (acquired ones only).
        output_dir: folder the worker writes into.
    """
    from medmodels.contract import planned_files

    from MissingModalityToolsLib.inputs import display_name
    from MissingModalityToolsLib.options import build_arguments, output_node_name

    arguments = build_arguments(input_files, output_dir, options)
    outputs = [
        ExpectedOutput(f, output_node_name(f, display_name(f.key) if f.key else "", options.name_prefix))
        for f in planned_files(input_files, options)
    ]
    return arguments, outputs


@dataclass
class RunResult:
    """The nodes a successful run added to the scene.

    Attributes:
        synthesized: modality key -> new scalar volume node.
        uncertainty: modality key -> standard-deviation volume (``samples > 1``).
        segmentation: the new segmentation node, or None when not segmenting.
        reference_key: modality whose grid the outputs are on.
        seconds: wall time of the run.
        transforms: modality key -> linear transform node of its registration
            onto the reference (moving -> reference, RAS), applied to nothing.
        preparation: the manifest's preparation record (empty from an older worker).
        device: the device the worker ran on, as its manifest records it ("cpu",
            "cuda (NVIDIA ...)"; empty from an older worker).
    """

    synthesized: dict = field(default_factory=dict)
    uncertainty: dict = field(default_factory=dict)
    segmentation: object = None
    reference_key: str = ""
    seconds: float = 0.0
    transforms: dict = field(default_factory=dict)
    preparation: dict = field(default_factory=dict)
    device: str = ""

    def nodes(self) -> list:
        return [
            *self.synthesized.values(),
            *self.uncertainty.values(),
            *([self.segmentation] if self.segmentation is not None else []),
            *self.transforms.values(),
        ]

    def add(self, output: ExpectedOutput, node) -> None:
        """File a loaded node under its kind."""
        from medmodels.contract import SEGMENTATION, SYNTHESISED

        if output.file.kind == SEGMENTATION:
            self.segmentation = node
        else:
            (self.synthesized if output.file.kind == SYNTHESISED else self.uncertainty)[output.file.key] = node


class Run:
    """A run in progress: the worker process, its folders, and the caller's callbacks.

    Args:
        inputs: modality key -> input node (the chosen ones, canonical order).
        options: the RunOptions it was started with.
        outputs: what ``finish`` is to load, from ``plan_run``.
        worker: the started worker process.
        temp_dir: the run's own temporary folder (removed by ``finish``).
        output_dir: the worker's output folder inside ``temp_dir``.
        on_progress: called with (fraction 0..1, message) for PROGRESS lines.
        on_log: called with each other line, and one line per progress phase.
    """

    def __init__(
        self,
        inputs: dict,
        options,
        outputs: Sequence[ExpectedOutput],
        worker: WorkerProcess,
        temp_dir: str,
        output_dir: str,
        on_progress: ProgressCallback | None,
        on_log: LogCallback | None,
    ):
        self.inputs = inputs
        self.options = options
        self.outputs = list(outputs)
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


class MissingModalityToolsLogic:
    """Synthesis and segmentation of one case at a time in a scene; one object serves every run.

    It holds only its configuration (set once, read by every run), never a
    run's state: each ``start`` returns its own ``Run``.

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

    def __init__(
        self,
        scene,
        worker_command: Sequence[str] | None = None,
        pythonpath: Sequence[str] = (),
        base_env: Mapping[str, str] | None = None,
        temp_root: str | None = None,
        extra_arguments: Sequence[str] = (),
    ):
        self.scene = scene
        self.worker_command = list(worker_command) if worker_command else [default_python(), "-m", "medmodels"]
        self.pythonpath = [str(p) for p in pythonpath]
        self.base_env = dict(base_env) if base_env is not None else dict(os.environ)
        self.temp_root = temp_root
        self.extra_arguments = [str(a) for a in extra_arguments]

    def package_versions(self) -> dict:
        """Python, torch, MONAI, numpy, SimpleITK, scipy and medmodels versions in the worker's Python."""
        from MissingModalityToolsLib.dependencies import worker_package_versions

        return worker_package_versions(self.worker_command[0], self.environment())

    def problems(self, inputs: Mapping[str, object], options) -> list[str]:
        """``inputs.input_problems`` plus nodes from another scene; empty = ``start`` will start."""
        from MissingModalityToolsLib.inputs import input_problems, scene_problems

        return input_problems(inputs, options) + scene_problems(inputs, self.scene)

    def environment(self) -> dict:
        """The worker's whole environment: the base one plus the contract's variables."""
        env = dict(self.base_env)
        env["MEDMODELS_PROGRESS"] = "lines"  # PROGRESS lines instead of a tqdm bar (the contract)
        env["PYTHONUNBUFFERED"] = "1"  # lines arrive as they are printed, not at exit
        env["PYTHONIOENCODING"] = "utf-8"
        if self.pythonpath:
            old = env.get("PYTHONPATH", "")
            env["PYTHONPATH"] = os.pathsep.join(self.pythonpath + ([old] if old else []))
        return env

    def start(
        self,
        inputs: Mapping[str, object],
        options,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
    ) -> Run:
        """Check the inputs, write them to a temporary folder and launch the worker.

        Raises InputError (listing every problem) before anything is written,
        and nodes.NodeError when an input cannot be written.
        """
        from medmodels.errors import InputError

        from MissingModalityToolsLib.brain import extraction_line
        from MissingModalityToolsLib.inputs import selected_inputs

        problems = self.problems(inputs, options)
        if problems:
            raise InputError(" ".join(problems))
        chosen = selected_inputs(inputs)
        temp_dir = tempfile.mkdtemp(prefix="MissingModalityTools-", dir=self.temp_root)
        try:
            output_dir = os.path.join(temp_dir, "outputs")
            files = write_inputs(chosen, os.path.join(temp_dir, "inputs"))
            arguments, outputs = plan_run(options, files, output_dir)
            command = self.worker_command + arguments + self.extra_arguments
            if on_log:
                on_log(extraction_line(options.prepare, options.device))
                on_log("Running: " + shlex.join(command))  # one line a user can rerun by hand
            worker = WorkerProcess(command, self.environment(), cwd=temp_dir)
            worker.start()
        except BaseException:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        return Run(chosen, options, outputs, worker, temp_dir, output_dir, on_progress, on_log)

    def finish(self, run: Run, segmentation_node=None) -> RunResult:
        """Load a finished run's results as new nodes; always removes the temporary folder.

        Args:
            run: what ``start`` returned.
            segmentation_node: an existing segmentation node to put the
                segments in (its old segments are replaced), so that runs do
                not pile up new nodes; None = a new node.

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
            manifest = read_manifest(run.output_dir)
            if run.on_log:
                from MissingModalityToolsLib.preparation import preparation_lines

                for line in preparation_lines(manifest):
                    run.on_log(line)
            result = self._load(run, manifest, segmentation_node)
            result.device = str(manifest.device or "")
            result.seconds = time.monotonic() - run.started
            return result
        finally:
            shutil.rmtree(run.temp_dir, ignore_errors=True)

    def _load(self, run: Run, manifest, segmentation_node=None) -> RunResult:
        """The run's outputs as new nodes placed with the reference input; all or nothing.

        With ``segmentation_node`` the segments go into it once everything
        else has loaded (the last step, so a failure leaves it as it was).
        """
        from medmodels.contract import SEGMENTATION

        from MissingModalityToolsLib import nodes as nodeio
        from MissingModalityToolsLib.inputs import display_name, removed_input_problem
        from MissingModalityToolsLib.preparation import add_registration_transforms

        ref_key = manifest.reference if manifest.reference in run.inputs else next(iter(run.inputs))
        reference = run.inputs[ref_key]
        gone = removed_input_problem(ref_key, reference, self.scene)
        if gone:
            raise WorkerError(gone)
        result = RunResult(reference_key=ref_key, preparation=dict(manifest.preparation))
        added = []
        try:
            # Transforms first: a failure while loading the outputs then removes them too.
            result.transforms = add_registration_transforms(
                self.scene, manifest, ref_key, getattr(run.options, "name_prefix", "")
            )
            added += result.transforms.values()
            for output in run.outputs:
                path = output_path(run.output_dir, manifest, output)
                if output.file.kind == SEGMENTATION:
                    node = nodeio.read_segmentation(
                        self.scene, path, output.node_name, reference, str(manifest.label_convention)
                    )
                else:
                    node = nodeio.read_scalar_volume(self.scene, path, output.node_name)
                added.append(node)
                result.add(output, node)
            for node in [*result.synthesized.values(), *result.uncertainty.values()]:
                if not nodeio.same_grid(node, reference) and run.on_log:
                    run.on_log(
                        f"Note: '{node.GetName()}' is not on the grid of the reference "
                        f"{display_name(ref_key)} volume '{reference.GetName()}'."
                    )
            reuse = segmentation_node is not None and segmentation_node.GetScene() is self.scene
            if reuse and result.segmentation is not None:
                new = result.segmentation
                nodeio.replace_segments(segmentation_node, new, reference)
                nodeio.remove_nodes(self.scene, [new])
                added.remove(new)
                result.segmentation = segmentation_node
            nodeio.place_with(self.scene, added, reference)
        except (nodeio.NodeError, ValueError, KeyError) as e:
            # A worker's file (or manifest entry) that Slicer cannot take is a failed run, handled as one.
            nodeio.remove_nodes(self.scene, added)
            raise WorkerError(str(e)) from e
        except BaseException:
            nodeio.remove_nodes(self.scene, added)
            raise
        return result

    def run_blocking(
        self,
        inputs: Mapping[str, object],
        options,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
        poll_seconds: float = 0.1,
        timeout: float | None = None,
    ) -> RunResult:
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


def write_inputs(chosen: Mapping[str, object], input_dir: str) -> dict[str, str]:
    """Write each chosen node to ``<input_dir>/<key>.nrrd``; modality key -> file.

    The nodes are untouched (standalone storage nodes, see nodes.py).
    """
    from MissingModalityToolsLib import nodes as nodeio

    os.makedirs(input_dir)
    files = {}
    for key, node in chosen.items():
        files[key] = os.path.join(input_dir, f"{key}.nrrd")
        nodeio.write_volume(node, files[key])
    return files


def read_manifest(output_dir: str):
    """The worker's manifest (``medmodels.contract.Manifest``); its absence means an unfinished run.

    Raises:
        WorkerError: the manifest is missing, unreadable or not a medmodels manifest.
    """
    from medmodels.contract import ContractError, Manifest

    try:
        return Manifest.read(output_dir)
    except ContractError as err:
        raise WorkerError(f"{err} Nothing was loaded; report it with the log if it repeats.") from None


def output_path(output_dir: str, manifest, output: ExpectedOutput) -> str:
    """Where the worker wrote ``output``: the manifest names the files, the contract's names are the fallback."""
    filename = manifest.listed(output.file) or output.file.name
    path = os.path.join(output_dir, os.path.basename(filename))
    if not os.path.exists(path):
        raise WorkerError(
            f"The worker reported success but did not write {filename}. "
            "The medmodels version may not match the module: reinstall the extension."
        )
    return path
