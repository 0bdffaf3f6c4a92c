"""A seeded BraTS-like phantom: a skull-stripped brain with a glioma, in four contrasts.

The phantom always spans BraTS's field of view (240 x 240 x 155 mm, LPS, the
origin BraTS files carry); ``size`` only sets the number of voxels, so a small
phantom is a coarse brain of real size. That lets models trained on BraTS at a
coarse spacing run on it.

Tissues: white matter (WM), grey matter (GM, a cortical ribbon and deep
nuclei), cerebrospinal fluid (CSF: ventricles and sulcal rim) and a tumour with
necrotic core (label 1), enhancing rim (4) and edema (2). Relative intensities
follow what these tissues show in real scans:

- T1: WM > GM > CSF; tumour hypo-intense, necrosis darkest.
- T1c: as T1, but the enhancing rim is the brightest tissue (gadolinium).
- T2: CSF brightest; edema and necrosis bright; WM dark.
- FLAIR: CSF dark (fluid suppressed); edema brightest.

A smooth multiplicative bias field and Rician noise make it look scanned.

Two options make it look like a study as it comes from the scanner (issue 13):

- ``head=True`` wraps the brain in the layers a real head has outside it
  (``HEAD_TISSUES``: extra-axial CSF, skull, scalp fat, scalp), and the
  background carries the scanner's noise instead of zeros: the input is
  then *not* skull-stripped.
- ``scanned_phantom`` (``write_phantom_case(..., misalign=True)``) puts each
  contrast on its own thick-slice axial grid (5 mm by default) with a known
  rigid misalignment (rotation and shift), recorded so that registration
  can be checked against the truth.

The tumour's contrast comes in two styles (``LESION_CONTRAST``): ``"bright"``,
the default and the phantom's first contrast, whose lesion lies 1.5 to 3 times
further from the brain's mean than in any real case, and ``"real"``, whose
edema, necrosis and enhancing rim sit inside the range of real BraTS cases as
the segmentation network sees them (both measured with
``docs/lesion_contrast.py``). The default arguments give exactly the volumes
they always gave; the head's randomness comes from a generator of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from medmodels.atomic import check_output_folder, check_plain_name, write_json
from medmodels.datasets import case_file_names
from medmodels.image import Image
from medmodels.io import write_image
from medmodels.modalities import MODALITY_KEYS

FIELD_OF_VIEW_MM = (240.0, 240.0, 155.0)  # x, y, z as in BraTS
BRATS_ORIGIN = (0.0, -239.0, 0.0)

TISSUES = ("background", "csf", "gm", "wm", "edema", "necrosis", "enhancing")
#: Mean intensity of each healthy tissue per modality (white matter = 1).
CONTRAST = {
    #       bg    csf   gm    wm
    "t1": (0.0, 0.30, 0.72, 1.00),
    "t1c": (0.0, 0.32, 0.74, 1.00),
    "t2": (0.0, 1.70, 0.80, 0.50),
    "flair": (0.0, 0.18, 0.80, 0.62),
}
#: Mean intensity of each tumour tissue per modality (white matter = 1), per style.
#: ``"bright"`` (the default): the first phantom's lesion, 1.5-3 times further from the
#: brain's mean than in any of the real cases below; the self-tests and every figure
#: measured on the phantom use it.
#: ``"real"``: chosen so that the mean brain z-score of each region on the
#: segmentation network's 2.5 mm input (``docs/lesion_contrast.py``) lies inside
#: the range of the 15 BraTS 2018 cases of ``shared/data/brats18``, near their
#: middle (edema FLAIR about 2, T2 about 1, T1 and T1c a little below the brain's
#: mean; necrosis darkest on T1 and brightest on T2; the enhancing rim about 1.8 on
#: T1c). Real lesions are this subtle against the brain's spread of intensities.
LESION_CONTRAST = {
    "bright": {
        #      edema necrosis enhancing
        "t1": (0.62, 0.35, 0.70),
        "t1c": (0.64, 0.38, 1.60),
        "t2": (1.30, 1.50, 0.95),
        "flair": (1.45, 0.70, 1.05),
    },
    "real": {
        "t1": (0.90, 0.78, 0.94),
        "t1c": (0.90, 0.72, 1.80),
        "t2": (0.76, 0.95, 0.80),
        "flair": (0.92, 0.84, 0.87),
    },
}
LESION_STYLES = tuple(LESION_CONTRAST)
SCANNER_SCALE = {"t1": 500.0, "t1c": 520.0, "t2": 420.0, "flair": 380.0}
LABEL_OF = {"edema": 2, "necrosis": 1, "enhancing": 4}

#: Tissues outside the brain of a phantom made with ``head=True``; their
#: indices in the tissue map follow ``TISSUES`` (7, 8, ...).
HEAD_TISSUES = ("outer_csf", "skull", "fat", "scalp")
#: Thickness (mm) of each head layer, from the brain's surface outwards.
HEAD_LAYERS_MM = {"outer_csf": 2.5, "skull": 5.0, "fat": 3.0, "scalp": 2.5}
#: Mean intensity of each head tissue per modality (white matter = 1, as in ``CONTRAST``):
#: cortical bone is dark in every contrast; fat is bright in every clinical
#: sequence (T1 brightest); extra-axial CSF as CSF; scalp (skin, muscle) intermediate.
HEAD_CONTRAST = {
    #        outer_csf skull  fat   scalp
    "t1": (0.30, 0.06, 1.45, 0.55),
    "t1c": (0.32, 0.06, 1.40, 0.75),
    "t2": (1.70, 0.05, 1.10, 0.45),
    "flair": (0.18, 0.05, 1.25, 0.55),
}
#: A 4x4 homogeneous matrix (LPS, mm) as nested lists: ``p_out = M @ [p_in, 1]``.
Matrix = list


@dataclass(frozen=True)
class PhantomCase:
    """A generated case: the four images and the label map, on one grid."""

    images: dict[str, Image]
    labels: Image
    tissues: Image  # index into TISSUES (then HEAD_TISSUES), for tests of the contrast relations

    @property
    def brain(self) -> np.ndarray:
        """``(Z, Y, X)`` bool: the brain (every tissue of ``TISSUES`` but background), the
        truth a brain extraction is measured against."""
        t = self.tissues.array
        return (t > 0) & (t < len(TISSUES))


def upsample_linear(array: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Resize an array by separable linear interpolation, half-pixel centres.

    The rule of ``torch.nn.functional.interpolate(mode="trilinear",
    align_corners=False)``, in numpy: the phantom needs no torch, so Slicer's
    own Python (which has none before the PyTorch extension installs it) can
    generate the module's self-test and demo data.

    Args:
        array: float32 array of any number of dimensions.
        size: output length along each axis of ``array``.
    """
    out = array.astype(np.float32)
    for axis in reversed(range(out.ndim)):
        n_in, n_out = out.shape[axis], size[axis]
        source = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * np.float32(n_in / n_out) - np.float32(0.5)
        source = np.maximum(source, np.float32(0.0))
        low = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
        high = np.minimum(low + 1, n_in - 1)
        shape = [1] * out.ndim
        shape[axis] = n_out
        weight = np.clip(source - low, 0.0, 1.0).astype(np.float32).reshape(shape)
        out = np.take(out, low, axis=axis) * (np.float32(1.0) - weight) + np.take(out, high, axis=axis) * weight
    return out


