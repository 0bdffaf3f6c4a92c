"""Tumour mixing for synthesis: a donor's tumour, in every modality and across the slice's
neighbours, lands in the recipient's brain with its labels; the cases are never changed."""

import numpy as np
import pytest
import torch
from medmodels.errors import InputError
from medmodels.phantom import make_phantom
from medmodels.syn.data import sample_batch, to_working_case
from medmodels.syn.train import SynTrainConfig, fit
from medmodels.syn.tumour_mix import mixed_slab
from syn_tiny import TINY

GRID = (2.0, 2.0, 2.0)


def _labelled(seed: int, value: float, name: str, tumour: bool = True):
    """A phantom case whose every brain voxel holds ``value`` in all four modalities (so a pixel tells
    which case it came from), with the phantom's tumour labels (``tumour``) or none."""
    ph = make_phantom((48, 48, 32), seed=seed)
    labels = ph.labels if tumour else ph.labels.with_array(np.zeros_like(ph.labels.array))
    case = to_working_case(ph.images, GRID, name, labels=labels)
    case.image = np.where(case.brain[None], value, 0.0).astype(np.float32).repeat(4, 0)
    return case


@pytest.fixture(scope="module")
def pair():
    # a tumour-free recipient: every tumour pixel it shows is pasted
    recipient, donor = _labelled(0, 1.0, "R", tumour=False), _labelled(1, 3.0, "D")
    assert not len(recipient.tumour_slices) and len(donor.tumour_slices)
    return recipient, donor


def test_the_pasted_tumour_keeps_its_labels_and_stays_inside_the_recipients_brain(pair):
    recipient, donor = pair
    before = recipient.image.copy(), donor.image.copy(), donor.labels.copy()
    z = int(recipient.brain_slices()[len(recipient.brain_slices()) // 2])
    dz = int(donor.tumour_slices[len(donor.tumour_slices) // 2])
    slab, labels = mixed_slab(recipient, z, donor, dz, 1, 1, np.random.default_rng(0))
    assert slab.shape == (4, 3, *recipient.image.shape[2:]) and labels.shape == recipient.image.shape[2:]
    pasted = slab[0, 0] == 3.0
    assert pasted.any() and (labels[pasted] > 0).sum() > 0.3 * pasted.sum()  # the tumour, with a margin of tissue
    assert (labels[~pasted] == 0).all()  # labels come only with the donor's pixels
    assert (slab[:, 0][:, ~recipient.brain[z]] == 0).all()  # nothing outside the recipient's brain
    assert ((slab[0, 0] == 1.0) | pasted | (slab[0, 0] == 0)).all()
    assert (slab == slab[:1]).all()  # every modality from the same place
    neighbours = (slab[0, 1:] == 3.0).any((1, 2))
    assert neighbours.all()  # the tumour continues into the neighbouring slices it has there
    assert np.array_equal(recipient.image, before[0]) and np.array_equal(donor.image, before[1])
    assert np.array_equal(donor.labels, before[2])


def test_mixing_in_batches_puts_tumour_into_tumour_free_slices(pair):
    recipient, donor = pair
    plain = sample_batch([recipient, donor], 16, (96, 96), np.random.default_rng(5), flip=False, context=1)
    same = sample_batch(
        [recipient, donor], 16, (96, 96), np.random.default_rng(5), flip=False, context=1, tumour_mix=0.0
    )
    assert torch.equal(plain.x0, same.x0) and torch.equal(plain.labels, same.labels)  # 0 draws nothing
    mixed = sample_batch(
        [recipient, donor], 16, (96, 96), np.random.default_rng(5), flip=True, context=1, tumour_mix=1.0
    )
    from_recipient = (mixed.x0[:, 0] == 1.0).flatten(1).any(1)
    assert from_recipient.sum() >= 3  # the canvas holds the whole slice: no crop cuts the tumour away
    for b in (
        torch.nonzero(from_recipient).flatten().tolist()
    ):  # the recipient has no tumour of its own: all of it is the donor's
        pasted = mixed.x0[b, 0] == 3.0
        assert pasted.any() and (mixed.labels[b] > 0).any() and not (mixed.labels[b][~pasted] > 0).any()
    # the donor's slices get nothing: the recipient has no tumour to give
    assert not ((mixed.x0[~from_recipient, 0] == 1.0).any())


def test_tumour_mix_is_a_probability(pair, tmp_path):
    cfg = SynTrainConfig(out=str(tmp_path), iterations=1, tumour_mix=1.5, **TINY)
    with pytest.raises(InputError, match="--tumour-mix is a probability"):
        fit(cfg, list(pair))
