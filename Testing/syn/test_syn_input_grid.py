"""Input-grid synthesis measures: T1c enhancement, SSIM over regions of one map, per-case paired tests."""

import numpy as np
import pytest
from medmodels.errors import InputError
from medmodels.metrics import enhancement_contrast, ssim, ssim_in_regions
from medmodels.normalisation import Normalizer
from medmodels.stats import paired_case_test
from medmodels.syn.scoring import enhancement, volume_scores
from scipy.stats import wilcoxon


def _tumour_volume(et_label: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A 12^3 volume: brain 1.5, edema 1.0, enhancing tumour 2.0, necrosis 0.5."""
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[2:10, 2:10, 2:10] = 2
    labels[4:8, 4:8, 4:8] = et_label
    labels[5:7, 5:7, 5:7] = 1
    image = np.full(labels.shape, 1.5)
    image[labels == 2], image[labels == et_label], image[labels == 1] = 1.0, 2.0, 0.5
    return image, labels


def test_enhancement_contrast_of_known_intensities():
    image, labels = _tumour_volume()
    assert enhancement_contrast(image, labels) == pytest.approx(1.0)  # ET twice the edema
    assert enhancement_contrast(image, labels, "2018") == pytest.approx(1.0)
    image23, labels23 = _tumour_volume(et_label=3)
    assert enhancement_contrast(image23, labels23) == pytest.approx(1.0)  # 2023 convention detected
    flat = np.where(labels > 0, 1.0, 1.5)
    assert enhancement_contrast(flat, labels) == pytest.approx(0.0)  # no enhancement


def test_enhancement_contrast_without_et_or_on_a_bad_scale():
    image, labels = _tumour_volume()
    assert np.isnan(enhancement_contrast(image, np.where(labels == 4, 2, labels)))
    with pytest.raises(InputError, match="positive intensity scale"):
        enhancement_contrast(image - 1.5, labels)  # z-score-like, edema negative
    with pytest.raises(InputError, match="shape"):
        enhancement_contrast(image[:-1], labels)
    with pytest.raises(InputError, match="convention"):
        enhancement_contrast(image, labels, "2021")


def test_ssim_in_regions_is_one_map_averaged_over_each_region():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(14, 16, 16))
    pred = truth + rng.normal(scale=0.5, size=truth.shape)
    brain = np.zeros(truth.shape, bool)
    brain[1:13, 2:15, 2:15] = True
    core = np.zeros_like(brain)
    core[5:9, 6:10, 6:10] = True
    out = ssim_in_regions(pred, truth, brain, {"brain": brain, "core": core})
    assert out["brain"] == pytest.approx(ssim(pred, truth, brain), abs=1e-6)
    assert 0 < out["core"] < 1 and out["core"] != pytest.approx(ssim(pred, truth, core), abs=1e-3)
    assert ssim_in_regions(truth, truth, brain, {"core": core})["core"] == pytest.approx(1.0, abs=1e-4)
    assert np.isnan(ssim_in_regions(pred, truth, brain, {"none": np.zeros_like(brain)})["none"])


def test_paired_case_test_on_known_numbers():
    t = paired_case_test([1, 2, 3, 4], [0, 0, 0, 0])
    assert t["p"] == pytest.approx(0.125) and t["min_p"] == pytest.approx(0.125)  # 4 cases: 2/16 at best
    assert t["wins"] == 4 and t["n"] == 4 and t["mean_difference"] == pytest.approx(2.5)
    t = paired_case_test([1, -2, 3, 4], [0, 0, 0, 0])
    assert t["p"] == pytest.approx(6 / 16) and t["wins"] == 3  # signed-rank sums with |T| >= 6: 6 of 16
    t = paired_case_test([0.5, 0.7, np.nan], [0.5, 0.6, 0.1])  # the NaN pair is left out, the tie dropped
    assert t["n"] == 2 and t["p"] is None and t["min_p"] is None
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=9), rng.normal(size=9)
    assert paired_case_test(a, b)["p"] == pytest.approx(wilcoxon(a, b, method="exact").pvalue)
    with pytest.raises(InputError, match="one length"):
        paired_case_test([1, 2], [1, 2, 3])


def test_volume_scores_and_enhancement_on_a_phantom(small_phantom):
    brain = small_phantom.brain
    labels = small_phantom.labels.array
    t1c = small_phantom.images["t1c"].array
    norm = Normalizer.fit(t1c, brain)
    truth = norm.apply(t1c, brain)
    flat = Normalizer.fit(small_phantom.images["t1"].array, brain).apply(small_phantom.images["t1"].array, brain)
    tumour = labels > 0
    perfect = volume_scores(truth, truth, brain, tumour)
    assert perfect["brain"]["ssim"] == pytest.approx(1.0, abs=1e-4) and perfect["tumour"]["mae"] == 0
    other = volume_scores(flat, truth, brain, tumour)
    assert other["tumour"]["ssim"] < 0.95 and other["brain"]["psnr"] < perfect["brain"]["psnr"]
    assert volume_scores(flat, truth, brain, None)["tumour"] == {"psnr": None, "ssim": None, "mae": None}
    e = enhancement({"true": truth, "same": truth, "t1": flat}, norm, labels, brain)
    assert e["true"] > 0.5 and e["same"] == pytest.approx(e["true"])  # the phantom's rim enhances
    assert e["t1"] < 0.5 * e["true"]  # T1 in place of T1c: no enhancement to speak of
