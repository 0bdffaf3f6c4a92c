"""Tumour mixing for synthesis: another case's tumour, in all four modalities, pasted into a training slice.

Why: 11 training cases show the network 11 tumours, each in one brain, so the enhancement it must
draw in T1c is seen in few contexts (docs/synthesis.md: the loss falls, validation stays flat, the
synthesised T1c has no enhancement). Pasting a donor's tumour with a margin of its surrounding tissue
into another brain makes new tumour/brain pairs from the same cases, which lifted segmentation on the
same split (``medmodels.seg.tumour_mix``, CarveMix). Every modality of the donor comes along, so the
pairing of FLAIR/T1/T2 appearance and T1c enhancement inside the tumour is the donor's own.

The slice's planes (the slice and its ``context`` neighbours) are handled as one small volume, so the
pasted tumour is continuous across them: the donor's planes around one of its tumour slices are
shifted in plane so that the tumour's centre lands on a random brain pixel of the recipient's slice,
and carved as in segmentation (``tumour_carving.carve_region``: the donor's tumour grown by a margin, inside both
brains). Both cases are brain z-scores (0 outside), so the donor's intensities carry over as they are.
"""

from __future__ import annotations

import numpy as np
import torch

from medmodels.tumour_carving import carve_region

#: The largest margin drawn, in working pixels (2 at 1.25 mm: up to 2.5 mm of the donor's tissue).
MAX_MARGIN = 2


def planes_around(z: int, context: int, depth: int) -> np.ndarray:
    """Slice indices ``z - context .. z + context`` in spatial order, clamped to ``0 .. depth - 1``
    (an end slice repeats, as ``syn.data.slice_context`` does)."""
    return np.clip(z + np.arange(-context, context + 1), 0, depth - 1)


def network_order(context: int) -> list[int]:
    """Positions, in a spatially ordered stack of ``2 * context + 1`` planes, of the network's order:
    the slice first, then its neighbours below and above (``syn.data.sample_batch``)."""
    return [context, *range(context), *range(context + 1, 2 * context + 1)]


def shifted(a: np.ndarray, dy: int, dx: int, shape: tuple[int, int]) -> np.ndarray:
    """``a`` (``(..., Y, X)``) moved by ``(dy, dx)`` pixels onto a zero canvas of in-plane ``shape``:
    ``out[..., y + dy, x + dx] = a[..., y, x]`` where both are inside."""
    out = np.zeros((*a.shape[:-2], *shape), dtype=a.dtype)
    h, w = shape
    ys, xs = slice(max(0, -dy), min(a.shape[-2], h - dy)), slice(max(0, -dx), min(a.shape[-1], w - dx))
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return out
    out[..., ys.start + dy : ys.stop + dy, xs.start + dx : xs.stop + dx] = a[..., ys, xs]
    return out


def mixed_slab(
    recipient,
    z: int,
    donor,
    donor_z: int,
    context: int,
    margin: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``z`` of ``recipient`` with its neighbours, the donor's tumour around ``donor_z`` pasted in.

    Args:
        recipient, donor: ``syn.data.WorkingCase`` with labels (the donor's slice ``donor_z`` has tumour).
        z, donor_z: the slices.
        context: neighbours on each side (the network's ``context``).
        margin: pixels of the donor's tissue kept around its tumour (>= 0; as ``carve_region``).
        rng: draws the pixel of the recipient's brain where the tumour's centre lands.

    Returns:
        ``(slab, labels)``: ``(4, 1 + 2 * context, Y, X)`` float32 in the network's plane order, and
        the slice's ``(Y, X)`` uint8 labels, both on the recipient's crop; new arrays, the cases untouched.
    """
    r_idx = planes_around(z, context, recipient.image.shape[1])
    d_idx = planes_around(donor_z, context, donor.image.shape[1])
    shape = recipient.image.shape[2:]
    r_labels = recipient.labels[r_idx] if recipient.labels is not None else np.zeros((len(r_idx), *shape), np.uint8)
    ty, tx = _random_pixel(recipient.brain[z], rng)
    cy, cx = (int(round(c)) for c in np.argwhere(donor.labels[donor_z] > 0).mean(0))
    dy, dx = ty - cy, tx - cx
    d_image = shifted(donor.image[:, d_idx], dy, dx, shape)
    d_labels = shifted(donor.labels[d_idx], dy, dx, shape)
    d_brain = shifted(donor.brain[d_idx], dy, dx, shape)
    carve = carve_region(
        torch.from_numpy(d_labels > 0), torch.from_numpy(d_brain), torch.from_numpy(recipient.brain[r_idx]), margin
    ).numpy()
    image = np.where(carve[None], d_image, recipient.image[:, r_idx]).astype(np.float32)
    labels = np.where(carve, d_labels, r_labels)
    return np.ascontiguousarray(image[:, network_order(context)]), labels[context].astype(np.uint8)


def _random_pixel(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A uniformly drawn ``True`` pixel of a 2D mask (its centre if it has none)."""
    pixels = np.argwhere(mask)
    if not len(pixels):
        return mask.shape[0] // 2, mask.shape[1] // 2
    y, x = pixels[rng.integers(len(pixels))]
    return int(y), int(x)
