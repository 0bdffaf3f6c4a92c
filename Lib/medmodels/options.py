"""The options of one run (synthesis and/or segmentation), spelled once.

``RunOptions`` is what ``medmodels run`` parses, what ``medmodels.pipeline``
runs with, and what the Slicer module builds from its parameter node and turns
back into a command line (``to_argv``). Its defaults, its checks
(``problems``) and its flags (``add_arguments`` / ``to_argv`` /
``from_namespace``) live here only, so they cannot disagree.

This module imports neither torch nor Slicer: the Slicer module imports it in
Slicer's own process, before the heavy dependencies may even be installed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from medmodels.checkpoint_ref import checkpoint_argument
from medmodels.errors import InputError
from medmodels.modalities import MODALITY_KEYS

#: Where to run: the GPU when there is one (auto), or forced.
DEVICES = ("auto", "cuda", "cpu")
#: What the segmentation sees: the acquired volumes, or acquired + synthesised.
SEGMENT_ON = ("acquired", "all")
#: Label values of the written segmentation: 2018 (ET = 4) or 2023 (ET = 3).
LABEL_CONVENTIONS = ("2018", "2023")
#: Preparation of the inputs (medmodels.preparation): as the inspection finds needed, always, or never.
PREPARE_MODES = ("auto", "on", "off")
#: The most synthesis samples: each is a whole synthesis and all are held in memory until their mean
#: and standard deviation are taken (the Slicer module's spin box stops there too).
MAX_SAMPLES = 32
#: Synthesis samples by default: the output is their mean and their standard deviation is the uncertainty
#: map. With the bundled 1.25 mm M2DN the mean of 4 scores above one sample on the validation cases (T1c
#: missing, input grid: SSIM 0.583 against 0.576, 0.485 against 0.466 in the tumour; docs/synthesis.md)
#: for 4 times the sampling time. A deterministic model (the regression baseline) is run once.
DEFAULT_SAMPLES = 4


def samples_problem(samples: int) -> str | None:
    """The sentence saying what is wrong with a number of synthesis samples, or None when it is fine."""
    if 1 <= samples <= MAX_SAMPLES:
        return None
    return (
        f"The number of samples (--samples) must be at least 1 and at most {MAX_SAMPLES} (got {samples}): each "
        f"sample is a whole synthesis, and {MAX_SAMPLES} already give a steady standard-deviation map."
    )


@dataclass(frozen=True)
class RunOptions:
    """What to run on a case and how.

    Args:
        synthesize: fill every missing modality with M2DN.
        segment: segment the tumour with ShaSpec.
        segment_on: "acquired" segments from the given volumes only; "all"
            from given plus synthesised ones (needs ``synthesize``).
        device: one of ``DEVICES``.
        steps: sampling steps of the fast sampler (more = slower, usually
            sharper); 0 leaves the choice to the model (its recorded default).
        samples: synthesis samples; above 1 a voxel-wise standard-deviation
            map is written too (the synthesis uncertainty).
        cleanup: connected-component clean-up of the segmentation.
        region_map: let a synthesis model conditioned on the tumour regions (the bundled M2DN) read the
            segmenter's map of them on the acquired volumes; False synthesises with an empty map, so the
            image holds no enhancement placed by the segmenter's estimate (and draws little of any).
        seed: random seed, so that a run can be repeated exactly.
        reference: modality whose grid the outputs use (None: the first
            given one in FLAIR, T1, T1c, T2 order).
        label_convention: one of ``LABEL_CONVENTIONS``.
        seg_checkpoint: segmentation checkpoint, a ``medmodels.checkpoint_ref.CheckpointRef``
            or its text (None or "ensemble": bundled ShaSpec and baseline U-Net, probabilities averaged;
            "bundled": ShaSpec alone; "baseline": the U-Net alone).
        syn_checkpoint: synthesis checkpoint, likewise (None or "ensemble": the bundled M2DN and regression,
            blended; "bundled": M2DN alone; "baseline": the regression alone).
        prepare: one of ``PREPARE_MODES``: "auto" registers and brain-extracts
            the inputs where the inspection finds them not co-registered or
            not skull-stripped, "on" always, "off" never (warnings only).
    """

    synthesize: bool = True
    segment: bool = True
    segment_on: str = "acquired"
    device: str = "auto"
    steps: int = 0
    samples: int = DEFAULT_SAMPLES
    cleanup: bool = True
    region_map: bool = True
    seed: int = 0
    reference: str | None = None
    label_convention: str = "2018"
    seg_checkpoint: str | None = None
    syn_checkpoint: str | None = None
    prepare: str = "auto"

    def problems(self) -> list[str]:
        """Sentences saying what is wrong with these options and how to fix it (empty: nothing)."""
        out = []
        if not (self.synthesize or self.segment):
            out.append("Nothing to run: turn on synthesis, segmentation, or both.")
        if self.device not in DEVICES:
            out.append(f"Unknown device '{self.device}': choose one of {', '.join(DEVICES)}.")
        if self.segment_on not in SEGMENT_ON:
            out.append(f"Unknown segmentation input '{self.segment_on}': choose one of {', '.join(SEGMENT_ON)}.")
        if self.segment and self.segment_on == "all" and not self.synthesize:
            out.append(
                "Segmenting on acquired plus synthesised volumes needs synthesis: turn synthesis on, "
                "or segment on the acquired volumes only."
            )
        if self.steps < 0:
            out.append(f"Sampling steps must be 0 (the model's default) or more (got {self.steps}).")
        if samples_problem(self.samples):
            out.append(samples_problem(self.samples))
        if not 0 <= self.seed < 2**32:
            out.append(f"The seed must be a whole number from 0 to 2**32 - 1 (got {self.seed}).")
        if self.reference is not None and self.reference not in MODALITY_KEYS:
            out.append(f"Unknown reference modality '{self.reference}': choose one of {', '.join(MODALITY_KEYS)}.")
        if self.prepare not in PREPARE_MODES:
            out.append(f"Unknown preparation '{self.prepare}': choose one of {', '.join(PREPARE_MODES)}.")
        if self.label_convention not in LABEL_CONVENTIONS:
            out.append(f"Unknown label convention '{self.label_convention}': choose 2018 (ET = 4) or 2023 (ET = 3).")
        return out

    def check(self) -> None:
        """Raise ``InputError`` carrying every problem, when there is any."""
        found = self.problems()
        if found:
            raise InputError(" ".join(found))

    def to_argv(self) -> list[str]:
        """The flags of ``medmodels run`` that give these options (inputs and ``--out`` not included).

        Every option is written, defaults too, so that a logged command line
        says every choice and does not depend on the defaults of another
        version.
        """
        argv = []
        if self.synthesize:
            argv.append("--synthesize")
        if self.segment:
            argv.append("--segment")
        argv += [
            "--segment-on",
            self.segment_on,
            "--device",
            self.device,
            "--samples",
            str(int(self.samples)),
            "--seed",
            str(int(self.seed)),
            "--labels",
            self.label_convention,
        ]
        if self.steps:
            argv += ["--steps", str(int(self.steps))]
        argv.append("--cleanup" if self.cleanup else "--no-cleanup")
        argv.append("--region-map" if self.region_map else "--no-region-map")
        for flag, value in (
            ("--reference", self.reference),
            ("--seg-checkpoint", self.seg_checkpoint),
            ("--syn-checkpoint", self.syn_checkpoint),
        ):
            if value is not None:
                argv += [flag, str(value)]
        argv += ["--prepare", self.prepare]
        return argv

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add the flags of these options to ``parser`` (``from_namespace`` reads them back)."""
        what = parser.add_argument_group("what to run (default: both)")
        what.add_argument("--synthesize", action="store_true", help="synthesise the missing modalities (M2DN)")
        what.add_argument("--segment", action="store_true", help="segment the tumour (ShaSpec)")
        what.add_argument(
            "--segment-on",
            choices=SEGMENT_ON,
            default="acquired",
            help="segment from the acquired volumes only, or acquired + synthesised",
        )
        opts = parser.add_argument_group("run options")
        opts.add_argument(
            "--device",
            choices=DEVICES,
            default="auto",
            help="where to run: the GPU when there is one (auto), or force cuda/cpu",
        )
        opts.add_argument("--steps", type=int, default=0, help="sampling steps (default 0: the model's own)")
        opts.add_argument(
            "--samples",
            type=int,
            default=DEFAULT_SAMPLES,
            help=f"synthesis samples: the output is their mean; >1 also writes a std map (default {DEFAULT_SAMPLES})",
        )
        opts.add_argument(
            "--no-cleanup",
            dest="cleanup",
            action="store_false",
            help="keep every connected component of the segmentation",
        )
        opts.add_argument("--cleanup", dest="cleanup", action="store_true", help="clean up the segmentation (default)")
        opts.add_argument(
            "--no-region-map",
            dest="region_map",
            action="store_false",
            help="synthesise without the segmenter's map of the tumour regions: no enhancement is drawn where the "
            "segmenter estimates it (a conditioned model such as the bundled M2DN then draws little of any)",
        )
        opts.add_argument(
            "--region-map",
            dest="region_map",
            action="store_true",
            help="guide a conditioned synthesis model by the segmenter's map of the tumour regions (default)",
        )
        opts.add_argument("--seed", type=int, default=0, help="random seed of the synthesis")
        opts.add_argument(
            "--reference",
            choices=MODALITY_KEYS,
            default=None,
            help="modality whose grid the outputs use (default: first given in FLAIR,T1,T1c,T2 order)",
        )
        opts.add_argument(
            "--labels",
            dest="label_convention",
            choices=LABEL_CONVENTIONS,
            default="2018",
            help="label values: 2018 (ET=4) or 2023 (ET=3)",
        )
        opts.add_argument(
            "--seg-checkpoint",
            default=None,
            type=checkpoint_argument,
            help="segmentation checkpoint .pt, 'bundled' (ShaSpec alone) or 'baseline' (the U-Net alone) (default: "
            "'ensemble', the two averaged)",
        )
        opts.add_argument(
            "--syn-checkpoint",
            default=None,
            type=checkpoint_argument,
            help="synthesis .pt, 'bundled' (M2DN) or 'baseline' (regression) (default: 'ensemble', the two blended)",
        )
        opts.add_argument(
            "--prepare",
            choices=PREPARE_MODES,
            default="auto",
            help="register and skull-strip the inputs: where the inspection finds it needed (auto), always (on), "
            "or never (off: warnings only)",
        )
        parser.set_defaults(cleanup=True, region_map=True)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> RunOptions:
        """The options parsed by ``add_arguments``. Neither --synthesize nor
        --segment means both, as on the command line's help."""
        values = {f.name: getattr(args, f.name) for f in fields(RunOptions)}
        if not (values["synthesize"] or values["segment"]):
            values["synthesize"] = values["segment"] = True
        return cls(**values)
