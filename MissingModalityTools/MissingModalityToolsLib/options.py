"""What the user asked for in the panel, as ``medmodels``'s own run options.

The options, their defaults, their checks and their command-line flags are
``medmodels.options.RunOptions`` (the worker runs ``medmodels run``); this
file only builds them from the parameter node, adds the one choice that is
the module's own (the prefix of output node names), and names the nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from medmodels.options import DEVICES, PREPARE_MODES, SEGMENT_ON, RunOptions  # noqa: F401  (the panel's choices are the library's)


@dataclass(frozen=True)
class PanelOptions(RunOptions):
    """``medmodels.options.RunOptions`` plus what only the module uses.

    Args:
        name_prefix: put before every output node name (e.g. a case ID);
            not sent to the worker.
        (the other fields: see ``medmodels.options.RunOptions``; ``steps``
        0 is the model's own number of sampling steps.)
    """

    name_prefix: str = ""


def options_from_parameter_node(node) -> PanelOptions:
    """The run options the panel's parameter node holds.

    Args:
        node: the module's parameter node (its fields ``synthesize``,
            ``segment``, ``segmentOn``, ``device``, ``steps``, ``samples``,
            ``cleanup``, ``regionMap``, ``seed``, ``prepare``, ``namePrefix``).
    """
    return PanelOptions(
        synthesize=node.synthesize,
        segment=node.segment,
        segment_on=node.segmentOn,
        device=node.device,
        steps=int(node.steps),
        samples=int(node.samples),
        cleanup=node.cleanup,
        region_map=node.regionMap,
        seed=int(node.seed),
        prepare=node.prepare,
        name_prefix=node.namePrefix,
    )


def build_arguments(input_files: Mapping[str, str], output_dir: str, options: RunOptions) -> list[str]:
    """The arguments after ``medmodels`` for one run (the contract's command line).

    Args:
        input_files: modality key -> file written for it (acquired ones only).
        output_dir: folder the worker writes its results into (``--out``).
        options: the run's options; every one is written (``to_argv``), so
            the log shows each choice.
    """
    args = ["run"]
    for key, path in input_files.items():
        args += [f"--{key}", str(path)]
    return args + ["--out", str(output_dir)] + options.to_argv()


def output_node_name(output, display: str, prefix: str = "") -> str:
    """Node name of one of the worker's output files ("T1c (synthesised)", "Tumour segmentation").

    Args:
        output: the file (``medmodels.contract.OutputFile``).
        display: display name of its modality ("T1c"); unused for the segmentation.
        prefix: put before the name (the run's name prefix).
    """
    from medmodels.contract import SEGMENTATION, UNCERTAINTY

    if output.kind == SEGMENTATION:
        return segmentation_name(prefix)
    return f"{prefix}{display} ({'synthesis uncertainty' if output.kind == UNCERTAINTY else 'synthesised'})"


def segmentation_name(prefix: str = "") -> str:
    """Node name of the segmentation ("Tumour segmentation")."""
    return f"{prefix}Tumour segmentation"
