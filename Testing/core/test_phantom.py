import numpy as np
from medmodels.datasets import find_case
from medmodels.phantom import TISSUES, make_phantom, write_phantom_case


def _mean(ph, key, tissue):
    return ph.images[key].array[ph.tissues.array == TISSUES.index(tissue)].astype(float).mean()


def test_deterministic_and_seeded():
    a, b, c = make_phantom((40, 40, 32), 5), make_phantom((40, 40, 32), 5), make_phantom((40, 40, 32), 6)
    for k in a.images:
        np.testing.assert_array_equal(a.images[k].array, b.images[k].array)
    assert not np.array_equal(a.labels.array, c.labels.array)


def test_size_sets_voxels_not_anatomy():
    ph = make_phantom((60, 48, 31), 0)
    assert ph.images["t1"].shape == (31, 48, 60)
    np.testing.assert_allclose(ph.images["t1"].spacing, (4.0, 5.0, 5.0))


def test_contrast_relations_of_real_scans(small_phantom):
    ph = small_phantom
    # Enhancement only in T1c: the rim relative to WM is brighter in T1c than in T1.
    assert _mean(ph, "t1c", "enhancing") / _mean(ph, "t1c", "wm") > 1.3 * _mean(ph, "t1", "enhancing") / _mean(
        ph, "t1", "wm"
    )
    assert _mean(ph, "t1c", "enhancing") == max(_mean(ph, "t1c", t) for t in TISSUES[1:])
    # Edema bright in T2 and FLAIR; CSF dark in FLAIR and bright in T2.
    for key in ("t2", "flair"):
        assert _mean(ph, key, "edema") > 1.5 * _mean(ph, key, "wm")
    assert _mean(ph, "flair", "csf") < 0.5 * _mean(ph, "flair", "wm")
    assert _mean(ph, "t2", "csf") == max(_mean(ph, "t2", t) for t in TISSUES[1:])
    # T1: WM > GM > CSF.
    assert _mean(ph, "t1", "wm") > _mean(ph, "t1", "gm") > _mean(ph, "t1", "csf")


def test_labels_and_tumour_parts_present(small_phantom):
    values = set(np.unique(small_phantom.labels.array).tolist())
    assert values == {0, 1, 2, 4}
    assert (small_phantom.labels.array[small_phantom.images["t1"].array == 0] == 0).all()


def test_bias_and_noise_make_it_look_scanned(small_phantom):
    wm = small_phantom.tissues.array == TISSUES.index("wm")
    values = small_phantom.images["t1"].array[wm].astype(float)
    assert 0.02 < values.std() / values.mean() < 0.4


def test_written_case_is_a_brats_case(tmp_path):
    for naming, suffix in (("2018", "_t1ce.nii.gz"), ("2023", "-t1c.nii.gz")):
        folder = write_phantom_case(tmp_path / naming, "P", (32, 32, 24), 1, naming)
        case = find_case(folder, require_label=True)
        assert case.naming == naming and case.images["t1c"].name == "P" + suffix
        images, labels = case.load()
        assert set(np.unique(labels.array)) <= ({0, 1, 2, 4} if naming == "2018" else {0, 1, 2, 3})
