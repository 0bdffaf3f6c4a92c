"""``GridChain``: a case's grids (input -> preparation -> working crop) and the one way back;
``Grid``, the geometry without voxels.

Label maps go forward and back on an oblique thick-slice input grid, its isotropic
preparation grid and a model's crop; each kind takes its rule; a stage or kind
that does not exist is an error that says what to use.
"""

import numpy as np
import pytest
from medmodels.errors import InputError
from medmodels.grid_chain import KINDS, STAGES, GridChain, labels_onto
from medmodels.image import Grid, Image
from medmodels.preparation import preparation_grid
from medmodels.resampling import resample_like, resample_stack
from medmodels.working_grid import WorkingGrid


def _rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    return np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])


def _points(grid) -> np.ndarray:
    """``(Z, Y, X, 3)`` LPS position (mm) of every voxel centre of ``grid``."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    idx = np.stack([x, y, z], -1) * np.asarray(grid.spacing)
    return np.asarray(grid.origin) + idx @ np.asarray(grid.direction).reshape(3, 3).T


@pytest.fixture(scope="module")
def study():
    """A brain with a nested two-label tumour, defined in space, on an oblique grid of
    1 x 1 x 4 mm voxels (a thick-slice series), its isotropic preparation grid and a 2 mm crop."""
    direction = tuple(_rotation(0.3, 0.4).ravel())
    input_grid = Grid((72, 80, 22), (1.0, 1.0, 4.0), (-30.0, 20.0, 5.0), direction)
    prep = preparation_grid(input_grid.with_array(np.zeros(input_grid.shape, np.uint8)), thick=True)

    def anatomy(grid):
        rel = _points(grid) - _points(input_grid).reshape(-1, 3).mean(0)
        brain = (rel[..., 0] / 28) ** 2 + (rel[..., 1] / 32) ** 2 + (rel[..., 2] / 30) ** 2 <= 1
        r = np.sqrt(((rel - np.array([5.0, -4.0, 2.0])) ** 2).sum(-1))
        labels = (np.where(r <= 13, 2, 0) + np.where(r <= 7, -1, 0)).astype(np.uint8)
        return np.where(brain, 100 + 0.5 * rel[..., 1], 0).astype(np.float32), labels

    intensity, _ = anatomy(prep)
    working = WorkingGrid.fit({"t1": prep.with_array(intensity)}, (2.0, 2.0, 2.0), margin_mm=4.0)
    chain = GridChain(input_grid, prep, working)
    return {"chain": chain, "labels": anatomy(input_grid)[1], "prep_labels": anatomy(prep)[1]}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_grid_is_an_image_s_geometry_without_its_voxels():
    image = Image(np.zeros((4, 5, 6), np.int16), (1.0, 2.0, 3.0), (1.0, -2.0, 3.5), tuple(_rotation(0.2, 0.1).ravel()))
    grid = image.grid
    assert grid.size_xyz == (6, 5, 4) and grid.shape == image.shape and not hasattr(grid, "array")
    assert grid.same_grid(image) and image.same_grid(grid) and grid.describe_grid() == image.describe_grid()
    moved = Grid(grid.size_xyz, grid.spacing, (1.0, -2.0, 4.0), grid.direction)
    assert not moved.same_grid(image) and not image.same_grid(moved)
    placed = grid.with_array(np.ones(image.shape, np.uint8))
    assert placed.same_grid(image) and placed.array.dtype == np.uint8
    with pytest.raises(ValueError, match="shape"):
        grid.with_array(np.ones((4, 5, 7)))
    with pytest.raises(InputError, match="positive"):
        Grid((6, 0, 4))
    with pytest.raises(InputError, match="9 direction"):
        Grid((6, 5, 4), direction=(1.0, 0.0, 0.0))
    # Resampling reads a Grid as it reads an Image: the same voxels.
    data = Image(np.arange(120, dtype=np.float32).reshape(4, 5, 6), (2.0, 2.0, 2.0))
    target = Image(np.zeros((3, 3, 3), np.uint8), (3.0, 3.0, 3.0), (0.5, 0.5, 0.5))
    assert np.array_equal(resample_like(data, target).array, resample_like(data, target.grid).array)


def test_a_label_map_forward_and_back_reproduces_itself_by_the_label_rule(study):
    chain, labels = study["chain"], study["labels"]
    # Forward as the preparation and a model go: onto the preparation grid, then the working crop.
    on_prep = resample_like(chain.input.with_array(labels), chain.preparation, "nearest").array
    work = chain.working.forward(on_prep, "nearest")
    back = chain.inverse(work, "label", to="input")
    assert back.shape == labels.shape and back.dtype == np.uint8
    # The rule, step by step: the chain is its two steps and nothing else.
    step = labels_onto(work, chain.working.working, chain.preparation)
    assert np.array_equal(chain.inverse(work, "label", to="preparation"), step)
    assert np.array_equal(back, labels_onto(step, chain.preparation, chain.input))
    # And it reproduces the labels: a 2 mm crop and 4 mm slices lose only the edges.
    assert (back == labels).mean() >= 0.97
    for lab in (1, 2):
        assert _dice(back == lab, labels == lab) > 0.8, lab


def test_each_kind_takes_its_rule(study):
    chain = study["chain"]
    prep_labels = study["prep_labels"]
    probs = np.stack([(prep_labels == 1), (prep_labels > 0)]).astype(np.float32)
    for kind in ("intensity", "probability"):
        back = chain.inverse(probs, kind, to="input", start="preparation")
        assert back.dtype == np.float32 and back.shape == (2,) + chain.input.shape
        np.testing.assert_array_equal(back, resample_stack(probs, chain.preparation, chain.input, "linear"))
        assert 0.0 < back.max() <= 1.0 and (back[0] < 1.0).any() and (back[0] > 0).any()  # linear, not 0/1
    labels = chain.inverse(prep_labels, "label", to="input", start="preparation")
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    assert np.array_equal(labels, labels_onto(prep_labels, chain.preparation, chain.input))
    assert set(KINDS) == {"intensity", "probability", "label"} and STAGES == ("working", "preparation", "input")


def test_a_step_between_grids_that_are_one_is_skipped(study):
    chain = study["chain"]
    same = GridChain.on(chain.preparation.with_array(np.zeros(chain.preparation.shape, np.uint8)))
    assert same.input == chain.preparation and same.preparation == chain.preparation
    labels = study["prep_labels"]
    assert same.inverse(labels, "label", to="input", start="preparation") is labels
    with_crop = same.with_working(chain.working)
    work = chain.working.forward(labels, "nearest")
    np.testing.assert_array_equal(
        with_crop.inverse(work, "label", to="input"), with_crop.inverse(work, "label", to="preparation")
    )


def test_unknown_kinds_and_stages_and_wrong_grids_are_input_errors(study):
    chain = study["chain"]
    work = np.zeros(chain.working.shape, np.float32)
    with pytest.raises(InputError, match=r"Unknown kind 'nearest': use one of 'intensity', 'probability', 'label'"):
        chain.inverse(work, "nearest", to="input")
    with pytest.raises(InputError, match=r"Unknown stage 'output': use one of 'working', 'preparation', 'input'"):
        chain.inverse(work, "intensity", to="output")
    with pytest.raises(InputError, match=r"Unknown stage 'crop'"):
        chain.inverse(work, "intensity", to="input", start="crop")
    with pytest.raises(InputError, match=r"working -> preparation -> input\): to='preparation' does not come after"):
        chain.inverse(work, "intensity", to="preparation", start="input")
    with pytest.raises(InputError, match="does not come after start='preparation'"):
        chain.inverse(work, "intensity", to="preparation", start="preparation")
    with pytest.raises(InputError, match="not on the working crop"):
        chain.inverse(np.zeros(chain.preparation.shape), "intensity", to="input")
    with pytest.raises(InputError, match="not on the preparation grid"):
        chain.inverse(work, "intensity", to="input", start="preparation")
    bare = GridChain(chain.input, chain.preparation)
    with pytest.raises(InputError, match="no working crop: add the model's with GridChain.with_working"):
        bare.inverse(work, "intensity", to="input")
    with pytest.raises(InputError, match="are not on the preparation grid .*: give the model the prepared images"):
        GridChain.on(chain.input).with_working(chain.working)
