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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medmodels.datasets import case_file_names
from medmodels.image import Image
from medmodels.io import write_image
from medmodels.modalities import MODALITY_KEYS

FIELD_OF_VIEW_MM = (240.0, 240.0, 155.0)  # x, y, z as in BraTS
BRATS_ORIGIN = (0.0, -239.0, 0.0)

TISSUES = ("background", "csf", "gm", "wm", "edema", "necrosis", "enhancing")
#: Mean intensity of each tissue per modality, in units of a scanner's grey values.
CONTRAST = {
    #            bg    csf    gm    wm    edema necrosis enhancing
    "t1": (0.0, 0.30, 0.72, 1.00, 0.62, 0.35, 0.70),
    "t1c": (0.0, 0.32, 0.74, 1.00, 0.64, 0.38, 1.60),
    "t2": (0.0, 1.70, 0.80, 0.50, 1.30, 1.50, 0.95),
    "flair": (0.0, 0.18, 0.80, 0.62, 1.45, 0.70, 1.05),
}
SCANNER_SCALE = {"t1": 500.0, "t1c": 520.0, "t2": 420.0, "flair": 380.0}
LABEL_OF = {"edema": 2, "necrosis": 1, "enhancing": 4}


@dataclass(frozen=True)
class PhantomCase:
    """A generated case: the four images and the label map, on one grid."""

    images: dict[str, Image]
    labels: Image
    tissues: Image  # index into TISSUES, for tests of the contrast relations


def make_phantom(
    size: tuple[int, int, int] = (96, 96, 64), seed: int = 0, noise: float = 0.03, bias: float = 0.15
) -> PhantomCase:
    """Generate a phantom case.

    Args:
        size: voxels along ``(x, y, z)``; the field of view is fixed, so the
            spacing is ``240/x, 240/y, 155/z`` mm.
        seed: everything random (shape, tumour position, bias, noise) follows it.
        noise: Rician noise sigma relative to white matter.
        bias: strength of the smooth multiplicative bias field.
    """
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
        field = F.interpolate(
            torch.from_numpy(field)[None, None].float(), size=(nz, ny, nx), mode="trilinear", align_corners=False
        )[0, 0].numpy()
        return amplitude * field / (field.std() + 1e-8)

    def ellipsoid(c, r, wobble=None) -> np.ndarray:
        d = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2
        return d < (1.0 + (wobble if wobble is not None else 0.0))

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

    tissue = np.zeros((nz, ny, nx), dtype=np.uint8)
    tissue[brain] = TISSUES.index("wm")
    tissue[gm] = TISSUES.index("gm")
    tissue[csf] = TISSUES.index("csf")

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

    labels = np.zeros_like(tissue)
    for name, value in LABEL_OF.items():
        labels[tissue == TISSUES.index(name)] = value

    bias_field = np.exp(smooth_noise(60, bias))
    sigma_pv = [0.6 / max(1.0, s) for s in spacing[::-1]]  # a little partial-volume blur
    geometry = dict(spacing=spacing, origin=BRATS_ORIGIN)
    images = {}
    for key in MODALITY_KEYS:
        means = np.asarray(CONTRAST[key], dtype=np.float32)
        clean = means[tissue] * (1.0 + smooth_noise(4, 0.03))  # texture within tissues
        clean = ndimage.gaussian_filter(clean, sigma_pv) * bias_field
        n1, n2 = (rng.standard_normal(clean.shape) * noise for _ in range(2))
        noisy = np.sqrt((clean + n1) ** 2 + n2**2)  # Rician magnitude noise
        volume = np.where(brain, noisy * SCANNER_SCALE[key], 0.0)
        images[key] = Image(np.round(volume).astype(np.int16), **geometry)
    return PhantomCase(images, Image(labels, **geometry), Image(tissue, **geometry))


def write_phantom_case(
    out_dir: str | Path,
    case: str = "Phantom_001",
    size: tuple[int, int, int] = (96, 96, 64),
    seed: int = 0,
    naming: str = "2018",
) -> Path:
    """Write a phantom as a BraTS case folder ``out_dir/case/``; returns that folder."""
    phantom = make_phantom(size, seed)
    folder = Path(out_dir) / case
    names = case_file_names(case, naming)
    labels = phantom.labels.array
    if naming == "2023":
        labels = np.where(labels == 4, 3, labels).astype(np.uint8)
    for key, image in phantom.images.items():
        write_image(image, folder / names[key])
    write_image(phantom.labels.with_array(labels), folder / names["seg"])
    return folder
