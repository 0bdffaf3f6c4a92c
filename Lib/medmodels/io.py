"""Reading images (NIfTI, NRRD, MetaImage, DICOM series folders) and writing
them (NIfTI, NRRD, MetaImage: every output of medmodels is one of these).

SimpleITK does the work; this file adds the checks a user needs and SimpleITK
does not make:

- a clear error for a file that is not an image, for 2D/4D data, for NaN voxels;
- a NIfTI file is checked byte for byte before SimpleITK reads it: ITK fills a
  truncated gzip stream with zeros and turns NaN/Inf into 0 without a word, so
  the gzip stream's integrity, the data size against the header and the
  finiteness of float data are checked here (``check_nifti``);
- the header is read first, so a sheared grid or a volume larger than the
  memory is refused before the pixels are read;
- writes are atomic (temporary name, verified, renamed), and a failed write
  (full disk, read-only folder) is an ``InputError`` naming the file, never a
  truncated file under the final name.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medmodels.atomic import publish, staging_prefix
from medmodels.errors import InputError
from medmodels.image import Image, check_direction

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: The largest voxel magnitude read: MRI intensities stay far below it, and float32 sums of squares
#: (means, variances, registration metrics) of larger values overflow.
MAX_INTENSITY = 1e12
#: NIfTI datatype codes of float data (float32, float64), the ones that can hold NaN/Inf.
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}


def is_volume_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES)


def read_image(path: str | os.PathLike, check_finite: bool = True) -> Image:
    """Read one 3D image: a NIfTI/NRRD/MetaImage file or a DICOM series folder.

    Raises:
        InputError: the path is missing (or a link loop), not an image, a
            damaged or truncated NIfTI file, a DICOM series with uneven slice
            positions (a missing slice), not 3D, complex-valued, sheared,
            larger than the free memory, or holds NaN or infinite voxels or
            values beyond ``MAX_INTENSITY``.
    """
    path = Path(path)
    if not path.exists():
        what = "is a broken link or a link loop" if path.is_symlink() else "does not exist"
        raise InputError(f"'{path}' {what}: check the path.")
    if path.is_dir():
        image = _read_dicom_series(path)
    else:
        if path.name.lower().endswith((".nii", ".nii.gz")):
            check_nifti(path, check_finite)
        header = _read_information(path)
        if header.GetDimension() == 3:  # other dimensions are refused (or reduced) by _as_3d, with their own words
            check_direction(header.GetDirection(), f"'{path}'")
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as err:
            raise InputError(f"'{path}' could not be read as an image ({_first_line(err)}).") from None
    image = _as_3d(image, path)
    check_direction(image.GetDirection(), f"'{path}'")
    result = Image.from_sitk(image)
    if check_finite and np.issubdtype(result.array.dtype, np.floating) and not np.isfinite(result.array).all():
        bad = int((~np.isfinite(result.array)).sum())
        raise InputError(
            f"'{path}' has {bad} NaN or infinite voxels: fix or mask them (e.g. set them to 0) before use."
        )
    peak = max(abs(float(result.array.max())), abs(float(result.array.min()))) if result.array.size else 0.0
    if peak > MAX_INTENSITY:  # squares and sums of such values overflow float32 in every later step
        raise InputError(
            f"'{path}' has voxel values up to {peak:.3g}, far beyond any MRI intensity (at most "
            f"{MAX_INTENSITY:.0e} here): the header's scaling (scl_slope) or data type is wrong. Rescale the "
            "volume or fix its header."
        )
    return result


def read_header(path: str | os.PathLike) -> Image:
    """The geometry of an image file without its pixels, for checks before any work.

    Returns:
        an ``Image`` whose array is a read-only view of one zero broadcast to
        the file's ``(Z, Y, X)`` shape (no memory), with the file's geometry.

    Raises:
        InputError: a missing file, not an image, or not 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"'{path}' does not exist or is not a file: check the path.")
    header = _read_information(path)
    size = tuple(int(n) for n in header.GetSize())
    if len(size) == 4 and size[3] == 1:
        size = size[:3]
    if len(size) != 3:
        raise InputError(f"'{path}' is a {len(size)}D image of size {size}; a 3D volume is needed.")
    direction = np.asarray(header.GetDirection()).reshape(header.GetDimension(), -1)[:3, :3]
    shape = size[::-1]
    return Image(
        np.broadcast_to(np.zeros((), np.uint8), shape),
        header.GetSpacing()[:3],
        header.GetOrigin()[:3],
        tuple(direction.ravel()),
    )


