"""Reading images (NIfTI, NRRD, MetaImage, DICOM series folders) and writing
them (NIfTI, NRRD, MetaImage: every output of medmodels is one of these).

SimpleITK does the work; this file adds the checks a user needs (a clear
error for a file that is not an image, for 2D/4D data, for NaN voxels) and
atomic writes, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medmodels.atomic import publish
from medmodels.errors import InputError
from medmodels.image import Image

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_volume_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES)


def read_image(path: str | os.PathLike, check_finite: bool = True) -> Image:
    """Read one 3D image: a NIfTI/NRRD/MetaImage file or a DICOM series folder.

    Raises:
        InputError: the path is missing, not an image, not 3D, or holds
            NaN or infinite voxels.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"'{path}' does not exist: check the path.")
    if path.is_dir():
        image = _read_dicom_series(path)
    else:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as err:
            raise InputError(
                f"'{path}' could not be read as an image ({_first_line(err)}). "
                "Give a NIfTI (.nii/.nii.gz), NRRD (.nrrd) or MetaImage file, or a DICOM series folder."
            ) from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"'{path}' has {image.GetNumberOfComponentsPerPixel()} components per voxel (a colour or vector "
            "image): give a scalar MRI volume."
        )
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
        dim = 3
    if dim != 3:
        raise InputError(
            f"'{path}' is a {dim}D image of size {image.GetSize()}; a 3D volume is needed. "
            + (
                "Split the 4D series into one 3D volume per modality."
                if dim == 4
                else "Give the whole 3D volume, not a slice."
            )
        )
    result = Image.from_sitk(image)
    if check_finite and np.issubdtype(result.array.dtype, np.floating) and not np.isfinite(result.array).all():
        bad = int((~np.isfinite(result.array)).sum())
        raise InputError(
            f"'{path}' has {bad} NaN or infinite voxels: fix or mask them (e.g. set them to 0) before use."
        )
    return result


def _read_dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(
            f"'{folder}' is a folder with no DICOM series in it: give a folder of one DICOM series, or an image file."
        )
    if len(series) > 1:
        raise InputError(
            f"'{folder}' holds {len(series)} DICOM series ({', '.join(series)}): put each series in its own folder."
        )
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    try:
        return reader.Execute()
    except RuntimeError as err:
        raise InputError(f"The DICOM series in '{folder}' could not be read ({_first_line(err)}).") from None


def write_image(image: Image, path: str | os.PathLike) -> Path:
    """Write an image atomically (to a temporary file, then renamed); the
    suffix of ``path`` (.nii.gz, .nii, .nrrd or .mha) chooses the format.

    Raises:
        InputError: another suffix, or a detached-header format.
    """
    path = Path(path)
    if not path.name.lower().endswith(VOLUME_SUFFIXES):
        raise InputError(f"'{path}' has no image suffix: name the output .nii.gz, .nii, .nrrd or .mha.")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = next(s for s in VOLUME_SUFFIXES if path.name.lower().endswith(s))
    if suffix in (".nhdr", ".mhd"):
        raise InputError(f"Detached-header formats ({suffix}) cannot be written atomically: use .nrrd or .mha.")
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(image.to_sitk(), tmp, useCompression=True)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _first_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__
