"""Brain extraction and inspection resample onto a grid's geometry alone (``resampling.resample_onto``)
instead of onto a SimpleITK reference volume built for it (issue 22): the arrays are the same, bit for bit,
as those of the reference-volume route they replaced, on an oblique thick-slice phantom series."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from medmodels import brain_net, inspection
from medmodels.image import Grid
from medmodels.phantom import make_phantom, scanned_phantom
from medmodels.resampling import resample_onto, working_geometry

pytestmark = pytest.mark.usefixtures("one_itk_thread")


@pytest.fixture(scope="module")
def scanned():
    """Thick (5 mm), rotated and shifted series of a head phantom: grids unlike each other."""
    return scanned_phantom(make_phantom((48, 48, 32), seed=3, head=True), seed=3)


def _onto_reference_volume(source: sitk.Image, grid, interpolator, pixel_type) -> np.ndarray:
    """The replaced route: a SimpleITK volume of ``grid``'s geometry built only to resample onto."""
    reference = grid.with_array(np.zeros(grid.shape, np.uint8)) if isinstance(grid, Grid) else grid
    out = sitk.Resample(source, reference.to_sitk(), sitk.Transform(), interpolator, 0.0, pixel_type)
    assert out.GetSpacing() == reference.spacing and out.GetOrigin() == reference.origin
    return sitk.GetArrayFromImage(out)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


@pytest.mark.parametrize("interpolator", [sitk.sitkLinear, sitk.sitkNearestNeighbor])
def test_resample_onto_a_grid_equals_resampling_onto_its_volume(scanned, interpolator):
    t1, flair = scanned.images["t1"], scanned.images["flair"]
    source = sitk.Cast(flair.to_sitk(), sitk.sitkFloat32 if interpolator == sitk.sitkLinear else sitk.sitkUInt8)
    for target in (t1, t1.grid, working_geometry(t1, (2.0, 2.0, 2.0))):
        got = resample_onto(source, target, sitk.Transform(), interpolator)
        expected = _onto_reference_volume(source, target, interpolator, source.GetPixelID())
        assert _same(got.array, expected) and got.same_grid(target, tolerance=0.0)


class _Extractor:
    """deepbet's two calls, made deterministic: the probability is the normalised intensity."""

    def run_model(self, array: np.ndarray) -> np.ndarray:
        return array / (array.max() + 1e-6)

    def postprocess(self, mask: np.ndarray) -> np.ndarray:
        return mask


def test_learned_brain_mask_equals_the_reference_volume_route(scanned, monkeypatch):
    monkeypatch.setattr(brain_net, "load_extractor", lambda device: _Extractor())
    for key in ("t1", "flair"):
        image = scanned.images[key]
        got = brain_net.learned_brain_mask(image)
        grid = working_geometry(image, (brain_net.NETWORK_SPACING_MM,) * 3)
        source = sitk.Cast(image.to_sitk(), sitk.sitkFloat32)
        near = sitk.GetImageFromArray(_onto_reference_volume(source, grid, sitk.sitkLinear, sitk.sitkFloat32))
        near.CopyInformation(grid.to_sitk())
        array, ras = brain_net._ras_array(near)
        mask = _Extractor().postprocess(_Extractor().run_model(array) > brain_net.THRESHOLD)
        out = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.float32))
        out.CopyInformation(ras)
        back = _onto_reference_volume(out, image, sitk.sitkLinear, sitk.sitkFloat32)
        assert _same(got.array, (back >= 0.5).astype(np.uint8)), key
        assert 0 < got.array.sum() < got.array.size


def test_inspection_resamples_as_onto_a_reference_volume(scanned, monkeypatch):
    compared = []

    def checked(source, grid, transform, interpolator, default=0.0):
        got = resample_onto(source, grid, transform, interpolator, default)
        # what inspection asked of sitk.Resample before: float32 for linear, the mask's own type for nearest
        pixel = sitk.sitkFloat32 if interpolator == sitk.sitkLinear else source.GetPixelID()
        compared.append(_same(got.array, _onto_reference_volume(source, grid, interpolator, pixel)))
        return got

    monkeypatch.setattr(inspection, "resample_onto", checked)
    for key, image in scanned.images.items():
        inspection.skull_figures(image, key)
        inspection.alignment_figures(scanned.images["t1"], image)
    assert len(compared) == 3 * len(scanned.images) and all(compared), compared