def check_lesion_style(lesion: str) -> None:
    """Refuse a ``lesion`` that is not a key of ``LESION_CONTRAST`` (ValueError naming the choices)."""
    if lesion not in LESION_CONTRAST:
        raise ValueError(f"lesion must be one of {', '.join(LESION_STYLES)} (got {lesion!r}).")


def make_phantom(
    size: tuple[int, int, int] = (96, 96, 64),
    seed: int = 0,
    noise: float = 0.03,
    bias: float = 0.15,
    head: bool = False,
    lesion: str = "bright",
) -> PhantomCase:
    """Generate a phantom case.

    Args:
        size: voxels along ``(x, y, z)``; the field of view is fixed, so the
            spacing is ``240/x, 240/y, 155/z`` mm.
        seed: everything random (shape, tumour position, bias, noise) follows it.
        noise: Rician noise sigma relative to white matter.
        bias: strength of the smooth multiplicative bias field.
        head: wrap the brain in ``HEAD_TISSUES`` (CSF, skull, fat, scalp) and keep
            the scanner's noise in the background: a study not skull-stripped.
        lesion: the tumour's contrast, a key of ``LESION_CONTRAST`` ("bright" or
            "real"); the anatomy and the noise are the same with either.

    Raises:
        ValueError: ``lesion`` is not one of ``LESION_STYLES``.
    """
    check_lesion_style(lesion)
    rng = np.random.default_rng(seed)
    nx, ny, nz = size
    spacing = tuple(f / n for f, n in zip(FIELD_OF_VIEW_MM, size))
    # Physical coordinates (mm) of voxel centres relative to the FOV centre, array order z, y, x.
    z, y, x = np.meshgrid(
        *[(np.arange(n) + 0.5) * s - f / 2 for n, s, f in zip((nz, ny, nx), spacing[::-1], FIELD_OF_VIEW_MM[::-1])],
        indexing="ij",
    )

    def smooth_noise(scale_mm: float, amplitude: float) -> np.ndarray:
        # Smooth random field with correlation length ~scale_mm, made on a grid
        # of scale_mm/2 and interpolated up: the same look at any size, and fast.
        coarse = [max(4, int(np.ceil(f / (scale_mm / 2)))) for f in FIELD_OF_VIEW_MM[::-1]]
        field = ndimage.gaussian_filter(rng.standard_normal(coarse), 1.0, mode="wrap")
        field = upsample_linear(field.astype(np.float32), (nz, ny, nx))
        return amplitude * field / (field.std() + 1e-8)

    def ellipsoid(c, r, wobble=None) -> np.ndarray:
        d = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2
        return d < (1.0 + (wobble if wobble is not None else 0.0))

    tissue, brain = _healthy_brain(spacing, rng, ellipsoid, smooth_noise)
    _add_tumour(tissue, brain, rng, ellipsoid, smooth_noise)

    labels = np.select([tissue == TISSUES.index(n) for n in LABEL_OF], list(LABEL_OF.values()), 0).astype(np.uint8)
    if head:
        _add_head(tissue, brain, spacing, seed)

    bias_field = np.exp(smooth_noise(60, bias))
    sigma_pv = [0.6 / max(1.0, s) for s in spacing[::-1]]  # a little partial-volume blur
    geometry = dict(spacing=spacing, origin=BRATS_ORIGIN)
    images = {}
    for key in MODALITY_KEYS:
        means = np.asarray(
            CONTRAST[key] + LESION_CONTRAST[lesion][key] + (HEAD_CONTRAST[key] if head else ()), np.float32
        )
        clean = means[tissue] * (1.0 + smooth_noise(4, 0.03))  # texture within tissues
        clean = ndimage.gaussian_filter(clean, sigma_pv) * bias_field
        n1, n2 = (rng.standard_normal(clean.shape) * noise for _ in range(2))
        noisy = np.sqrt((clean + n1) ** 2 + n2**2)  # Rician magnitude noise
        # A stripped study is 0 outside the brain; a scanner's keeps its noise floor everywhere.
        volume = noisy * SCANNER_SCALE[key] if head else np.where(brain, noisy * SCANNER_SCALE[key], 0.0)
        images[key] = Image(np.round(volume).astype(np.int16), **geometry)
    return PhantomCase(images, Image(labels, **geometry), Image(tissue, **geometry))


