"""A segmenter as the source of a conditioned synthesizer's tumour-region map.

A synthesis network conditioned on the tumour regions (``medmodels.syn.conditioning``) reads, at
inference, a segmenter's probabilities of ET, TC and WT on the acquired modalities. This is
pipeline level, like ``medmodels.downstream``: it uses both ``medmodels.syn`` and ``medmodels.seg``,
which do not import each other.
"""

from __future__ import annotations

from pathlib import Path

from medmodels.seg.inference import Segmenter, load_segmenter, segmenter_file
from medmodels.syn.conditioning import RegionSource
from medmodels.syn.inference import Synthesizer, load_synthesizer


def segmenter_regions(segmenter: Segmenter | str | Path | None = None, device: str = "auto") -> RegionSource:
    """``syn.conditioning.RegionSource`` from a segmenter: its probabilities (ET, TC, WT) on the acquired
    modalities, before any threshold (the map the network was trained to read is soft).

    Args:
        segmenter: a loaded ``Segmenter``; or a checkpoint reference (``seg.inference.load_segmenter``'s;
            None = the default segmenter), whose file is checked now and loaded at the first call, so a
            run whose synthesizer is not conditioned never loads it.
        device: where a segmenter loaded here runs.

    Raises:
        InputError: the reference names no file.
    """
    loaded: list[Segmenter] = [segmenter] if isinstance(segmenter, Segmenter) else []
    if not loaded:
        segmenter_file(segmenter)  # a wrong path fails now, not after an hour of evaluation

    def regions(images, mask, chain):
        if not loaded:
            loaded.append(load_segmenter(segmenter, device))
        return loaded[0].probabilities(images, None, mask, chain)

    return regions


def load_conditioned_synthesizer(
    checkpoint: str | Path | None = None, device: str = "auto", segmenter: Segmenter | str | Path | None = None
) -> Synthesizer:
    """``syn.inference.load_synthesizer`` with ``segmenter`` (``segmenter_regions``'s) as the region source
    of a conditioned network; an unconditioned one never uses it."""
    return load_synthesizer(checkpoint, device, segmenter_regions(segmenter, device))
