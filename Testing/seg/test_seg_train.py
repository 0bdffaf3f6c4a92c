"""Training on phantoms: a real optimisation step lowers the loss; the
trainer runs end to end, resumes, and writes a loadable checkpoint."""

import json

import numpy as np
import pytest
import torch
from medmodels.errors import InputError
from medmodels.nets.shaspec import ShaSpec
from medmodels.seg.data import prepare
from medmodels.seg.losses import seg_losses
from medmodels.seg.sampling import PatchRecipe, TrainCase, draw_mask, make_batch
from medmodels.seg.train import TrainConfig, parse_subset, train


def test_training_steps_lower_the_loss_on_a_phantom(small_phantom):
    torch.manual_seed(0)
    arrays = {k: img.array for k, img in small_phantom.images.items()}
    prep = prepare(arrays, small_phantom.labels.spacing, (5.0, 5.0, 5.0), small_phantom.labels.array)
    case = TrainCase.build("p", prep.image, prep.regions, (16, 16, 16))
    rng = np.random.default_rng(0)
    x, y, m = make_batch([case], 2, (16, 16, 16), rng, PatchRecipe(fg_prob=1.0, augment="light"))
    assert y[:, 2].any(), "the patches should contain tumour"
    net = ShaSpec(width=4, depth=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    totals = []
    for _ in range(12):
        losses = seg_losses(net(x, m), y)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        totals.append(float(losses["total"].detach()))
    assert totals[-1] < 0.9 * totals[0], totals


def test_patches_oversample_tumour(small_phantom):
    arrays = {k: img.array for k, img in small_phantom.images.items()}
    prep = prepare(arrays, small_phantom.labels.spacing, (5.0, 5.0, 5.0), small_phantom.labels.array)
    case = TrainCase.build("p", prep.image, prep.regions, (8, 8, 8))
    rng = np.random.default_rng(0)
    recipe = PatchRecipe(fg_prob=1.0)
    with_fg = [bool(make_batch([case], 1, (8, 8, 8), rng, recipe)[1][:, 2].any()) for _ in range(20)]
    assert all(with_fg)


def test_dropped_modalities_are_zero_in_the_batch(small_phantom):
    arrays = {k: img.array for k, img in small_phantom.images.items()}
    prep = prepare(arrays, small_phantom.labels.spacing, (5.0, 5.0, 5.0), small_phantom.labels.array)
    case = TrainCase.build("p", prep.image, prep.regions, (16, 16, 16))
    x, _, m = make_batch([case], 16, (16, 16, 16), np.random.default_rng(1))  # past the warm-up
    assert m.any(dim=1).all() and len({tuple(r.tolist()) for r in m}) > 3
    assert (x[~m] == 0).all()
    x, _, m = make_batch(
        [case], 4, (16, 16, 16), np.random.default_rng(1), PatchRecipe(fixed_mask=parse_subset("flair,t1c"))
    )
    assert (m == torch.tensor([True, False, True, False])).all()


def test_modality_schedule_keeps_all_four_first_then_draws_the_number_kept_uniformly():
    rng = np.random.default_rng(0)
    recipe = PatchRecipe(full_modality_fraction=0.4)
    assert all(draw_mask(rng, recipe, progress=p) == (True,) * 4 for p in np.linspace(0, 0.39, 50))
    kept = np.array([sum(draw_mask(rng, recipe, progress=0.5)) for _ in range(4000)])
    counts = np.bincount(kept, minlength=5)
    assert counts[0] == 0 and all(abs(c / 4000 - 0.25) < 0.03 for c in counts[1:]), counts
    # uniform over the 15 subsets: all four only 1/15 of the time
    subsets = [draw_mask(rng, PatchRecipe(modality_drop="subsets"), 1.0) for _ in range(3000)]
    assert abs(sum(m == (True,) * 4 for m in subsets) / 3000 - 1 / 15) < 0.02


def test_region_balanced_patches_oversample_enhancing_tumour(small_phantom):
    arrays = {k: img.array for k, img in small_phantom.images.items()}
    prep = prepare(arrays, small_phantom.labels.spacing, (5.0, 5.0, 5.0), small_phantom.labels.array)
    case = TrainCase.build("p", prep.image, prep.regions, (4, 4, 4))
    assert 0 < len(case.foreground[0]) < len(case.foreground[2])  # ET is a part of WT

    def et_centres(fg_regions):
        rng = np.random.default_rng(3)
        recipe = PatchRecipe(fg_prob=1.0, fg_regions=fg_regions, augment="none")
        return np.mean([bool(make_batch([case], 1, (1, 1, 1), rng, recipe)[1][0, 0].any()) for _ in range(600)])

    share = len(case.foreground[0]) / len(case.foreground[2])
    assert et_centres("wt") == pytest.approx(share, abs=0.07)
    # one region in three is ET; the TC and WT draws land on ET in proportion to their share of it
    assert et_centres("regions") > share + 0.2


def test_nnunet_augmentation_keeps_the_patch_size_and_label_alignment(small_phantom):
    arrays = {k: img.array for k, img in small_phantom.images.items()}
    prep = prepare(arrays, small_phantom.labels.spacing, (5.0, 5.0, 5.0), small_phantom.labels.array)
    case = TrainCase.build("p", prep.image, prep.regions, (16, 16, 16))
    recipe = PatchRecipe(fg_prob=1.0, augment="nnunet")
    x, y, m = make_batch([case], 8, (16, 16, 16), np.random.default_rng(0), recipe)
    assert x.shape == (8, 4, 16, 16, 16) and y.shape == (8, 3, 16, 16, 16) and y.dtype == torch.uint8
    assert y[:, 2].any(dim=(1, 2, 3)).float().mean() > 0.8  # still centred on tumour
    assert ((y[:, 0] <= y[:, 1]) & (y[:, 1] <= y[:, 2])).all()  # ET in TC in WT survives resampling
    again = make_batch([case], 8, (16, 16, 16), np.random.default_rng(0), recipe)
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])  # the Generator fixes every draw
    with pytest.raises(ValueError, match="augmentation"):
        make_batch([case], 1, (16, 16, 16), np.random.default_rng(0), PatchRecipe(augment="strong"))