def _healthy_brain(spacing, rng, ellipsoid, smooth_noise) -> tuple[np.ndarray, np.ndarray]:
    """The healthy brain: ``(tissue, brain)``, ``(Z, Y, X)`` uint8 indices into ``TISSUES`` and bool.

    Args:
        spacing: ``(x, y, z)`` voxel size in mm.
        rng: the phantom's generator (drawn from in a fixed order).
        ellipsoid: ``make_phantom``'s ``(centre, radii, wobble) -> (Z, Y, X)`` bool.
        smooth_noise: ``make_phantom``'s ``(scale_mm, amplitude) -> (Z, Y, X)`` smooth field.
    """
    # Brain: an ellipsoid with a gently irregular surface.
    brain_r = np.array([68.0, 85.0, 62.0]) * rng.uniform(0.94, 1.04, 3)
    brain = ellipsoid((0, 5, 5), brain_r, smooth_noise(20, 0.05))
    cortex_depth = ndimage.distance_transform_edt(brain, sampling=spacing[::-1])
    gm = brain & (cortex_depth < 4.0 + smooth_noise(8, 1.0))
    csf = brain & (cortex_depth < 1.5 + smooth_noise(6, 0.7))  # sulcal CSF rim
    for side in (-1, 1):  # lateral ventricles
        csf |= ellipsoid((side * 9, 0, 15), (6, 24, 9), smooth_noise(10, 0.15))
    for side in (-1, 1):  # deep grey nuclei
        gm |= ellipsoid((side * 20, 5, 8), (8, 12, 9))

    tissue = np.zeros(brain.shape, dtype=np.uint8)
    tissue[brain] = TISSUES.index("wm")
    tissue[gm] = TISSUES.index("gm")
    tissue[csf] = TISSUES.index("csf")
    return tissue, brain


