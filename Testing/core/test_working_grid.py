"""``WorkingGrid``: the one map between an input grid and a model's working grid
(back: ``GridChain.inverse``).

Round trips on an oblique, anisotropic input grid (labels and intensities, at
the input's spacing and at a coarser one), the crop around the brain, the
geometry of the working grid, and its use by both models' preprocessing.
"""

import numpy as np
import pytest
from medmodels.errors import InputError
from medmodels.grid_chain import GridChain
from medmodels.image import Image
from medmodels.seg.data import prepare
from medmodels.syn.data import to_preparation_grid, to_working_case
from medmodels.working_grid import WorkingGrid, working_zscores

SPACING = (0.9, 1.1, 3.0)  # (x, y, z) mm
SHAPE = (24, 80, 72)  # (z, y, x)


def rotation(ax: float, az: float) -> np.ndarray:
    """A rotation about x by ``ax`` then about z by ``az`` (radians)."""
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx


def go_back(grid: WorkingGrid, array: np.ndarray, kind: str) -> np.ndarray:
    """``array`` from ``grid``'s working crop back to its input grid, through the one inverse."""
    return GridChain.on(grid.reference).with_working(grid).inverse(array, kind, to="input")


def physical_points(image: Image) -> np.ndarray:
    """``(Z, Y, X, 3)`` LPS position (mm) of every voxel centre."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in image.shape), indexing="ij")
    idx = np.stack([x, y, z], -1) * np.asarray(image.spacing)
    return np.asarray(image.origin) + idx @ np.asarray(image.direction).reshape(3, 3).T


@pytest.fixture(scope="module")
def oblique():
    """A skull-stripped 'brain' (ellipsoid of smooth intensities) with a two-label
    'tumour' blob, on an oblique, anisotropic grid; shapes defined in space."""
    direction = rotation(0.35, 0.5)
    geometry = Image(np.zeros(SHAPE, np.uint8), SPACING, (-20.0, 35.0, 12.0), tuple(direction.ravel()))
    centre = physical_points(geometry).reshape(-1, 3).mean(0)
    rel = physical_points(geometry) - centre
    brain = (rel[..., 0] / 26) ** 2 + (rel[..., 1] / 34) ** 2 + (rel[..., 2] / 26) ** 2 <= 1
    t = rel - np.array([6.0, -5.0, 3.0])
    r = np.sqrt((t**2).sum(-1))
    labels = np.where(r <= 12, 2, 0) + np.where(r <= 6, -1, 0)  # 1 inside 2: a nested, smooth blob
    intensity = np.where(brain, 100 + 40 * np.cos(rel[..., 0] / 9) + 0.8 * rel[..., 1], 0).astype(np.float32)
    return {
        "image": geometry.with_array(intensity),
        "labels": geometry.with_array(labels.astype(np.uint8)),
        "brain": brain,
    }


def test_label_round_trip_at_the_input_spacing_is_exact_and_on_the_input_grid(oblique):
    image, labels = oblique["image"], oblique["labels"]
    grid = WorkingGrid.fit({"t1": image}, SPACING, margin_mm=2.0)
    assert grid.working.direction == image.direction and np.allclose(grid.spacing, SPACING)
    work = grid.forward(labels.array, "nearest")
    assert work.shape == grid.shape and work.dtype == np.uint8
    assert work.size < labels.array.size  # cropped
    back = go_back(grid, work, "label")
    assert back.shape == labels.array.shape and back.dtype == np.uint8
    assert grid.reference.with_array(back).same_grid(image)
    assert (back == labels.array).mean() >= 0.97
    for lab in (1, 2):
        assert np.array_equal(back == lab, labels.array == lab)


def test_label_round_trip_at_a_coarser_spacing(oblique):
    image, labels = oblique["image"], oblique["labels"]
    grid = WorkingGrid.fit({"t1": image}, (2.0, 2.0, 2.0), margin_mm=2.0)
    assert grid.working.direction == image.direction
    back = go_back(grid, grid.forward(labels.array, "nearest"), "label")
    assert grid.reference.with_array(back).same_grid(image)
    assert (back == labels.array).mean() >= 0.95
    for lab in (1, 2):
        a, b = back == lab, labels.array == lab
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.75, lab
    # The same labels given as an Image are placed by physical position.
    assert np.array_equal(grid.forward(labels, "nearest"), grid.forward(labels.array, "nearest"))


def test_intensities_round_trip(oblique):
    image, brain = oblique["image"], oblique["brain"]
    same = WorkingGrid.fit({"t1": image}, SPACING, margin_mm=2.0)
    back = go_back(same, same.forward(image.array, "linear"), "intensity")
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, image.array, atol=1e-3)
    coarse = WorkingGrid.fit({"t1": image}, (2.0, 2.0, 2.0), margin_mm=2.0)
    back = go_back(coarse, coarse.forward(image.array, "linear"), "intensity")
    inner = brain & (oblique["labels"].array >= 0)
    rel_err = np.abs(back[inner] - image.array[inner]).mean() / image.array[inner].mean()
    assert np.corrcoef(back[inner], image.array[inner])[0, 1] > 0.9 and rel_err < 0.1
    # Channels are resampled one by one.
    two = coarse.forward(np.stack([image.array, 2 * image.array]), "linear")
    np.testing.assert_allclose(two[1], 2 * two[0], rtol=1e-5, atol=1e-4)


def test_the_crop_contains_the_brain_in_space(oblique):
    image, brain = oblique["image"], oblique["brain"]
    grid = WorkingGrid.fit({"t1": image}, (2.0, 2.0, 2.0), margin_mm=2.0)
    assert np.array_equal(grid.input_brain, brain)
    # Every input brain voxel lies inside the working crop ...
    inside = go_back(grid, np.ones(grid.shape, np.float32), "probability")
    assert (inside[brain] > 0.999).all() and (inside[~brain] < 0.5).any()
    # ... and the crop's brain is the input brain, at the same place in space.
    voxel_in, voxel_w = np.prod(SPACING), 8.0
    assert abs(grid.brain.sum() * voxel_w / (brain.sum() * voxel_in) - 1) < 0.1
    centre_in = physical_points(image)[brain].mean(0)
    centre_w = physical_points(grid.working)[grid.brain].mean(0)
    assert np.linalg.norm(centre_in - centre_w) < 1.0


def test_crop_sizes_grow_to_a_multiple_even_past_the_field_of_view(oblique):
    image = oblique["image"]
    grid = WorkingGrid.fit({"t1": image}, (2.0, 2.0, 2.0), margin_mm=2.0, multiple_of=(8, 8, 1))
    z, y, x = grid.shape
    assert y % 8 == 0 and x % 8 == 0
    big = WorkingGrid.fit({"t1": image}, (2.0, 2.0, 2.0), multiple_of=64)  # larger than the field of view
    assert all(n % 64 == 0 for n in big.shape)
    # Padding past the field of view changes nothing inside the brain.
    back = go_back(big, big.forward(image.array, "linear"), "intensity")
    brain = oblique["brain"]
    np.testing.assert_allclose(
        back[brain], go_back(grid, grid.forward(image.array, "linear"), "intensity")[brain], atol=1e-3
    )


def test_bad_input_is_an_input_error(oblique):
    image = oblique["image"]
    moved = Image(image.array, image.spacing, (0.0, 0.0, 0.0), image.direction)
    with pytest.raises(InputError, match="one grid"):
        WorkingGrid.fit({"t1": image, "t2": moved}, (2.0, 2.0, 2.0))
    with pytest.raises(InputError, match="spacing"):
        WorkingGrid.fit({"t1": image}, (2.0, 0.0, 2.0))
    with pytest.raises(InputError, match="margin_mm"):
        WorkingGrid.fit({"t1": image}, (2.0, 2.0, 2.0), margin_mm=-1)
    with pytest.raises(InputError, match="multiple_of"):
        WorkingGrid.fit({"t1": image}, (2.0, 2.0, 2.0), multiple_of=(8, 8))
    grid = WorkingGrid.fit({"t1": image}, (2.0, 2.0, 2.0))
    with pytest.raises(InputError, match="not on the input grid"):
        grid.forward(np.zeros((3, 4, 5)))
    with pytest.raises(InputError, match="not on the working crop"):
        go_back(grid, image.array, "intensity")
    with pytest.raises(InputError, match="interpolation"):
        grid.forward(image.array, "cubic")


def test_both_models_keep_the_input_geometry(oblique):
    image, labels = oblique["image"], oblique["labels"]
    images = {"flair": image, "t2": image.with_array(image.array * 0.5 + 7 * (image.array > 0))}
    # Segmentation: the network input does not depend on origin/direction, the grid keeps them.
    prep = prepare(images, None, (2.5, 2.5, 2.5), np.where(labels.array == 1, 1, 2 * (labels.array > 0)))
    assert prep.grid.reference.same_grid(image) and prep.grid.working.direction == image.direction
    assert prep.image.shape == (4,) + prep.grid.shape and prep.regions.shape == (3,) + prep.grid.shape
    assert prep.regions[2].any() and not prep.regions[0].any()  # no ET in these labels
    bare = prepare({k: v.array for k, v in images.items()}, SPACING, (2.5, 2.5, 2.5))
    np.testing.assert_allclose(bare.image.numpy(), prep.image.numpy(), atol=1e-5)  # round-off of oblique positions
    with pytest.raises(InputError, match="spacing"):
        prepare(images, (1.0, 1.0, 1.0), (2.5, 2.5, 2.5))
    # Synthesis: same grid type; z-scores back on the input grid.
    case = to_working_case(images, (2.0, 2.0, 2.0))
    assert case.grid.reference.same_grid(image)
    z, norms = working_zscores(case.grid, images)
    assert np.array_equal(case.image, z * case.brain[None]) and set(norms) == {"flair", "t2"}
    back = to_preparation_grid(case, case.image[0])
    truth = norms["flair"].apply(image.array, oblique["brain"])
    assert np.corrcoef(back[oblique["brain"]], truth[oblique["brain"]])[0, 1] > 0.9