def test_bias_on_z_scores_is_the_z_scores_of_the_biased_raw_scan():
    from medmodels.seg.augment import apply_bias

    rng = np.random.default_rng(0)
    raw = rng.uniform(200.0, 900.0, size=(2, 8, 8, 8))
    raw[:, :2] = 0.0  # background
    brain = raw[0] > 0
    mean, sd = raw[:, brain].mean(axis=1), raw[:, brain].std(axis=1)
    z = np.where(brain, (raw - mean[:, None, None, None]) / sd[:, None, None, None], 0.0)
    field = np.exp(0.1 * rng.standard_normal((1, 8, 8, 8)))
    # The emulation on z-scores against z-scores computed with the original mean and SD of the biased raw scan.
    want = np.where(brain, (raw * field - mean[:, None, None, None]) / sd[:, None, None, None], 0.0)
    got = apply_bias(torch.from_numpy(z), torch.from_numpy(field), torch.from_numpy(mean / sd).reshape(2, 1, 1, 1))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-9)


def test_bias_field_patches_change_the_brain_and_leave_labels_and_background(small_phantom):
    arrays = {k: img.array for k, img in small_phantom.images.items()}
    prep = prepare(arrays, small_phantom.labels.spacing, (5.0, 5.0, 5.0), small_phantom.labels.array)
    case = TrainCase.build("p", prep.image, prep.regions, (16, 16, 16))
    recipes = [PatchRecipe(augment="none", bias_field=b, fixed_mask=(True,) * 4) for b in (0.0, 1.0)]
    plain, biased = (make_batch([case], 4, (16, 16, 16), np.random.default_rng(3), r) for r in recipes)
    x, xb = plain[0][:1], biased[0][:1]  # the first patch: the same crop, drawn before any bias draw
    assert torch.equal(plain[1][:1], biased[1][:1])
    brain = x != 0
    assert torch.equal(xb != 0, brain)  # the background stays 0
    assert (xb - x)[brain].abs().mean() > 0.05
    again = make_batch([case], 4, (16, 16, 16), np.random.default_rng(3), recipes[1])
    assert torch.equal(biased[0], again[0])  # the Generator fixes the field too


def test_the_bias_field_is_smooth_and_shared_by_the_modalities():
    from medmodels.seg.augment import bias_field

    flat = torch.zeros(4, 24, 24, 24)
    flat[:, 4:20, 4:20, 4:20] = torch.tensor([0.5, -0.3, 1.0, 0.2])[:, None, None, None]
    change = (bias_field(flat, np.random.default_rng(5)) - flat)[:, 4:20, 4:20, 4:20]  # (z + c)(field - 1)
    assert change.abs().mean() > 0.05
    # One field for every modality: the channels' changes are proportional, voxel by voxel (z + c > 0).
    assert np.corrcoef(change.reshape(4, -1).numpy()).min() > 0.9999
    # Smooth: a voxel's step to its neighbour is small against the field's spread over the crop.
    assert (change[0, :, :, 1:] - change[0, :, :, :-1]).abs().max() < 0.2 * (change[0].max() - change[0].min())


def _cube_case(name: str, value: float, brain: slice, tumour: slice | None, shape=(24, 24, 24)) -> TrainCase:
    """A case whose brain is the cube ``brain`` (every modality ``value``), with whole tumour (and TC, ET)
    on the cube ``tumour``."""
    image, regions = torch.zeros(4, *shape), torch.zeros(3, *shape, dtype=torch.uint8)
    image[:, brain, brain, brain] = value
    if tumour is not None:
        regions[:, tumour, tumour, tumour] = 1
    return TrainCase.build(name, image, regions, shape)


