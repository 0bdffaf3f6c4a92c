"""Cases on the synthesis working grid, and the 2D slices training draws from them.

A case goes to the working grid in the same way for training, evaluation and
whole-volume synthesis, through ``medmodels.working_grid.WorkingGrid`` (the one
grid implementation segmentation uses too): brain mask (from the available
modalities), per-modality percentile clip + z-score inside the brain (0
outside), linear resampling to the working spacing (the checkpoint's: 1.25 mm
for the bundled models; ``train-syn`` starts new models at 2 mm, the cheaper
CPU budget) along the input's axes, crop to the brain with ``MARGIN_MM``,
in-plane sizes grown to a multiple of ``MULTIPLE_OF``. ``to_preparation_grid``
goes back.

Axial slices are the ``z`` planes of the ``(Z, Y, X)`` arrays. A 2.5D
network also sees each slice's ``k`` neighbours on either side
(``slice_context``); at the ends of the crop the nearest slice is repeated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from medmodels.errors import InputError
from medmodels.grid_chain import GridChain
from medmodels.image import Image
from medmodels.labels import detect_convention, labels_to_regions
from medmodels.modalities import MODALITY_KEYS
from medmodels.normalisation import Normalizer
from medmodels.syn.tumour_mix import MAX_MARGIN, mixed_slab
from medmodels.working_grid import WorkingGrid, working_zscores

#: In-plane crops are grown to a multiple of this (the network halves H, W three times).
MULTIPLE_OF = 8
#: Kept around the brain, in mm: one voxel at the bundled model's 2 mm, as it was trained with.
MARGIN_MM = 2.0


@dataclass
class WorkingCase:
    """One case on the working grid.

    Attributes:
        image: ``(4, Z, Y, X)`` float32 brain z-scores, canonical modality
            order, on the working crop; 0 outside the brain and for
            modalities not given.
        brain: ``(Z, Y, X)`` bool brain mask on the same crop.
        available: ``(4,)`` bool, which channels hold data.
        normalizers: the fitted ``Normalizer`` of each given modality.
        grid: the ``WorkingGrid`` (input geometry, working crop, the maps between them).
        name: case name, for tables.
        labels: ``(Z, Y, X)`` uint8 tumour labels on the same crop (nearest
            neighbour), or None: training weights the tumour with them.
        slice_weights: ``(Z,)`` brain area of each slice (set from ``brain``).
        tumour_slices: indices of the slices with tumour labels (set from ``labels``; empty without),
            the donors' slices of tumour mixing (``syn.tumour_mix``).
    """

    image: np.ndarray
    brain: np.ndarray
    available: np.ndarray
    normalizers: dict[str, Normalizer]
    grid: WorkingGrid
    name: str = ""
    labels: np.ndarray | None = None
    slice_weights: np.ndarray = field(default=None)  # type: ignore[assignment]
    tumour_slices: np.ndarray = field(default=None, init=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        area = self.brain.reshape(self.brain.shape[0], -1).sum(1).astype(np.float64)
        self.slice_weights = area
        labelled = self.labels is not None
        self.tumour_slices = (
            np.flatnonzero((self.labels > 0).reshape(self.labels.shape[0], -1).any(1)) if labelled else np.zeros(0, int)
        )

    def brain_slices(self, min_fraction: float = 0.0) -> np.ndarray:
        """z indices of slices whose brain area is above ``min_fraction`` of the largest."""
        area = self.slice_weights
        return np.flatnonzero(area > max(min_fraction * area.max(), 0))


def to_working_case(
    images: Mapping[str, Image],
    spacing: Sequence[float],
    name: str = "",
    margin_mm: float = MARGIN_MM,
    multiple_of: int = MULTIPLE_OF,
    labels: Image | None = None,
) -> WorkingCase:
    """Bring a case to the working grid.

    Args:
        images: ``{key: Image}`` on one grid, raw intensities; every given
            modality is used (brain mask included).
        spacing: working spacing ``(x, y, z)`` in mm (the model's).
        name: case name, for tables.
        margin_mm: kept around the brain, in mm.
        multiple_of: in-plane (x, y) crop sizes are grown to a multiple of it.
        labels: the case's tumour label map on the images' grid (training only).
    """
    images = {k: images[k] for k in MODALITY_KEYS if k in images}
    if not images:
        raise InputError("No modality is available: provide at least one of FLAIR, T1, T1c or T2.")
    grid = WorkingGrid.fit(images, spacing, margin_mm=margin_mm, multiple_of=(multiple_of, multiple_of, 1))
    brain = grid.brain
    if not brain.any():
        raise InputError(
            "The brain mask vanishes at the working spacing: the brain is too small or the inputs are nearly empty."
        )
    image, norms = working_zscores(grid, images)
    image *= brain[None]
    available = np.array([k in images for k in MODALITY_KEYS])
    working_labels = None
    if labels is not None:
        working_labels = np.rint(grid.forward(labels, "nearest")).astype(np.uint8) * brain
    return WorkingCase(image, brain, available, norms, grid, name, working_labels)


def slice_context(volume: np.ndarray, zs: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` neighbours on either side of each chosen slice.

    Args:
        volume: ``(C, Z, Y, X)``.
        zs: ``(n,)`` slice indices.
        k: neighbours per side.

    Returns:
        ``(n, C, 2k, Y, X)``: slices ``z-k .. z-1`` then ``z+1 .. z+k``, each
        index clamped to the volume (the end slice repeats).
    """
    offsets = np.r_[np.arange(-k, 0), np.arange(1, k + 1)]
    idx = np.clip(np.asarray(zs)[:, None] + offsets[None], 0, volume.shape[1] - 1)  # (n, 2k)
    return np.ascontiguousarray(volume[:, idx].transpose(1, 0, 2, 3, 4))


def to_preparation_grid(case: WorkingCase, z_crop: np.ndarray, chain: GridChain | None = None) -> np.ndarray:
    """A ``(Z, Y, X)`` array on the working crop -> float32 on the grid the case
    was made from (``chain.inverse``, "intensity"), 0 outside its brain mask (still in z-scores).

    Args:
        case: the case the array belongs to.
        z_crop: ``(Z, Y, X)`` z-scores on ``case``'s working crop.
        chain: the case's ``GridChain`` (from the preparation step), whose
            preparation grid the case was made on; None: the case's own grid.
    """
    chain = (chain or GridChain.on(case.grid.reference)).with_working(case.grid)
    out = chain.inverse(z_crop, "intensity", to="preparation")
    return np.where(case.grid.input_brain, out, 0.0).astype(np.float32)


@dataclass
class SliceBatch:
    """Training slices.

    Attributes:
        x0: ``(B, 4, H, W)`` float32 z-scores of the slices.
        context: ``(B, 4, 2k, H, W)`` their neighbours (``slice_context``), or None when k = 0.
        labels: ``(B, H, W)`` uint8 tumour labels (0 where a case has none).
    """

    x0: torch.Tensor
    context: torch.Tensor | None
    labels: torch.Tensor


def sample_batch(
    cases: Sequence[WorkingCase],
    batch: int,
    size: tuple[int, int],
    rng: np.random.Generator,
    min_fraction: float = 0.1,
    flip: bool = True,
    context: int = 0,
    tumour_mix: float = 0.0,
) -> SliceBatch:
    """A training batch of axial slices, their neighbours and their tumour labels.

    Each item: a case (uniform), a brain slice of it (area above
    ``min_fraction`` of its largest), placed at a random offset in a
    ``size`` canvas (padded with 0 = background), optionally mirrored
    left-right; its ``context`` neighbours on either side and its labels get
    the same crop, placement and mirroring. With probability ``tumour_mix``
    the slice first gets another case's tumour (``syn.tumour_mix.mixed_slab``,
    a donor slice with tumour drawn uniformly, a margin of 0-2 pixels); at 0
    no random number is drawn for it, so earlier runs draw the same batches.
    """
    h, w = size
    planes = 1 + 2 * context
    out = np.zeros((batch, len(MODALITY_KEYS), planes, h, w), dtype=np.float32)
    labels = np.zeros((batch, h, w), dtype=np.uint8)
    for b in range(batch):
        case = cases[rng.integers(len(cases))]
        z = rng.choice(case.brain_slices(min_fraction))
        donors = [c for c in cases if c is not case and len(c.tumour_slices)] if tumour_mix > 0 else []
        if donors and rng.random() < tumour_mix:
            donor = donors[rng.integers(len(donors))]
            margin = int(rng.integers(MAX_MARGIN + 1))
            slab, lab = mixed_slab(case, z, donor, int(rng.choice(donor.tumour_slices)), context, margin, rng)
        else:
            slab = case.image[:, z : z + 1]
            if context:  # the slice first, then its neighbours (the network's order)
                slab = np.concatenate([slab, slice_context(case.image, np.array([z]), context)[0]], axis=1)
            lab = case.labels[z] if case.labels is not None else np.zeros(slab.shape[2:], np.uint8)
        # random crop if the slice is larger than the canvas, random placement if smaller
        ys, xs = slab.shape[2], slab.shape[3]
        y0, x0 = rng.integers(0, max(ys - h, 0) + 1), rng.integers(0, max(xs - w, 0) + 1)
        slab, lab = slab[:, :, y0 : y0 + h, x0 : x0 + w], lab[y0 : y0 + h, x0 : x0 + w]
        oy, ox = rng.integers(0, h - slab.shape[2] + 1), rng.integers(0, w - slab.shape[3] + 1)
        if flip and rng.random() < 0.5:
            slab, lab = slab[..., ::-1], lab[:, ::-1]
        out[b, :, :, oy : oy + slab.shape[2], ox : ox + slab.shape[3]] = slab
        labels[b, oy : oy + lab.shape[0], ox : ox + lab.shape[1]] = lab
    x = torch.from_numpy(out)
    return SliceBatch(x[:, :, 0].contiguous(), x[:, :, 1:].contiguous() if context else None, torch.from_numpy(labels))


def random_affine(batch: SliceBatch, rng: np.random.Generator, degrees: float, scale: float) -> SliceBatch:
    """The same random in-plane rotation and scaling for each item's slice, neighbours and labels.

    Few training cases see few brain shapes; small rotations (uniform in
    +-``degrees``) and scalings (uniform in 1 +- ``scale``) about the canvas
    centre show the network more. Images are resampled bilinearly, labels by
    nearest neighbour, both with 0 (background) outside.
    """
    b = batch.x0.shape[0]
    angle = np.deg2rad(rng.uniform(-degrees, degrees, b))
    zoom = 1.0 + rng.uniform(-scale, scale, b)
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    theta = torch.tensor(np.stack([np.stack([cos, -sin, 0 * cos], 1), np.stack([sin, cos, 0 * cos], 1)], 1))
    planes = [batch.x0[:, :, None]] + ([batch.context] if batch.context is not None else [])
    stack = torch.cat(planes, dim=2)  # (B, 4, P, H, W)
    shape = stack.shape
    grid = F.affine_grid(theta.float(), [b, 1, *shape[3:]], align_corners=False)
    warped = F.grid_sample(stack.reshape(b, -1, *shape[3:]), grid, mode="bilinear", align_corners=False).reshape(shape)
    labels = F.grid_sample(batch.labels[:, None].float(), grid, mode="nearest", align_corners=False)[:, 0]
    context = warped[:, :, 1:].contiguous() if batch.context is not None else None
    return SliceBatch(warped[:, :, 0].contiguous(), context, labels.to(torch.uint8))


def sample_slices(
    cases: Sequence[WorkingCase],
    batch: int,
    size: tuple[int, int],
    rng: np.random.Generator,
    min_fraction: float = 0.1,
    flip: bool = True,
) -> torch.Tensor:
    """``(batch, 4, H, W)`` float32 z-scores: the slices of ``sample_batch`` alone."""
    return sample_batch(cases, batch, size, rng, min_fraction, flip).x0


@dataclass
class SlabBlock:
    """A cube of consecutive axial slices of one case, for a loss that reads a 3D volume.

    Attributes:
        x0: ``(D, 4, D, D)`` float32 z-scores: the block's ``D`` slices, as a slice batch.
        context: ``(D, 4, 2k, D, D)`` each slice's neighbours (``slice_context``), or None when k = 0.
        regions: ``(3, D, D, D)`` float32 ET, TC, WT of the case's labels (``medmodels.labels``).
    """

    x0: torch.Tensor
    context: torch.Tensor | None
    regions: torch.Tensor


def sample_block(
    cases: Sequence[WorkingCase], size: int, rng: np.random.Generator, flip: bool = True, context: int = 0
) -> SlabBlock:
    """A ``size``-voxel cube of one labelled case around its enhancing tumour.

    The case is drawn uniformly among those with labels; the cube's centre is a
    random voxel of its enhancing tumour (of its tumour when it has none, of its
    brain when it has no tumour), shifted by up to a quarter of the cube along
    each axis so the lesion is not always in the middle. Outside the working
    crop the cube is 0 (background, as the z-scores are). Optionally mirrored
    left-right, slices, neighbours and regions alike.

    Raises:
        InputError: no case has labels.
    """
    labelled = [c for c in cases if c.labels is not None]
    if not labelled:
        raise InputError("A block loss needs tumour labels: give training cases with a seg/label file.")
    case = labelled[rng.integers(len(labelled))]
    convention = detect_convention(case.labels)  # on the whole case: a cube may hold no enhancing voxel
    enhancing = labels_to_regions(case.labels, convention)[0]
    for candidates in (enhancing, case.labels > 0, case.brain):
        voxels = np.argwhere(candidates)
        if len(voxels):
            break
    shift = rng.integers(-(size // 4), size // 4 + 1, 3)
    start = voxels[rng.integers(len(voxels))] + shift - size // 2
    # the part of the cube inside the crop: source ranges, and where they land in the cube
    src = [slice(max(s, 0), min(s + size, n)) for s, n in zip(start, case.labels.shape, strict=True)]
    dst = [slice(r.start - s, r.stop - s) for r, s in zip(src, start, strict=True)]
    zs = np.arange(src[0].start, src[0].stop)
    planes = case.image[:, zs][:, :, None]  # (4, n, 1, Y, X)
    if context:
        planes = np.concatenate([planes, slice_context(case.image, zs, context).transpose(1, 0, 2, 3, 4)], axis=2)
    cube = np.zeros((size, len(MODALITY_KEYS), planes.shape[2], size, size), dtype=np.float32)
    cube[dst[0], :, :, dst[1], dst[2]] = planes[:, :, :, src[1], src[2]].transpose(1, 0, 2, 3, 4)
    regions = np.zeros((3, size, size, size), dtype=np.float32)
    regions[:, dst[0], dst[1], dst[2]] = labels_to_regions(case.labels[src[0], src[1], src[2]], convention)
    if flip and rng.random() < 0.5:
        cube, regions = cube[..., ::-1], regions[..., ::-1]
    x = torch.from_numpy(np.ascontiguousarray(cube))
    return SlabBlock(
        x[:, :, 0].contiguous(),
        x[:, :, 1:].contiguous() if context else None,
        torch.from_numpy(np.ascontiguousarray(regions)),
    )