def _read_information(path: Path) -> sitk.ImageFileReader:
    """The header of an image file (no pixels read), its size checked against the free memory."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(
            f"'{path}' could not be read as an image ({_first_line(err)}). "
            "Give a NIfTI (.nii/.nii.gz), NRRD (.nrrd) or MetaImage file, or a DICOM series folder."
        ) from None
    voxels = int(np.prod([int(n) for n in reader.GetSize()], dtype=np.float64))
    # A float32 copy of the voxels is what every later step holds at least.
    check_memory(voxels * 4 * reader.GetNumberOfComponents(), f"reading '{path}' ({reader.GetSize()} voxels)")
    return reader


def _as_3d(image: sitk.Image, path: Path) -> sitk.Image:
    """A scalar 3D image, or the InputError that says what the file holds instead."""
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(
            f"'{path}' holds complex values (raw or phase data), not a magnitude image: give the magnitude "
            "volume (the scanner's reconstructed image, or the absolute value of this one)."
        )
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
    return image


def _nifti_header(head: bytes, path: Path) -> tuple[str, int, int, tuple[int, ...], int, str]:
    """``(byte order, datatype, bitpix, dims, data offset, version)`` of a NIfTI-1 or NIfTI-2 header."""
    for order in "<>":
        if len(head) >= 348 and np.frombuffer(head, f"{order}i4", 1, 0)[0] == 348:
            ndim = int(np.frombuffer(head, f"{order}i2", 1, 40)[0])
            dims = np.frombuffer(head, f"{order}i2", 8, 40)[1 : 1 + max(0, min(ndim, 7))]
            datatype, bitpix = (int(v) for v in np.frombuffer(head, f"{order}i2", 2, 70))
            offset = int(np.frombuffer(head, f"{order}f4", 1, 108)[0])
            return order, datatype, bitpix, tuple(int(d) for d in dims), max(offset, 348), "1"
        if len(head) >= 540 and np.frombuffer(head, f"{order}i4", 1, 0)[0] == 540:
            datatype, bitpix = (int(v) for v in np.frombuffer(head, f"{order}i2", 2, 12))
            ndim = int(np.frombuffer(head, f"{order}i8", 1, 16)[0])
            dims = np.frombuffer(head, f"{order}i8", 8, 16)[1 : 1 + max(0, min(ndim, 7))]
            offset = int(np.frombuffer(head, f"{order}i8", 1, 168)[0])
            return order, datatype, bitpix, tuple(int(d) for d in dims), max(offset, 540), "2"
    raise InputError(
        f"'{path}' could not be read as an image: it is named like NIfTI but has no NIfTI header (damaged, or "
        "not NIfTI). "
        "Give an intact NIfTI file (export it again), or a NRRD/MetaImage file."
    )


def check_nifti(path: str | os.PathLike, check_finite: bool = True) -> None:
    """Check a NIfTI file's bytes before trusting a read of it.

    Reads the whole (decompressed) file: the gzip stream must be complete and
    its checksum right, the data must be as long as the header's dimensions
    say, and float data must hold no NaN or infinity (ITK's reader turns
    them into 0 silently, and zero-fills a truncated stream).

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        check_finite: also refuse NaN/Inf in float data.

    Raises:
        InputError: naming what is wrong and the fix.
    """
    path = Path(path)
    fix = "Copy or export the file again (a download or copy was cut short, or the disk was full)."
    try:
        with gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb") as f:
            data = f.read()
    except gzip.BadGzipFile as err:
        raise InputError(f"'{path}' could not be read as an image (not a gzip file: {err}). {fix}") from None
    except (EOFError, zlib.error) as err:
        raise InputError(f"'{path}' is a damaged or truncated gzip file ({err}). {fix}") from None
    except OSError as err:
        raise InputError(f"'{path}' could not be read ({err.strerror or err}).") from None
    order, datatype, bitpix, dims, offset, _ = _nifti_header(data[:540], path)
    expected = offset + int(np.prod(dims, dtype=np.int64)) * max(bitpix, 1) // 8
    if len(data) < expected:
        raise InputError(
            f"'{path}' is truncated: its header announces {expected} bytes of image data and header, "
            f"the file holds {len(data)}. {fix}"
        )
    if check_finite and datatype in _NIFTI_FLOAT_TYPES:
        values = np.frombuffer(data, order + _NIFTI_FLOAT_TYPES[datatype], int(np.prod(dims)), offset)
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise InputError(
                f"'{path}' has {bad} NaN or infinite voxels: fix or mask them (e.g. set them to 0) before use."
            )


def available_memory_bytes() -> int | None:
    """Memory the system can still give this process (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(needed_bytes: float, what: str) -> None:
    """Refuse work that needs more memory than is free, before allocating it.

    Args:
        needed_bytes: the estimate.
        what: the work, for the message ("reading 'x.nii.gz' ...").
    """
    free = available_memory_bytes()
    if free is not None and needed_bytes > free:
        raise InputError(
            f"{what} needs about {needed_bytes / 2**30:.1f} GiB of memory, but {free / 2**30:.1f} GiB is free: "
            "check the volume's size and spacing in its header, or free memory (close other programs)."
        )


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
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    _check_slice_positions(folder, series[0], files)
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as err:
        raise InputError(f"The DICOM series in '{folder}' could not be read ({_first_line(err)}).") from None


def _slice_positions(files: tuple[str, ...]) -> np.ndarray | None:
    """Each file's position (mm) along the slice normal, from its Image Position and Orientation
    (Patient) tags; None where a file lacks them (then nothing can be checked)."""
    positions, reader = [], sitk.ImageFileReader()
    for name in files:
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
            where = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
            axes = np.asarray([float(v) for v in reader.GetMetaData("0020|0037").split("\\")]).reshape(2, 3)
        except (RuntimeError, ValueError):
            return None
        positions.append(float(np.dot(np.cross(axes[0], axes[1]), where)))
    return np.asarray(positions)


def _check_slice_positions(folder: Path, series: str, files: tuple[str, ...]) -> None:
    """Refuse a DICOM series whose slices are not evenly spaced (a missing, doubled or damaged slice).

    ITK's series reader spreads the slices evenly between the first and the
    last whatever their recorded positions (it only prints a warning), so a
    series missing a middle slice would be read on a wrong grid, its slices up
    to half a gap off. A tolerance of 1 % of the spacing (at least 0.01 mm)
    allows for the rounding of positions written as decimal strings.

    Args:
        folder: the series folder (for the message).
        series: the series instance UID (for the message).
        files: the series' files, as GDCM sorted them.
    """
    positions = None if len(files) < 3 else _slice_positions(files)
    if positions is None:
        return
    order = np.argsort(positions)
    gaps = np.diff(positions[order])
    spacing = float(np.median(gaps))
    uneven = np.flatnonzero(np.abs(gaps - spacing) > max(0.01, 0.01 * spacing))
    if spacing <= 0 or not uneven.size:
        return
    worst = int(uneven[np.argmax(np.abs(gaps[uneven] - spacing))])
    first, second = (Path(files[order[worst + i]]).name for i in (0, 1))
    raise InputError(
        f"The DICOM series {series} in '{folder}' has uneven slice positions: its slices are {spacing:.3f} mm "
        f"apart, but {gaps[worst]:.3f} mm between '{first}' and '{second}' ({len(uneven)} uneven gap(s): a "
        "missing, doubled or damaged slice). Read as it is, every slice would be misplaced. Export the "
        "complete series again from the scanner or PACS, or leave the series out."
    )


def write_image(image: Image, path: str | os.PathLike) -> Path:
    """Write an image atomically: to a temporary file, verified, then renamed;
    the suffix of ``path`` (.nii.gz, .nii, .nrrd or .mha) chooses the format.

    Verified means: the file is not empty, its header reads back with the
    image's size, and a NIfTI file passes ``check_nifti`` (complete gzip
    stream, all the data), because SimpleITK's writer does not always raise
    when the disk fills.

    Raises:
        InputError: another suffix, a detached-header format, or a write that
            failed (full disk, read-only or missing folder), naming the file.
    """
    path = Path(path)
    if not path.name.lower().endswith(VOLUME_SUFFIXES):
        raise InputError(f"'{path}' has no image suffix: name the output .nii.gz, .nii, .nrrd or .mha.")
    suffix = next(s for s in VOLUME_SUFFIXES if path.name.lower().endswith(s))
    if suffix in (".nhdr", ".mhd"):
        raise InputError(f"Detached-header formats ({suffix}) cannot be written atomically: use .nrrd or .mha.")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=staging_prefix(), suffix=suffix, dir=path.parent)
        os.close(fd)
        sitk.WriteImage(image.to_sitk(), tmp, useCompression=True)
        _verify_written(Path(tmp), image)
        publish(tmp, path)
    except (OSError, RuntimeError) as err:
        reason = getattr(err, "strerror", None) or _first_line(err)
        raise InputError(
            f"Could not write '{path}' ({reason}): free space on the disk, or choose a writable output folder."
        ) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return path


def _verify_written(tmp: Path, image: Image) -> None:
    """Raise OSError unless ``tmp`` holds ``image``'s header and all of its data."""
    if tmp.stat().st_size == 0:
        raise OSError(f"the written file is empty ({tmp.name})")
    if tmp.name.lower().endswith((".nii", ".nii.gz")):
        try:
            check_nifti(tmp, check_finite=False)
        except InputError as err:
            raise OSError(f"the written file is incomplete: {err}") from None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(tmp))
    reader.ReadImageInformation()
    if tuple(reader.GetSize()) != tuple(image.size_xyz):
        raise OSError(f"the written file reads back as size {reader.GetSize()}, not {image.size_xyz}")


def _first_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__