def _add_tumour(tissue: np.ndarray, brain: np.ndarray, rng, ellipsoid, smooth_noise) -> None:
    """Write a glioma (edema, enhancing rim, necrotic core) into ``tissue``, in place.

    Args:
        tissue: ``(Z, Y, X)`` uint8 indices into ``TISSUES``.
        brain: ``(Z, Y, X)`` bool brain (the tumour stays inside it).
        rng: the phantom's generator (drawn from in a fixed order).
        ellipsoid: ``make_phantom``'s ``(centre, radii, wobble) -> (Z, Y, X)`` bool.
        smooth_noise: ``make_phantom``'s ``(scale_mm, amplitude) -> (Z, Y, X)`` smooth field.
    """
    # Tumour in one hemisphere, away from the midline.
    side = rng.choice([-1, 1])
    centre = (side * rng.uniform(28, 38), rng.uniform(-35, 40), rng.uniform(10, 30))
    core_r = rng.uniform(9, 13)
    ratio = np.array([1.0, rng.uniform(0.85, 1.2), rng.uniform(0.8, 1.1)])
    edema = ellipsoid(centre, core_r * 2.2 * ratio, smooth_noise(10, 0.35)) & brain
    enhancing = ellipsoid(centre, core_r * ratio, smooth_noise(6, 0.2)) & brain
    necrosis = ellipsoid(centre, (core_r - 4.0) * ratio, smooth_noise(6, 0.2)) & brain
    tissue[edema & (tissue != TISSUES.index("csf"))] = TISSUES.index("edema")
    tissue[enhancing] = TISSUES.index("enhancing")
    tissue[necrosis] = TISSUES.index("necrosis")


def _add_head(tissue: np.ndarray, brain: np.ndarray, spacing, seed: int) -> None:
    """Write the head's layers (``HEAD_LAYERS_MM``) around ``brain`` into ``tissue``, in place.

    Args:
        tissue: ``(Z, Y, X)`` uint8 tissue map; voxels outside the brain get
            the indices of ``HEAD_TISSUES`` (after those of ``TISSUES``).
        brain: ``(Z, Y, X)`` bool brain.
        spacing: ``(x, y, z)`` voxel size in mm.
        seed: the phantom's seed; the layers' gentle unevenness follows it
            through a generator of their own, so the rest of the phantom is
            the same with and without a head.
    """
    rng = np.random.default_rng([seed, 13])
    outside = ndimage.distance_transform_edt(~brain, sampling=spacing[::-1])
    # Layers a little uneven (+-15 %), smooth over a few centimetres, as real scalps and skulls are.
    wobble = ndimage.gaussian_filter(rng.standard_normal(tissue.shape), 20.0 / min(spacing), mode="wrap")
    outside = outside * (1.0 + 0.15 * wobble / (wobble.std() + 1e-8))
    inner = 0.0
    for offset, name in enumerate(HEAD_TISSUES):
        outer = inner + HEAD_LAYERS_MM[name]
        tissue[(outside > inner) & (outside <= outer) & ~brain] = len(TISSUES) + offset
        inner = outer


#: The record of a misaligned phantom's transforms, beside its files.
TRANSFORMS = "transforms.json"


def phantom_files(case: str, naming: str = "2018", misalign: bool = False) -> list[str]:
    """The file names ``write_phantom_case`` writes into the case folder (arguments as there)."""
    return list(case_file_names(case, naming).values()) + ([TRANSFORMS] if misalign else [])


