import numpy as np
import pytest
import SimpleITK as sitk
from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.io import read_image, write_image

# An oblique direction (rotation about two axes) and anisotropic spacing.
_c, _s = np.cos(0.3), np.sin(0.3)
_rot = np.array([[1, 0, 0], [0, _c, -_s], [0, _s, _c]]) @ np.array([[_c, 0, _s], [0, 1, 0], [-_s, 0, _c]])
OBLIQUE = Image(
    np.arange(7 * 6 * 5, dtype=np.int16).reshape(7, 6, 5) - 50,
    spacing=(0.9, 1.3, 3.0),
    origin=(-12.5, 40.25, 7.0),
    direction=tuple(_rot.ravel()),
)


def _write_dicom_series(image: Image, folder) -> None:
    """One int16 DICOM file per slice with the image's oblique geometry (what a
    scanner export looks like; medmodels itself only reads DICOM)."""
    folder.mkdir()
    volume = image.to_sitk()
    d = np.asarray(image.direction).reshape(3, 3)
    uid = "1.2.826.0.1.3680043.8.498.42"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        s = volume[:, :, k]
        tags = {
            "0008|0060": "MR",
            "0020|000d": uid + ".1",
            "0020|000e": uid + ".2",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{p:.6f}" for p in volume.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": "\\".join(f"{v:.8f}" for v in (*d[:, 0], *d[:, 1])),
            "0018|0050": f"{image.spacing[2]:.6f}",
            "0008|0018": f"{uid}.3.{k + 1}",
        }
        for tag, value in tags.items():
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:04d}.dcm"))
        writer.Execute(s)


def _assert_same_image(back: Image, tol: float) -> None:
    np.testing.assert_array_equal(back.array, OBLIQUE.array)
    np.testing.assert_allclose(back.spacing, OBLIQUE.spacing, atol=tol)
    np.testing.assert_allclose(back.origin, OBLIQUE.origin, atol=tol)
    np.testing.assert_allclose(back.direction, OBLIQUE.direction, atol=tol)


@pytest.mark.parametrize("name", ["vol.nii.gz", "vol.nii", "vol.nrrd", "vol.mha"])
def test_geometry_round_trip(tmp_path, name):
    _assert_same_image(read_image(write_image(OBLIQUE, tmp_path / name)), 1e-4)


def test_dicom_series_folder_is_read_with_its_geometry(tmp_path):
    _write_dicom_series(OBLIQUE, tmp_path / "series")
    _assert_same_image(read_image(tmp_path / "series"), 1e-3)  # DICOM stores decimal strings


def test_dicom_series_with_a_missing_slice_is_refused_not_spread_evenly(tmp_path):
    # ITK reads the six slices left as evenly spaced (3.6 mm, not 3.0): every slice off by up to 1.5 mm
    _write_dicom_series(OBLIQUE, tmp_path / "series")
    (tmp_path / "series" / "slice_0003.dcm").unlink()
    with pytest.raises(InputError, match=r"DICOM series .* uneven slice positions: .* 3\.000 mm apart, but 6\.000 mm"):
        read_image(tmp_path / "series")


def test_dicom_series_with_a_misplaced_slice_is_refused(tmp_path):
    # a damaged slice: its recorded position 1 mm off the others' even spacing
    image = Image(OBLIQUE.array[:4], OBLIQUE.spacing, OBLIQUE.origin, OBLIQUE.direction)
    _write_dicom_series(image, tmp_path / "series")
    second = tmp_path / "series" / "slice_0001.dcm"
    s = sitk.ReadImage(str(second))
    shifted = np.asarray(s.GetOrigin()) + np.asarray(image.direction).reshape(3, 3)[:, 2] * 1.0
    s.SetMetaData("0020|0032", "\\".join(f"{p:.6f}" for p in shifted))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(second))
    writer.Execute(s)
    with pytest.raises(InputError, match="uneven slice positions.*'slice_0000.dcm' and 'slice_0001.dcm'"):
        read_image(tmp_path / "series")


def test_output_without_image_suffix_refused(tmp_path):
    with pytest.raises(InputError, match="no image suffix"):
        write_image(OBLIQUE, tmp_path / "series")
    assert not (tmp_path / "series").exists()


def test_write_is_atomic_and_leaves_no_partial_files(tmp_path):
    write_image(OBLIQUE, tmp_path / "a.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["a.nii.gz"]


def test_not_an_image(tmp_path):
    bad = tmp_path / "notes.nii.gz"
    bad.write_text("not an image", encoding="utf-8")
    with pytest.raises(InputError, match="could not be read as an image"):
        read_image(bad)
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "missing.nii")
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path)


@pytest.mark.parametrize("shape,word", [((6, 5), "2D"), ((3, 4, 5, 6), "4D")])
def test_2d_and_4d_refused(tmp_path, shape, word):
    path = tmp_path / "x.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros(shape, np.float32), isVector=False), str(path))
    with pytest.raises(InputError, match=word):
        read_image(path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_voxels_refused(tmp_path, value):
    arr = np.ones((4, 4, 4), np.float32)
    arr[1, 2, 3] = value
    write_image(Image(arr), tmp_path / "x.nrrd")
    with pytest.raises(InputError, match="NaN or infinite"):
        read_image(tmp_path / "x.nrrd")


def test_image_type_checks():
    with pytest.raises(InputError, match="3D"):
        Image(np.zeros((4, 4)))
    with pytest.raises(InputError, match="positive"):
        Image(np.zeros((2, 2, 2)), spacing=(1, 0, 1))
    assert OBLIQUE.same_grid(OBLIQUE.with_array(OBLIQUE.array * 2))
    assert not OBLIQUE.same_grid(Image(OBLIQUE.array, OBLIQUE.spacing, (0, 0, 0), OBLIQUE.direction))


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        path = write_image(OBLIQUE, tmp_path / "p.nrrd")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
