"""The learned brain extractor: deepbet's two networks, from the weights its wheel ships.

deepbet (Fisch et al., Computers in Biology and Medicine 2024; MIT licence,
https://github.com/wwu-mmll/deepbet) finds the brain of a T1-weighted head in
two passes of TorchScript U-Nets: a coarse one on the whole image at 128^3
gives the brain's bounding box, a fine one on that box at 256^3 gives the
mask. Its wheel (``deepbet==1.0.2``, a dependency of medmodels) installs the
two files under a top-level ``data/models/`` folder of site-packages; they
are found here through the wheel's own file list (``importlib.metadata``),
their SHA-256 checked against the values below, and loaded on the run's
device. Nothing is downloaded. deepbet's GUI and command line are never
imported: only ``deepbet.bet.BrainExtraction``, whose ``run_model`` and
``postprocess`` are the published inference steps (intensity window,
bounding box, largest component, filled holes).

The networks expect an image in RAS order at about 1 mm (they resize the
whole array to a fixed shape, whatever its voxels), so the series is
resampled to 1 mm isotropic voxels along its own axes and reoriented to RAS
first, and the mask comes back onto the series' grid.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medmodels.errors import CheckpointError
from medmodels.image import Image
from medmodels.resampling import resample_onto, working_geometry

DISTRIBUTION = "deepbet"
#: The version whose weights the SHA-256 values below are; pinned in pyproject.toml.
VERSION = "1.0.2"
#: File of the wheel -> its SHA-256 (the wheel's RECORD gives the same, base64-encoded).
WEIGHTS = {
    "bbox": ("data/models/bbox_model.pt", "39a7b2b5f799faa1391ea97bfcdc0b9299f20d84f2316a4ff8918dc4685e40aa"),
    "brain": ("data/models/model.pt", "de8ee7c69654d0dd3935dc4a5d84571d8ecf4637a6bfc01df399c4c2bc86e0fd"),
}
#: Voxel size (mm) the networks see: the resolution of the T1 images they were trained on.
NETWORK_SPACING_MM = 1.0
#: Probability above which a voxel is brain (deepbet's default).
THRESHOLD = 0.5


class ExtractorUnavailable(RuntimeError):
    """The learned extractor cannot run here (not installed, or its weights are not the recorded ones)."""


def weight_files() -> dict[str, Path]:
    """``{"bbox": path, "brain": path}`` of the installed wheel, each checked against ``WEIGHTS``.

    Raises:
        ExtractorUnavailable: deepbet is not installed, is another version, or lacks a file.
        CheckpointError: a file's SHA-256 is not the recorded one (altered or damaged).
    """
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ExtractorUnavailable(
            f"deepbet is not installed (pip install {DISTRIBUTION}=={VERSION}, a dependency of medmodels)"
        ) from None
    if dist.version != VERSION:
        raise ExtractorUnavailable(
            f"deepbet {dist.version} is installed, not {VERSION} whose weights medmodels knows "
            f"(pip install {DISTRIBUTION}=={VERSION})"
        )
    out = {}
    for name, (relative, sha256) in WEIGHTS.items():
        path = Path(dist.locate_file(relative))
        if not path.is_file():
            raise ExtractorUnavailable(
                f"deepbet's {relative} is missing: reinstall it (pip install --force-reinstall deepbet=={VERSION})"
            )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256:
            raise CheckpointError(
                f"deepbet's {path} has SHA-256 {digest}, not the recorded {sha256}: reinstall deepbet=={VERSION}."
            )
        out[name] = path
    return out


@functools.lru_cache(maxsize=2)
def load_extractor(device: str):
    """deepbet's ``BrainExtraction`` with both networks on ``device`` ("cpu", "cuda", "cuda:N"); cached per device."""
    import torch
    from deepbet.bet import BrainExtraction  # the inference class only: no GUI, no command line

    files = weight_files()
    # no_gpu=True loads on the CPU; the run's device, not deepbet's own choice of one, decides where they run.
    extractor = BrainExtraction(no_gpu=True, model_path=str(files["brain"]), bbox_model_path=str(files["bbox"]))
    extractor.model.to(torch.device(device))
    extractor.bbox_model.to(torch.device(device))
    return extractor


def _ras_array(image: sitk.Image) -> tuple[np.ndarray, sitk.Image]:
    """``(X, Y, Z)`` float32 array in RAS order (nibabel's closest canonical) and the reoriented image."""
    ras = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), "RAS")
    return np.ascontiguousarray(sitk.GetArrayFromImage(ras).transpose(2, 1, 0)), ras


def learned_brain_mask(image: Image, device: str = "cpu") -> Image:
    """The brain of one head series, by deepbet, as a uint8 0/1 mask on ``image``'s grid.

    Args:
        image: a T1-weighted (best), T1c, FLAIR or T2 head, not skull-stripped.
        device: the run's ``--device`` word ("auto", "cpu", "cuda", "cuda:N"; ``device.resolve_device``).

    Raises:
        ExtractorUnavailable: deepbet cannot run here, or found no head in the image.
        CheckpointError: its weights are not the recorded ones.
    """
    import torch

    from medmodels.device import resolve_device

    extractor = load_extractor(str(resolve_device(device)))
    grid = working_geometry(image, (NETWORK_SPACING_MM,) * 3)
    resampled = resample_onto(sitk.Cast(image.to_sitk(), sitk.sitkFloat32), grid, sitk.Transform(), sitk.sitkLinear)
    array, ras = _ras_array(resampled.to_sitk())
    with torch.inference_mode():
        try:
            probability = extractor.run_model(array)
            mask = extractor.postprocess(probability > THRESHOLD)
        except (AssertionError, ValueError) as e:  # deepbet asserts when its first pass finds no head
            raise ExtractorUnavailable(f"deepbet found no brain in this image ({e})") from e
    out = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.float32))
    out.CopyInformation(ras)
    # Resampling works in physical space, so the RAS-ordered mask needs no reorienting back. Linear, then
    # 0.5: the mask's surface, not a voxel staircase, on a finer or thicker target grid.
    back = resample_onto(out, image, sitk.Transform(), sitk.sitkLinear)  # float32, as ``out``
    return image.with_array((back.array >= 0.5).astype(np.uint8))
