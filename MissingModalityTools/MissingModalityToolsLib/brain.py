"""Where a run's brain extraction happens, as the log says it: in the worker, never in Slicer.

Brain extraction is part of the worker's preparation
(``medmodels.preparation`` -> ``medmodels.brain_extraction``): deepbet's
networks, which ship inside the deepbet package, on the run's device, with
threshold-morphology as a reported fallback. It runs in the worker process
so that Slicer's panel stays live, its progress shows in the bar, Cancel
stops it, and nothing is downloaded or installed: earlier versions ran
HDBrainExtraction or SwissSkullStripper here, on Slicer's main thread,
where HD-BET's first use downloaded code and weights without asking, the
device choice was ignored and a failed CLI left nodes in the scene.

Nothing here touches the scene or imports Slicer, so it is tested as it is.
"""

from __future__ import annotations


def extraction_line(prepare: str, device: str) -> str:
    """One log line at the start of a run: whether and where the brain is extracted.

    Args:
        prepare: the run's ``prepare`` option: "auto", "on" or "off".
        device: the run's ``device`` option, which the worker's extractor runs on.
    """
    if prepare == "off":
        return "Brain extraction: off (Prepare inputs: off)."
    when = "where the inputs are not skull-stripped" if prepare == "auto" else "on every run (Prepare inputs: on)"
    return (
        f"Brain extraction: in the worker, {when}: deepbet on device '{device}', threshold-morphology as a "
        "reported fallback; its progress shows in the bar and Cancel stops it."
    )
