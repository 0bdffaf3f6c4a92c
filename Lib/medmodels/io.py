"""Reading and writing images: NIfTI, NRRD, MetaImage and DICOM series folders.

SimpleITK does the work; this file adds the checks a user needs (a clear
error for a file that is not an image, for 2D/4D data, for NaN voxels) and
atomic writes, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import os
import tempfile
import time
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
            + ("Split the 4D series into one 3D volume per modality." if dim == 4 else "Give the whole 3D volume, not a slice.")
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
        raise InputError(f"'{folder}' is a folder with no DICOM series in it: give a folder of one DICOM series, or an image file.")
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
    """Write an image atomically (to a temporary file, then renamed).

    A path ending in a volume suffix writes that format; any other path is
    taken as a folder and receives a DICOM series.
    """
    path = Path(path)
    if not path.name.lower().endswith(VOLUME_SUFFIXES):
        write_dicom_series(image, path)
        return path
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


def write_dicom_series(image: Image, folder: str | os.PathLike, series_description: str = "medmodels") -> Path:
    """Write an image as a DICOM series (one file per slice), oblique geometry kept.

    Non-integer values are stored as 16-bit integers with a rescale slope and intercept.
    The folder is written in a temporary sibling and renamed, so it appears whole.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"'{folder}' exists and is not empty: choose a new folder for the DICOM series.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder.parent))
    try:
        arr = image.array.astype(np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        integer = np.array_equal(arr, np.round(arr)) and lo >= -32768 and hi <= 32767
        if integer:
            volume = image.with_array(arr.astype(np.int16)).to_sitk()
            extra = {}
        else:
            # GDCM stores float voxels as unsigned 16-bit with a rescale slope and an
            # integer intercept (it refuses a fractional one), as in SimpleITK's example.
            intercept = int(np.floor(lo))
            slope = max(hi - intercept, 1e-6) / 65000.0
            volume = image.with_array(arr.astype(np.float32)).to_sitk()
            extra = {"0028|1052": str(intercept), "0028|1053": f"{slope:.10g}", "0028|0100": "16",
                     "0028|0101": "16", "0028|0102": "15", "0028|0103": "0"}
        d = np.asarray(image.direction).reshape(3, 3)
        uid = "1.2.826.0.1.3680043.8.498." + str(int(time.time() * 1e6))
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for k in range(volume.GetDepth()):
            s = volume[:, :, k]
            position = volume.TransformIndexToPhysicalPoint((0, 0, k))
            tags = {
                "0008|0060": "MR",
                "0008|103e": series_description,
                "0020|000d": uid + ".1",
                "0020|000e": uid + ".2",
                "0020|0013": str(k + 1),
                "0020|0032": "\\".join(f"{p:.6f}" for p in position),
                "0020|0037": "\\".join(f"{v:.8f}" for v in (*d[:, 0], *d[:, 1])),
                "0018|0050": f"{image.spacing[2]:.6f}",
                "0008|0018": f"{uid}.3.{k + 1}",
                **extra,
            }
            for tag, value in tags.items():
                s.SetMetaData(tag, value)
            writer.SetFileName(str(tmp / f"slice_{k:04d}.dcm"))
            writer.Execute(s)
        if folder.exists():
            folder.rmdir()
        publish(tmp, folder)
    finally:
        if tmp.exists():
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
    return folder


def _first_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__
