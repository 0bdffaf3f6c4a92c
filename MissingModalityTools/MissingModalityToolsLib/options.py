"""What the user asked for, and the ``medmodels run`` command line it becomes.

The command line is the contract of docs/architecture.md; this file is the one
place in the module that spells it, so a change of the contract is a change
here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

# Choices offered in the panel; the values are the contract's flag values.
DEVICES = ("auto", "cuda", "cpu")
SEGMENT_ON = ("acquired", "all")


@dataclass(frozen=True)
class RunOptions:
    """Options of one run.

    Args:
        synthesize: synthesise every missing modality.
        segment: segment the tumour.
        segment_on: "acquired" segments from the acquired volumes only;
            "all" from acquired plus synthesised ones (needs ``synthesize``).
        device: "auto", "cuda" or "cpu".
        steps: diffusion sampling steps (more = slower, usually sharper);
            0 leaves the choice to the model (its recorded default).
        samples: number of synthesis samples; above 1 the worker also writes
            a voxel-wise standard deviation, loaded as an uncertainty volume.
        cleanup: remove small disconnected segmentation islands.
        seed: random seed, so a run can be repeated exactly.
        name_prefix: put before every output node name (e.g. a case ID).
    """

    synthesize: bool = True
    segment: bool = True
    segment_on: str = "acquired"
    device: str = "auto"
    steps: int = 0
    samples: int = 1
    cleanup: bool = True
    seed: int = 0
    name_prefix: str = ""

    def problems(self) -> list[str]:
        """Sentences saying what is wrong with these options and how to fix it."""
        out = []
        if not (self.synthesize or self.segment):
            out.append("Nothing to run: tick 'Synthesise missing modalities', 'Segment tumour', or both.")
        if self.device not in DEVICES:
            out.append(f"Unknown device '{self.device}': choose one of {', '.join(DEVICES)}.")
        if self.segment_on not in SEGMENT_ON:
            out.append(f"Unknown segmentation input '{self.segment_on}': choose one of {', '.join(SEGMENT_ON)}.")
        if self.segment and self.segment_on == "all" and not self.synthesize:
            out.append("Segmenting on acquired plus synthesised volumes needs synthesis: "
                       "tick 'Synthesise missing modalities' or segment on the acquired volumes only.")
        if self.steps < 0:
            out.append(f"Sampling steps must be 0 (the model's default) or more (got {self.steps}).")
        if self.samples < 1:
            out.append(f"Number of samples must be at least 1 (got {self.samples}).")
        return out


def build_arguments(input_files: Mapping[str, str], output_dir: str, options: RunOptions) -> list[str]:
    """The arguments after ``medmodels`` for one run (the contract's command line).

    Args:
        input_files: modality key -> file written for it (acquired ones only).
        output_dir: folder the worker writes its results into.
        options: the run's options.
    """
    args = ["run"]
    for key, path in input_files.items():
        args += [f"--{key}", str(path)]
    args += ["--output-dir", str(output_dir)]
    if options.synthesize:
        args.append("--synthesize")
    if options.segment:
        args += ["--segment", "--segment-on", options.segment_on]
    args += ["--device", options.device, "--samples", str(int(options.samples)), "--seed", str(int(options.seed))]
    if options.steps > 0:
        args += ["--steps", str(int(options.steps))]
    # medmodels cleans up by default; say so either way, so the log shows the choice.
    args.append("--cleanup" if options.cleanup else "--no-cleanup")
    return args


def output_names(display: str, prefix: str = "") -> dict[str, str]:
    """Node names for one synthesised modality ("T1c (synthesised)")."""
    return {
        "volume": f"{prefix}{display} (synthesised)",
        "uncertainty": f"{prefix}{display} (synthesis uncertainty)",
    }


def segmentation_name(prefix: str = "") -> str:
    return f"{prefix}Tumour segmentation"


def quote_command(command: Sequence[str]) -> str:
    """The command as one line for the log (so a user can rerun it by hand)."""
    import shlex

    return " ".join(shlex.quote(str(c)) for c in command)
