"""The pipeline's outputs through the one grid chain are those of the two stacked inverses it
replaced (issue 22, item 4): on a scanner-style phantom study (thick misaligned series with a
head: registration, resampling to 2.5 mm voxels, brain extraction), the models threshold and
clean up on the preparation grid, and only then do their outputs go to the reference input's grid.

The old route's last step is spelled here as it was (``Prepared.restore``: linear intensities
through an identity ``apply_rigid``, label maps by ``labels_onto``); the outputs must match it
bit for bit. Before and after the change the same study's outputs also hashed identically
(the commit that brought ``GridChain``).
"""

import numpy as np
import pytest
from medmodels.grid_chain import labels_onto
from medmodels.image import Image
from medmodels.modalities import AvailabilityMask, ordered
from medmodels.options import RunOptions
from medmodels.phantom import make_phantom, scanned_phantom
from medmodels.pipeline import prepared_study_threshold, run_case
from medmodels.preparation import prepare_case
from medmodels.region_condition import load_conditioned_synthesizer
from medmodels.registration import apply_rigid
from medmodels.seg.inference import load_segmenter
from medmodels.syn.inference import DEFAULT_SYNTHESIZER

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_itk_thread")]


@pytest.fixture(scope="module")
def study():
    scanned = scanned_phantom(make_phantom((96, 96, 64), seed=2, head=True), seed=2)
    return {k: v for k, v in scanned.images.items() if k != "t2"}


def _old_restore(image: Image, reference: Image, label: bool) -> Image:
    """``Prepared.restore`` as it was before the chain: unchanged on the reference's grid, else
    labels by the label rule and intensities linearly through an identity rigid transform."""
    if image.same_grid(reference):
        return image
    if label:
        return reference.with_array(labels_onto(image.array, image, reference))
    return apply_rigid(image, np.eye(4), reference, "linear")


def test_the_chain_gives_the_outputs_of_the_two_stacked_inverses(study):
    options = RunOptions(steps=2, samples=2, seed=1, device="cpu", segment_on="all")
    result = run_case(study, options)
    # The old route by hand: the models on the preparation grid, then the old way back.
    prepared = prepare_case(study, options.prepare, options.reference, options.seed, options.device)
    assert not prepared.chain.preparation.same_grid(study["flair"])  # the last step resamples: something to compare
    mask = AvailabilityMask.from_keys(study.keys())
    # the run's default synthesis (the bundled blend) reads the default segmenter's map of the tumour regions
    synthesised = load_conditioned_synthesizer(DEFAULT_SYNTHESIZER, "cpu", None).synthesize(
        prepared.images, mask, steps=2, samples=2, seed=1, chain=prepared.chain
    )
    inputs = {**prepared.images, **{k: mean for k, (mean, _) in synthesised.items()}}
    segmenter = load_segmenter(None, "cpu")
    labels = segmenter.segment(
        {k: inputs[k] for k in ordered(inputs)},
        AvailabilityMask.from_keys(inputs),
        cleanup=True,
        threshold=prepared_study_threshold(segmenter.threshold, prepared.changed),  # the run's rule
    )
    reference = study["flair"]
    expected = _old_restore(labels, reference, label=True)
    assert result.segmentation.same_grid(reference) and result.segmentation.array.dtype == np.uint8
    np.testing.assert_array_equal(result.segmentation.array, expected.array)
    assert (expected.array > 0).sum() > 100  # a tumour was found: the comparison means something
    mean, std = synthesised["t2"]
    for got, old in ((result.synthesised["t2"], mean), (result.uncertainty["t2"], std)):
        assert got.same_grid(reference) and got.array.dtype == np.float32
        np.testing.assert_array_equal(got.array, _old_restore(old, reference, label=False).array)
