"""What a run will use and cost: the device that actually runs it, and a CPU time estimate.

``run`` prints ``Device: ...`` as its first line and records the device in
the manifest, so a user (and the Slicer module's log) sees it when "auto"
found no GPU, instead of a run that is silently slow. Before a run that will
be long on the CPU it prints a WARNING with an estimate from the project's own
measurements (docs/segmentation.md, docs/synthesis.md), scaled by the number
of voxels, missing modalities, sampling steps and samples.
"""

from __future__ import annotations

import math
import resource
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from medmodels.device import resolve_device


def peak_rss_mib() -> float:
    """The peak resident memory of this process so far, in MiB (``ru_maxrss``: it never goes down)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 1024.0 / 1024.0


#: Measured whole-case CPU times on a 240x240x155 case, 2 threads of a shared 2-core EPYC:
#: ShaSpec segmentation 4.52 s (README, docs/segmentation.md "Speed and memory"); one synthesised
#: modality with 2 DDIM steps and one sample 14.2 s (docs/synthesis.md, median while shared).
REFERENCE_VOXELS = 240 * 240 * 155
SEGMENT_SECONDS = 4.52
SYNTHESIS_SECONDS_PER_STEP = 14.2 / 2
#: A CPU run estimated longer than this gets a WARNING before it starts.
LONG_CPU_SECONDS = 60.0


@dataclass(frozen=True)
class DeviceChoice:
    """The device a ``--device`` word resolves to on this machine.

    Attributes:
        device: the torch device.
        name: "cpu" or "cuda (<GPU name>)", as the manifest records it.
        fell_back: "auto" was asked for and PyTorch sees no GPU.
    """

    device: torch.device
    name: str
    fell_back: bool

    def line(self) -> str:
        """The run's first line."""
        why = " (auto: PyTorch sees no GPU)" if self.fell_back else ""
        return f"Device: {self.name}{why}"


def choose_device(word: str) -> DeviceChoice:
    """``resolve_device(word)`` with the GPU's name; raises InputError as it does."""
    device = resolve_device(word)
    if device.type == "cuda":
        return DeviceChoice(device, f"cuda ({torch.cuda.get_device_name(device)})", False)
    return DeviceChoice(device, "cpu", word.lower() == "auto")


def cpu_seconds(voxels: int, missing: int, steps: int, samples: int, segment: bool) -> float:
    """Estimated CPU seconds for one case (preparation not included).

    Args:
        voxels: voxels of the case's reference volume.
        missing: modalities to synthesise.
        steps: DDIM steps; samples: synthesis samples; segment: whether it segments.
    """
    scale = voxels / REFERENCE_VOXELS
    synthesis = missing * SYNTHESIS_SECONDS_PER_STEP * steps * samples
    return scale * (synthesis + (SEGMENT_SECONDS if segment else 0.0))


def cpu_warning(
    choice: DeviceChoice, cases: Sequence[tuple[str, Mapping[str, object]]], options, default_steps: int
) -> str | None:
    """A WARNING for a run on the CPU estimated longer than ``LONG_CPU_SECONDS``; else None.

    Args:
        choice: the device that runs.
        cases: ``(name, {modality key: path})`` as ``resolve_inputs`` gives them.
        options: the run's RunOptions (synthesize, segment, steps, samples).
        default_steps: the synthesizer's step count when ``options.steps`` is 0.
    """
    if choice.device.type != "cpu":
        return None
    from medmodels.io import read_header

    total = 0.0
    for _, files in cases:
        voxels = math.prod(read_header(next(iter(files.values()))).array.shape)
        missing = 4 - len(files) if options.synthesize else 0
        total += cpu_seconds(voxels, missing, options.steps or default_steps, options.samples, options.segment)
    if total < LONG_CPU_SECONDS:
        return None  # the Device line already says the CPU runs; a short run needs no warning
    start = "No GPU: PyTorch sees none, so" if choice.fell_back else "On the CPU"
    return (
        f"{start} this run takes about {total:.0f} s ({total / 60:.1f} min) plus input preparation, "
        "from this project's timings on 2 CPU cores (a GPU is many times faster; install a CUDA build of "
        "PyTorch to use one)."
    )
