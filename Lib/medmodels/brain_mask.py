"""The brain mask the models normalise and crop by, and the refusal of blank inputs."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import SimpleITK as sitk

from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.modalities import BY_KEY

#: Above this fraction of non-zero voxels, the input is taken as not skull-stripped.
SKULL_STRIPPED_MAX_FRACTION = 0.6


def brain_mask(images: Mapping[str, Image]) -> np.ndarray:
    """Boolean ``(Z, Y, X)`` brain mask from images on one grid.

    Skull-stripped input (BraTS): the union of non-zero voxels. Otherwise
    (more than 60 % of voxels non-zero, i.e. the background is not zero): an
    Otsu threshold of the mean of the max-scaled images, the largest
    connected component, holes filled. That fallback finds the head, not the
    brain; skull-strip the input for best results.
    """
    arrays = [np.asarray(img.array, dtype=np.float32) for img in images.values()]
    if not arrays:
        raise InputError("No modality is available: provide at least one of FLAIR, T1, T1c or T2.")
    nonzero = np.zeros(arrays[0].shape, dtype=bool)
    for a in arrays:
        nonzero |= a != 0
    if nonzero.mean() <= SKULL_STRIPPED_MAX_FRACTION:
        mask = nonzero
    else:
        mean = sum(a / max(float(np.percentile(a, 99.5)), 1e-6) for a in arrays) / len(arrays)
        otsu = sitk.OtsuThreshold(sitk.GetImageFromArray(mean.astype(np.float32)), 0, 1)
        largest = sitk.RelabelComponent(sitk.ConnectedComponent(otsu)) == 1
        mask = sitk.GetArrayFromImage(sitk.BinaryFillhole(largest)).astype(bool)
    if not mask.any():
        what = (
            "every voxel of the inputs is zero"
            if not nonzero.any()
            else "no brain stands out from the background (the inputs are constant or nearly so)"
        )
        raise InputError(f"The brain mask is empty: {what}. Check that the right volumes were chosen.")
    return mask


#: A modality with fewer non-zero voxels than this fraction is refused as blank.
MIN_NONZERO_FRACTION = 1e-3


def check_informative(images: Mapping[str, Image]) -> None:
    """Refuse a blank or constant volume, naming its modality.

    A volume of zeros (or one value everywhere) given as acquired would be
    taken as that modality's image: the models would synthesise and segment
    from nothing. It is better left out (then it is synthesised).

    Args:
        images: ``{key: Image}``; keys are modality keys (others are named as they are).

    Raises:
        InputError: naming the first such modality, its one value, and the fix.
    """
    for key, image in images.items():
        name = BY_KEY[key].display if key in BY_KEY else key
        array = np.asarray(image.array)
        low, high = float(array.min()), float(array.max())
        if low == high:
            what = "every voxel is 0" if low == 0 else f"every voxel is {low:g}"
            raise InputError(
                f"The {name} volume is blank ({what}): choose the {name} series that holds image data, or "
                f"leave {name} out (it is then synthesised)."
            )
        if np.count_nonzero(array) < MIN_NONZERO_FRACTION * array.size:
            raise InputError(
                f"The {name} volume is nearly blank ({np.count_nonzero(array)} of {array.size} voxels are "
                f"non-zero): choose the {name} series that holds image data, or leave {name} out."
            )