def test_tumour_mix_pastes_the_tumour_with_its_margin_inside_both_brains():
    from medmodels.seg.tumour_mix import tumour_mix

    recipient = _cube_case("r", 1.0, slice(0, 16), None)  # its brain ends at 16: the tumour's far side is not brain
    donor = _cube_case("d", 2.0, slice(2, 22), slice(10, 18))
    before = recipient.image.clone(), donor.image.clone()
    x, y = tumour_mix(recipient.image, recipient.regions, donor.image, donor.regions, margin=1)
    assert torch.equal(recipient.image, before[0]) and torch.equal(donor.image, before[1])  # inputs untouched
    carve = torch.zeros(24, 24, 24, dtype=torch.bool)
    carve[9:16, 9:16, 9:16] = True  # the tumour 10:18 grown by 1, cut at the recipient's brain
    assert torch.equal(x[0] == 2.0, carve)
    assert torch.equal(y[2].bool(), carve & (donor.regions[2] > 0))  # the margin is the donor's tissue, not tumour
    assert torch.equal(x[:, ~carve], recipient.image[:, ~carve]) and not y[:, ~carve].any()
    with pytest.raises(ValueError, match="one shape"):
        tumour_mix(recipient.image, recipient.regions, donor.image[:, :8], donor.regions[:, :8], margin=0)


def test_tumour_mix_in_batches_puts_tumour_into_tumour_free_patches():
    recipient = _cube_case("r", 1.0, slice(0, 24), None)
    donor = _cube_case("d", 2.0, slice(0, 24), slice(8, 14))
    recipe = PatchRecipe(fg_prob=0.0, augment="none", tumour_mix=1.0, fixed_mask=(True,) * 4)
    x, y, _ = make_batch([recipient, donor], 16, (12, 12, 12), np.random.default_rng(0), recipe)
    from_recipient = (x == 1.0).flatten(1).any(1)
    assert 0 < int(from_recipient.sum()) < 16
    for xi, yi in zip(x[from_recipient], y[from_recipient]):
        # The donor's tumour, centred on one of its voxels, lies at the patch centre with its margin.
        assert yi[2, 6, 6, 6] == 1 and torch.equal(yi[2].bool(), yi[2].bool() & (xi[0] == 2.0))
        assert (xi[0] == 1.0).any()  # the rest is still the recipient's brain
    # Without the mix, the recipient's patches have no tumour, and one case alone is never mixed.
    plain = make_batch(
        [recipient, donor],
        16,
        (12, 12, 12),
        np.random.default_rng(0),
        PatchRecipe(fg_prob=0.0, augment="none", fixed_mask=(True,) * 4),
    )
    assert not plain[1][(plain[0] == 1.0).flatten(1).any(1)].any()
    alone = make_batch([recipient], 4, (12, 12, 12), np.random.default_rng(0), recipe)
    assert not alone[1].any()


def test_bad_recipe_options_are_named():
    from medmodels.seg.train import patch_recipe

    with pytest.raises(InputError, match="--full-modality-fraction.*--augment"):
        patch_recipe(TrainConfig(full_modality_fraction=1.5, augment="heavy"))
    with pytest.raises(InputError, match="--bias-field must be in 0..1"):
        patch_recipe(TrainConfig(bias_field=1.5))
    with pytest.raises(InputError, match="--tumour-mix must be in 0..1"):
        patch_recipe(TrainConfig(tumour_mix=-0.1))


def test_parse_subset():
    assert parse_subset(None) is None and parse_subset("random") is None
    assert parse_subset("0010") == (False, False, True, False)
    assert parse_subset("t2, flair") == (True, False, False, True)
    with pytest.raises(InputError):
        parse_subset("flair,pd")


def test_train_end_to_end_and_resume(phantom_dataset, tmp_path, tiny_seg_settings):
    from medmodels.seg.inference import load_segmenter

    tiny = {**tiny_seg_settings, "val_every": 1}
    out = tmp_path / "run"
    summary = train(TrainConfig(data=str(phantom_dataset), out=str(out), iterations=2, **tiny))
    assert summary["iterations"] == 2 and len(summary["history"]) == 2
    assert (out / "model.pt").exists() and (out / "model.json").exists() and (out / "last.pt").exists()
    rec = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert rec["config"]["spacing"] == [8.0, 8.0, 8.0] and rec["config"]["kind"] == "shaspec"
    assert np.isfinite(summary["history"][-1]["loss_total"])
    # resume to 3 iterations: continues at 2
    summary = train(TrainConfig(data=str(phantom_dataset), out=str(out), iterations=3, resume=True, **tiny))
    assert [h["iteration"] for h in summary["history"]] == [1, 2, 3]
    assert load_segmenter(out / "model.pt", device="cpu").arch == "shaspec"
    # resuming with another architecture is refused
    with pytest.raises(InputError, match="another configuration"):
        train(TrainConfig(data=str(phantom_dataset), out=str(out), iterations=4, resume=True, **{**tiny, "width": 8}))


def test_baseline_and_dedicated_subset_train(phantom_dataset, tmp_path, tiny_seg_settings):
    tiny = {**tiny_seg_settings, "val_every": 1}
    summary = train(
        TrainConfig(
            data=str(phantom_dataset), out=str(tmp_path / "b"), arch="unet3d", subset="flair,t2", iterations=1, **tiny
        )
    )
    assert summary["config"]["kind"] == "unet3d" and summary["config"]["subset"] == "1001"
    assert "loss_dao" not in summary["history"][0]
