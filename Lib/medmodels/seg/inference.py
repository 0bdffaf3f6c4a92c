"""Whole-volume inference with any subset of modalities.

``load_segmenter(checkpoint=None, device="auto").segment(images, mask)``:

1. the case on the model's working grid (``medmodels.working_grid.WorkingGrid``):
   brain mask (union of non-zero voxels), per-modality normalisation,
   trilinear resampling to the model's training spacing (stored in the
   checkpoint config) along the input's axes, crop to the brain --
   :func:`medmodels.seg.data.prepare`;
2. sliding-window inference (``monai.inferers.sliding_window_inference``,
   Gaussian weighting, window = training patch, overlap 0.5); a missing
   modality's channel is zero and the network is told through the mask, so
   its content never matters;
3. sigmoid probabilities resampled back onto the grid of the given images
   (``GridChain.inverse``, "probability": linear, in physical space; 0 outside
   the crop), thresholded at the checkpoint's ``threshold`` (0.5 when it
   records none; ``medmodels evaluate-seg --calibrate`` chooses one on validation cases,
   ``seg/calibration.py``), regions -> BraTS labels;
4. optional clean-up (the paper's ShaSpec*): whole-tumour connected components
   smaller than ``MIN_COMPONENT_MM3`` are dropped (the largest is always kept),
   and an enhancing tumour smaller than ``MIN_ET_MM3`` in total is relabelled
   necrotic core (the usual BraTS post-processing).

Memory: the inputs and a few float32 copies of the cropped volume, plus the
window activations; for a 240x240x155 case with the default model, peak RSS is
stated by ``medmodels bench-seg`` (docs/segmentation.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.inferers import sliding_window_inference

from medmodels.device import resolve_device
from medmodels.errors import InputError
from medmodels.grid_chain import GridChain
from medmodels.image import Image
from medmodels.labels import regions_to_labels
from medmodels.modalities import AvailabilityMask, resolve_mask
from medmodels.nets.config import DEFAULT_THRESHOLD
from medmodels.nets.segmentation import build_segmentation_net
from medmodels.nets.unet3d import N_REGIONS
from medmodels.seg.data import prepare
from medmodels.weights import load_network, read_record, resolve_checkpoint

BUNDLED_NAME = "shaspec_brats18"
BASELINE_NAME = "unet3d_baseline_brats18"
#: The two above as one checkpoint, probabilities averaged (``medmodels.seg.ensemble``): "ensemble".
ENSEMBLE_NAME = "shaspec_unet_brats18"
#: What ``run``, ``segment`` and the Slicer module segment with when no checkpoint is given: the
#: ensemble, ahead of either model alone on the validation cases (docs/segmentation.md, "Both models together").
DEFAULT_SEGMENTER = "ensemble"
MIN_COMPONENT_MM3 = 500.0
MIN_ET_MM3 = 500.0
#: Whole-tumour components below this fraction of the largest are dropped too.
#: On the 4 validation cases x 15 subsets WT Dice and HD95 improved
#: monotonically with the fraction (none 58.4 % / 45.7 mm, 0.1: 59.2 / 37.4,
#: 0.5: 60.7 / 27.7, largest only 62.1 / 23.3; docs/segmentation.md, "False
#: positives"), but "largest only" drops the whole tumour when a false positive
#: is the larger blob (it did on coarse 64x64x40 phantoms: Dice 0.49 -> 0.00).
#: 0.5 keeps a second focus at least half the size of the largest. A
#: multifocal tumour's smaller foci go with the false positives: ``cleanup=False``
#: (``--no-cleanup``) keeps them.
MIN_COMPONENT_FRACTION = 0.5


def predict_probabilities(
    model: torch.nn.Module,
    image: torch.Tensor,
    mask,
    patch,
    overlap: float = 0.5,
    device: torch.device | str = "cpu",
    sw_batch_size: int = 1,
    mirror_axes: tuple[int, ...] = (),
) -> torch.Tensor:
    """``image (4, z, y, x)`` at the working spacing -> ``(3, z, y, x)`` sigmoid
    probabilities (ET, TC, WT), on the CPU.

    Args:
        mirror_axes: test-time mirroring: the mean over every combination of
            flips along these axes (0 = z, 1 = y, 2 = x; ``(2,)`` = left-right:
            2 passes; ``(0, 1, 2)``: 8 passes, nnU-Net's), each flipped back.
    """
    device = torch.device(device)
    m = torch.as_tensor(tuple(mask), dtype=torch.bool, device=device)
    x = (image * m.cpu().to(image.dtype)[:, None, None, None])[None].to(device)
    patch = tuple(int(p) for p in patch)  # volumes smaller than a window are padded by MONAI
    axes = sorted({int(a) + 2 for a in mirror_axes})
    flips = [[a for i, a in enumerate(axes) if n >> i & 1] for n in range(2 ** len(axes))]

    def predictor(window: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model(window, m)["logits"].float())

    probs = torch.zeros((1, N_REGIONS) + tuple(x.shape[2:]), dtype=torch.float32, device=device)
    with torch.inference_mode():
        use_amp = device.type == "cuda"
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
            for dims in flips:
                xf = torch.flip(x, dims) if dims else x
                p = sliding_window_inference(
                    xf,
                    patch,
                    sw_batch_size,
                    predictor,
                    overlap=overlap,
                    mode="gaussian",
                    padding_mode="constant",
                    cval=0.0,
                ).float()
                probs += torch.flip(p, dims) if dims else p
    return (probs[0] / len(flips)).cpu()


def cleanup_regions(regions: np.ndarray, spacing_xyz, min_fraction: float | None = None) -> np.ndarray:
    """Connected-component clean-up of ``(3, Z, Y, X)`` bool regions (ET, TC, WT).

    Whole-tumour components smaller than ``MIN_COMPONENT_MM3`` or than
    ``min_fraction`` of the largest one are dropped (the largest is always
    kept), and TC/ET outside the kept whole tumour with them; an ET below
    ``MIN_ET_MM3`` becomes TC (ShaSpec*'s post-processing). The relative rule
    removes the false-positive blobs far from the tumour that dominate HD95.

    Args:
        regions: ``(3, Z, Y, X)`` bool, ET, TC, WT.
        spacing_xyz: voxel spacing in mm.
        min_fraction: relative size threshold (default ``MIN_COMPONENT_FRACTION``).
    """
    min_fraction = MIN_COMPONENT_FRACTION if min_fraction is None else min_fraction
    voxel = float(np.prod(spacing_xyz))
    et, tc, wt = (r.copy() for r in regions)
    if wt.any():
        cc = sitk.ConnectedComponent(sitk.GetImageFromArray(wt.astype(np.uint8)), True)
        lab = sitk.GetArrayFromImage(cc)
        sizes = np.bincount(lab.ravel())[1:]
        keep = np.zeros(len(sizes) + 1, dtype=bool)
        keep[1:] = (sizes * voxel >= MIN_COMPONENT_MM3) & (sizes >= min_fraction * sizes.max())
        keep[1 + int(np.argmax(sizes))] = True
        wt = keep[lab]
        tc &= wt
        et &= wt
    if et.sum() * voxel < MIN_ET_MM3:
        tc |= et
        et[:] = False
    return np.stack([et, tc & wt, wt])


def check_threshold(threshold) -> float:
    """``threshold`` as a float in (0, 1), or an ``InputError`` that names the fix."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise InputError(
            f"Probability threshold {threshold!r} is not a number between 0 and 1 (exclusive): give e.g. 0.5."
        )
    return value


def regions_from_probabilities(probs: np.ndarray, threshold: float, spacing_xyz, cleanup: bool = True) -> np.ndarray:
    """``(3, Z, Y, X)`` probabilities (ET, TC, WT) -> bool regions: ``probs >= threshold``, then
    ``cleanup_regions`` when ``cleanup``. The one rule ``Segmenter.segment`` and the calibration share."""
    regions = probs >= threshold
    return cleanup_regions(regions, spacing_xyz) if cleanup else regions


class Segmenter:
    """A loaded segmentation model; see the module docstring."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: Mapping,
        device: torch.device,
        overlap: float = 0.5,
        mirror_axes: tuple[int, ...] = (),
        threshold: float | None = None,
    ):
        self.model = model.to(device).eval()
        self.config = dict(config)
        self.device = device
        self.overlap = overlap
        self.mirror_axes = tuple(mirror_axes)
        #: Regions are ``probability >= threshold``: the given one, else the checkpoint's, else 0.5.
        self.threshold = check_threshold(
            threshold if threshold is not None else self.config.get("threshold", DEFAULT_THRESHOLD)
        )
        self.spacing = tuple(float(s) for s in config["spacing"])
        self.patch = tuple(int(p) for p in config["patch_size"])

    @property
    def arch(self) -> str:
        """The network: "shaspec" or "unet3d" (the config's ``kind``)."""
        return self.config["kind"]

    def probabilities(
        self,
        images: Mapping[str, Image | np.ndarray],
        spacing_xyz,
        mask: AvailabilityMask,
        chain: GridChain | None = None,
    ):
        """``(3, Z, Y, X)`` float32 probabilities (ET, TC, WT) on the grid of ``images``.

        Args:
            images: ``{key: Image}`` on one grid, or ``{key: (Z, Y, X) array}``.
                Those the mask marks missing are dropped before anything (the
                brain mask included) is computed.
            spacing_xyz: the arrays' voxel spacing; None with Images.
            mask: which modalities to use.
            chain: the case's ``GridChain`` when ``images`` come from the
                preparation step (on its preparation grid); None: their own grid.
        """
        prep = prepare({k: images[k] for k in mask.keys}, spacing_xyz, self.spacing)
        probs = predict_probabilities(
            self.model,
            prep.image,
            mask.available,
            self.patch,
            self.overlap,
            self.device,
            mirror_axes=self.mirror_axes,
        )
        # Thresholding and clean-up come next, on this grid: hence "preparation", not "input" (grid_chain.py).
        chain = (chain or GridChain.on(prep.grid.reference)).with_working(prep.grid)
        return chain.inverse(probs.numpy(), "probability", to="preparation")

    def segment(
        self,
        images: Mapping[str, Image],
        mask: AvailabilityMask | None = None,
        cleanup: bool = True,
        label_convention: str = "2018",
        chain: GridChain | None = None,
        threshold: float | None = None,
        probabilities: np.ndarray | None = None,
    ) -> Image:
        """uint8 BraTS labels on the grid of the input images.

        Args:
            images: ``{key: Image}``, keys of ``medmodels.modalities``, all on one
                grid, raw intensities; missing keys absent.
            mask: which modalities to use (default: the keys of ``images``).
                A modality the mask marks missing is ignored even if given.
            cleanup: connected-component clean-up (ShaSpec*).
            label_convention: "2018" (ET = 4) or "2023" (ET = 3).
            chain: the case's ``GridChain`` when ``images`` come from the
                preparation step (on its preparation grid); None: their own grid.
            threshold: the probability threshold for this call (default: the segmenter's own).
            probabilities: ``probabilities(images, None, mask, chain)`` of these same inputs, computed
                already (for a synthesis' region map, ``medmodels.region_condition``): used instead of
                running the network again.
        """
        if label_convention not in ("2018", "2023"):
            raise InputError(f"Unknown label convention '{label_convention}': use '2018' or '2023'.")
        mask = resolve_mask(images, mask)
        used = {k: images[k] for k in mask.keys}
        ref = used[mask.keys[0]]
        for k, img in used.items():
            if not img.same_grid(ref):
                raise InputError(
                    f"{k} is not on the grid of {mask.keys[0]}: bring all inputs onto one grid "
                    "first (medmodels.resampling.to_common_grid)."
                )
        if probabilities is not None and probabilities.shape != (3, *ref.shape):
            raise InputError(
                f"The given probabilities have shape {probabilities.shape}, not (3, *{ref.shape}) of the images: "
                "pass those computed from these same images, or none."
            )
        probs = self.probabilities(used, None, mask, chain) if probabilities is None else probabilities
        threshold = self.threshold if threshold is None else check_threshold(threshold)
        regions = regions_from_probabilities(probs, threshold, ref.spacing, cleanup)
        labels = regions_to_labels(regions, label_convention)
        return Image(labels, ref.spacing, ref.origin, ref.direction)


def segmenter_file(checkpoint: str | Path | None = None) -> Path:
    """The file a segmentation checkpoint reference stands for: "bundled", "baseline", "ensemble" or a
    path, and None = ``DEFAULT_SEGMENTER`` (the ensemble; ``weights.resolve_checkpoint``'s None is
    "bundled"). The one place the words and the default become a file: ``load_segmenter``, the
    held-out checks, calibration, ensembles and the figures all come through here."""
    ref = DEFAULT_SEGMENTER if checkpoint is None else checkpoint
    return resolve_checkpoint(ref, BUNDLED_NAME, BASELINE_NAME, ENSEMBLE_NAME)


def segmenter_record(checkpoint: str | Path | None = None) -> dict:
    """``{"checkpoint", "sha256"}`` of the file ``segmenter_file`` resolves ``checkpoint`` to, as results name
    the segmenter that ran (the SHA-256 is its record's, which ``load_segmenter`` checks the file against)."""
    path = segmenter_file(checkpoint)
    return {"checkpoint": str(path), "sha256": read_record(path)["sha256"]}


def load_segmenter(
    checkpoint: str | Path | None = None,
    device: str = "auto",
    overlap: float = 0.5,
    mirror_axes: tuple[int, ...] = (),
    threshold: float | None = None,
) -> Segmenter:
    """Load a segmenter: ``"bundled"`` = the bundled ShaSpec weights, ``"baseline"`` = the bundled
    baseline U-Net, ``"ensemble"`` = the two averaged, ``checkpoint=None`` = ``DEFAULT_SEGMENTER``
    (the ensemble), else a path to a ``.pt`` with its ``.json`` record beside it (its SHA-256 is
    checked before loading).
    ``mirror_axes``: test-time mirroring (``predict_probabilities``).
    ``threshold``: instead of the checkpoint's own (``config["threshold"]``, else 0.5)."""
    model, config = load_network(
        segmenter_file(checkpoint),
        BUNDLED_NAME,
        BASELINE_NAME,
        "segmentation",
        ("kind", "net", "spacing", "patch_size"),
        build_segmentation_net,
    )
    return Segmenter(model, config, resolve_device(device), overlap, mirror_axes, threshold)
