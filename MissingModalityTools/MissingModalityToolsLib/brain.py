"""Brain extraction inside Slicer, with an installed extension, before the worker runs.

The models need skull-stripped inputs. When one of Slicer's brain-extraction
extensions is installed, it strips each input here, through Slicer's own
module calls, and the worker only registers and resamples; without one, the
worker's offline atlas-based extraction (``medmodels.brain_extraction``) runs
where the inspection finds a skull.

- HDBrainExtraction (module "HDBrainExtractionTool", HD-BET: a deep-learning
  extractor, the better one) is preferred; SwissSkullStripper (a CLI module,
  atlas-based) next.
- The extension runs on a copy of each input read back from the file written
  for the worker, never on the user's node; the copies and the extension's
  outputs are removed from the scene again, whatever happens.
- ``plan_extraction`` decides which extractor runs and what ``--prepare``
  the worker gets, from the mode, the installed extensions and whether the
  inputs already look skull-stripped; it is pure, so it is tested with any
  availability (neither extension exists in slicer-core).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Extractor:
    """A brain-extraction extension.

    Attributes:
        name: the extension's name, as the log says it.
        module: its module's attribute of ``slicer.modules`` (lower case).
    """

    name: str
    module: str


#: In order of preference.
EXTRACTORS = (
    Extractor("HDBrainExtraction", "hdbrainextractiontool"),
    Extractor("SwissSkullStripper", "swissskullstripper"),
)


def installed_extractors(modules=None) -> list[str]:
    """Names of the ``EXTRACTORS`` whose module is loaded, in order of preference.

    Args:
        modules: the object whose attributes are the loaded modules
            (None: ``slicer.modules``, empty outside the Slicer application).
    """
    if modules is None:
        try:
            import slicer

            modules = getattr(slicer, "modules", None)
        except ImportError:
            modules = None
    return [e.name for e in EXTRACTORS if modules is not None and hasattr(modules, e.module)]


@dataclass(frozen=True)
class ExtractionPlan:
    """What the brain extraction of a run is.

    Attributes:
        extractor: the extension that runs in Slicer, or None.
        worker_prepare: the ``--prepare`` mode the worker gets.
        reason: one sentence for the log.
    """

    extractor: str | None
    worker_prepare: str
    reason: str


def plan_extraction(mode: str, installed: Sequence[str], skull_stripped: bool | None) -> ExtractionPlan:
    """Which extractor runs in Slicer, and the worker's ``--prepare``.

    Args:
        mode: the run's ``prepare`` option: "auto", "on" or "off".
        installed: ``installed_extractors()``.
        skull_stripped: whether the inputs already look skull-stripped (the
            worker's own criterion); None when not measured (only "auto"
            with an extension installed needs it).

    After an extension has stripped the inputs, the worker gets "auto": it
    registers where the inputs are not co-registered and finds them
    skull-stripped, so it does not strip them again.
    """
    if mode == "off":
        return ExtractionPlan(None, "off", "Preparation is off: no registration, no brain extraction.")
    if not installed:
        return ExtractionPlan(
            None,
            mode,
            "No brain-extraction extension (HDBrainExtraction, SwissSkullStripper) is installed: the worker's "
            "offline atlas-based extraction runs where the inputs are not skull-stripped.",
        )
    if mode == "auto" and skull_stripped:
        return ExtractionPlan(None, "auto", "The inputs look skull-stripped: no brain extraction.")
    name = installed[0]
    return ExtractionPlan(
        name,
        "auto",
        f"Brain extraction: {name} runs in Slicer on a copy of each input; the worker then only registers "
        "and resamples (--prepare auto), as the inputs are skull-stripped.",
    )


def inputs_look_skull_stripped(files: Mapping[str, str]) -> bool:
    """The worker's own criterion (``medmodels.inspection.skull_figures``) on the written input files."""
    from medmodels.inspection import skull_figures
    from medmodels.io import read_image

    return all(skull_figures(read_image(path), key)["stripped"] for key, path in files.items())


def run_hd_brain_extraction(scene, input_node, output_node) -> None:
    """HDBrainExtraction's logic (HD-BET) on ``input_node`` into ``output_node``."""
    import HDBrainExtractionTool

    logic = HDBrainExtractionTool.HDBrainExtractionToolLogic()
    logic.setupPythonRequirements()  # installs HD-BET on first use, with the extension's own confirmation
    logic.process(input_node, output_node, None, "auto")


def run_swiss_skull_stripper(scene, input_node, output_node) -> None:
    """SwissSkullStripper's CLI (its bundled atlas) on ``input_node`` into ``output_node``."""
    import slicer

    mask = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "brain mask (temporary)")
    try:
        parameters = {"patientVolume": input_node, "patientOutputVolume": output_node, "patientMaskLabel": mask}
        slicer.cli.runSync(slicer.modules.swissskullstripper, None, parameters, update_display=False)
    finally:
        scene.RemoveNode(mask)


#: Extractor name -> function(scene, input node, output node) that fills the output node.
RUNNERS: dict[str, Callable] = {
    "HDBrainExtraction": run_hd_brain_extraction,
    "SwissSkullStripper": run_swiss_skull_stripper,
}


def extract_brains(
    scene, name: str, files: Mapping[str, str], runner: Callable, on_step: Callable[[int, str], None] | None = None
) -> dict[str, str]:
    """Run one extractor on a copy of each input file; modality key -> the stripped file.

    Args:
        scene: the MRML scene the extension works in (the copies live there
            only while it runs).
        name: the extractor's name (for node names and messages).
        files: modality key -> input file written for the worker.
        runner: ``RUNNERS[name]`` (or another function of the same form).
        on_step: called with (index, modality key) before each input.

    Returns:
        modality key -> ``<key>_brain.nrrd`` beside its input. Raises
        whatever the extension raises; nothing it made stays in the scene.
    """
    from MissingModalityToolsLib import nodes as nodeio

    out = {}
    for index, (key, path) in enumerate(files.items()):
        if on_step is not None:
            on_step(index, key)
        made = []
        try:
            copy = nodeio.read_scalar_volume(scene, path, f"{key} ({name} input, temporary)")
            made.append(copy)
            stripped = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{key} ({name} output, temporary)")
            made.append(stripped)
            runner(scene, copy, stripped)
            out[key] = os.path.join(os.path.dirname(path), f"{key}_brain.nrrd")
            nodeio.write_volume(stripped, out[key])
        finally:
            nodeio.remove_nodes(scene, made)
    return out