def write_phantom_case(
    out_dir: str | Path,
    case: str = "Phantom_001",
    size: tuple[int, int, int] = (96, 96, 64),
    seed: int = 0,
    naming: str = "2018",
    head: bool = False,
    misalign: bool = False,
    slice_mm: float = 5.0,
    lesion: str = "bright",
) -> Path:
    """Write a phantom as a BraTS case folder ``out_dir/case/``; returns that folder.

    Args:
        out_dir: parent folder.
        case: case name (folder and file prefix).
        size: voxels along ``(x, y, z)`` of the phantom (see ``make_phantom``).
        seed: the phantom's seed (the misalignment follows it too).
        naming: BraTS file naming, "2018" or "2023".
        head: skull, scalp and fat around the brain (``make_phantom``).
        misalign: each contrast on its own ``slice_mm`` axial grid with a
            known rigid misalignment (``scanned_phantom``); the label map is
            on the FLAIR grid, and ``transforms.json`` beside the files
            records the transforms.
        slice_mm: slice thickness of the misaligned grids.
        lesion: the tumour's contrast (``make_phantom``).

    Raises:
        InputError: ``case`` is not a plain name (``atomic.check_plain_name``), or
            the case folder already holds a file this would write (an existing
            case is never replaced).
    """
    folder = Path(out_dir) / check_plain_name(case, "case name (--case)")
    names = case_file_names(case, naming)
    check_output_folder(folder, phantom_files(case, naming, misalign), fix=f"give another case name than '{case}'")
    phantom = make_phantom(size, seed, head=head, lesion=lesion)
    images, label_image = phantom.images, phantom.labels
    if misalign:
        scanned = scanned_phantom(phantom, seed, slice_mm)
        images, label_image = scanned.images, scanned.labels
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / TRANSFORMS, scanned.record)
    labels = label_image.array
    if naming == "2023":
        labels = np.where(labels == 4, 3, labels).astype(np.uint8)
    for key, image in images.items():
        write_image(image, folder / names[key])
    write_image(label_image.with_array(labels), folder / names["seg"])
    return folder


# ---------------------------------------------------------------------------
# As from the scanner: each contrast on its own thick-slice grid, misaligned
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ScannedPhantom:
    """A phantom as separate scanner series.

    Attributes:
        images: key -> the contrast on its own thick-slice grid.
        labels: the label map on the FLAIR grid (nearest neighbour).
        brain: the true brain (uint8 0/1) on the FLAIR grid.
        record: JSON-ready truth: per key its grid and ``scanner_to_phantom``
            (4x4: a point of that series' space -> the phantom's anatomy).
    """

    images: dict[str, Image]
    labels: Image
    brain: Image
    record: dict


def rigid_matrix(rotation_deg, translation_mm, center_mm) -> np.ndarray:
    """4x4 homogeneous matrix of SimpleITK's ``Euler3DTransform`` (rotation about ``center_mm``).

    Args:
        rotation_deg: ``(ax, ay, az)`` Euler angles in degrees (SimpleITK's ZXY order).
        translation_mm: ``(tx, ty, tz)``.
        center_mm: ``(cx, cy, cz)`` centre of rotation, LPS mm.
    """
    t = sitk.Euler3DTransform(tuple(float(c) for c in center_mm))
    t.SetRotation(*(float(np.deg2rad(a)) for a in rotation_deg))
    t.SetTranslation(tuple(float(v) for v in translation_mm))
    m = np.eye(4)
    m[:3, :3] = np.asarray(t.GetMatrix()).reshape(3, 3)
    m[:3, 3] = np.asarray(t.GetTranslation()) + np.asarray(t.GetCenter()) - m[:3, :3] @ np.asarray(t.GetCenter())
    return m


def true_registration(record: dict, fixed: str, moving: str) -> np.ndarray:
    """The 4x4 map from ``fixed``'s series space to ``moving``'s (what a registration
    of ``moving`` onto ``fixed`` should find, in SimpleITK's fixed -> moving sense)."""
    to_phantom = {k: np.asarray(v["scanner_to_phantom"]) for k, v in record["series"].items()}
    return np.linalg.inv(to_phantom[moving]) @ to_phantom[fixed]


def _thick_grid(phantom: Image, slice_mm: float) -> Image:
    """The phantom's field of view on axial slices ``slice_mm`` thick (in-plane spacing kept)."""
    nz = max(1, int(round(FIELD_OF_VIEW_MM[2] / slice_mm)))
    spacing = (phantom.spacing[0], phantom.spacing[1], FIELD_OF_VIEW_MM[2] / nz)
    return Image(np.zeros((nz,) + phantom.shape[1:], np.uint8), spacing, phantom.origin, phantom.direction)


def _acquire(image: Image, grid: Image, matrix: np.ndarray, interpolation=sitk.sitkLinear) -> Image:
    """Sample ``image`` (the phantom's anatomy) onto ``grid`` through ``matrix``
    (series space -> phantom), each slice the mean over its thickness, as a 2D
    acquisition integrates its slab (nearest neighbour: the slice's centre)."""
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(tuple(matrix[:3, :3].ravel()))
    transform.SetTranslation(tuple(matrix[:3, 3]))
    sub = 1 if interpolation == sitk.sitkNearestNeighbor else max(1, int(np.ceil(grid.spacing[2] / image.spacing[2])))
    fine = sitk.Image(list(grid.size_xyz[:2]) + [grid.size_xyz[2] * sub], sitk.sitkUInt8)
    fine.SetSpacing(grid.spacing[:2] + (grid.spacing[2] / sub,))
    # Sub-slice centres spread over each slab: the first sits (sub-1)/2 sub-steps below the slab's centre.
    fine.SetOrigin(tuple(np.asarray(grid.origin) - np.asarray([0, 0, (sub - 1) / 2 * grid.spacing[2] / sub])))
    fine.SetDirection(grid.direction)
    source = (
        image.to_sitk() if interpolation == sitk.sitkNearestNeighbor else sitk.Cast(image.to_sitk(), sitk.sitkFloat32)
    )
    out = sitk.GetArrayFromImage(sitk.Resample(source, fine, transform, interpolation, 0.0, source.GetPixelID()))
    if sub > 1:
        out = out.reshape((grid.shape[0], sub) + grid.shape[1:]).mean(axis=1)
        out = np.round(out).astype(image.array.dtype)
    return grid.with_array(out.astype(image.array.dtype))


def scanned_phantom(
    phantom: PhantomCase,
    seed: int = 0,
    slice_mm: float = 5.0,
    max_rotation_deg: float = 10.0,
    max_shift_mm: float = 15.0,
) -> ScannedPhantom:
    """Each contrast of ``phantom`` as a separate axial series: its own
    ``slice_mm`` grid, the head rotated (up to ``max_rotation_deg`` about a
    random axis) and shifted (up to ``max_shift_mm``), as between series of a
    study where the patient moved.

    Args:
        phantom: from ``make_phantom`` (usually with ``head=True``).
        seed: the misalignments follow it.
        slice_mm: slice thickness (and spacing) of every series.
        max_rotation_deg: largest rotation; each series gets 30-100 % of it.
        max_shift_mm: largest shift; each series gets 30-100 % of it.
    """
    rng = np.random.default_rng([seed, 29])
    reference = next(iter(phantom.images.values()))
    grid = _thick_grid(reference, slice_mm)
    centre = np.asarray(reference.origin) + np.asarray(FIELD_OF_VIEW_MM) / 2
    images, series = {}, {}
    for key, image in phantom.images.items():
        axis = rng.standard_normal(3)
        rotation = sitk.VersorRigid3DTransform()
        rotation.SetRotation(
            tuple(axis / np.linalg.norm(axis)), float(np.deg2rad(rng.uniform(0.3, 1.0) * max_rotation_deg))
        )
        angles = _euler_angles(np.asarray(rotation.GetMatrix()).reshape(3, 3))
        shift = rng.standard_normal(3)
        shift *= rng.uniform(0.3, 1.0) * max_shift_mm / np.linalg.norm(shift)
        matrix = rigid_matrix(angles, shift, centre)
        images[key] = _acquire(image, grid, matrix)
        series[key] = {
            "rotation_deg": [round(a, 6) for a in angles],
            "translation_mm": shift.round(6).tolist(),
            "center_mm": centre.tolist(),
            "scanner_to_phantom": matrix.tolist(),
            "spacing": list(grid.spacing),
            "slice_mm": float(slice_mm),
        }
    first = next(iter(phantom.images))
    to_first = np.asarray(series[first]["scanner_to_phantom"])
    labels = _acquire(phantom.labels, grid, to_first, sitk.sitkNearestNeighbor)
    brain = _acquire(
        phantom.tissues.with_array(phantom.brain.astype(np.uint8)), grid, to_first, sitk.sitkNearestNeighbor
    )
    record = {
        "labels_on": first,
        "convention": "scanner_to_phantom maps a point (LPS mm) of the series to the phantom's anatomy; "
        "the registration of B onto A is inv(B) @ A (SimpleITK's fixed -> moving sense).",
        "series": series,
    }
    return ScannedPhantom(images, labels, brain, record)


def _euler_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """SimpleITK Euler3D (ZXY) angles in degrees of a 3x3 rotation matrix."""
    t = sitk.Euler3DTransform()
    t.SetMatrix(tuple(rotation.ravel()))
    return tuple(float(np.rad2deg(a)) for a in (t.GetAngleX(), t.GetAngleY(), t.GetAngleZ()))
