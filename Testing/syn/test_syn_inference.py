"""Whole-volume synthesis: shapes for all 14 patterns, input grid and scale, seeds, std maps, checkpoints."""

import numpy as np
import pytest
import torch
from medmodels.brain_mask import brain_mask
from medmodels.errors import CheckpointError, InputError
from medmodels.modalities import MODALITY_KEYS, AvailabilityMask
from medmodels.nets.m2dn import M2DNet
from medmodels.normalisation import Normalizer
from medmodels.options import DEFAULT_SAMPLES
from medmodels.phantom import make_phantom
from medmodels.syn.data import to_preparation_grid, to_working_case
from medmodels.syn.inference import Synthesizer, estimate_normalizer, load_synthesizer
from medmodels.syn.masks import PATTERNS
from medmodels.syn.train import SynTrainConfig, intensity_reference, model_config
from medmodels.weights import save_checkpoint

SPACING = (10.0, 10.0, 10.0)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom((48, 48, 32), seed=3)


@pytest.fixture(scope="module")
def config():
    cases = [to_working_case(make_phantom((48, 48, 32), seed=s).images, SPACING) for s in (10, 11)]
    cfg = SynTrainConfig(spacing=SPACING, encoder_channels=4, channels=(8, 16, 16), emb_dim=16)
    return model_config(cfg, intensity_reference(cases))


def synthesizer(config, kind="m2dn"):
    torch.manual_seed(0)
    return Synthesizer(M2DNet(**config["net"]), {**config, "kind": kind}, torch.device("cpu"))


def test_the_library_default_is_the_commands_default_output(config, phantom):
    """``synthesize`` without ``samples`` gives what ``medmodels run`` and the panel give: the mean of
    ``DEFAULT_SAMPLES`` samples with its std map (a researcher calling the library gets the same output)."""
    syn, mask = synthesizer(config), AvailabilityMask.from_bits("1101")
    given = {k: phantom.images[k] for k in mask.keys}
    mean, std = syn.synthesize(given, mask, steps=2)["t1c"]
    ref_mean, ref_std = syn.synthesize(given, mask, steps=2, samples=DEFAULT_SAMPLES)["t1c"]
    assert std is not None and np.array_equal(mean.array, ref_mean.array) and np.array_equal(std.array, ref_std.array)


def test_prepare_case_and_back_to_the_input_grid(phantom):
    case = to_working_case(phantom.images, SPACING)
    assert case.image.shape[0] == 4 and case.image.shape[2] % 8 == 0 and case.image.shape[3] % 8 == 0
    assert (case.image[:, ~case.brain] == 0).all()
    back = to_preparation_grid(case, case.image[0])
    assert back.shape == phantom.images["flair"].shape
    brain = brain_mask(phantom.images)
    z = Normalizer.fit(phantom.images["flair"].array, brain).apply(phantom.images["flair"].array, brain)
    assert np.corrcoef(back[brain], z[brain])[0, 1] > 0.6  # coarse (10 mm) but the same image
    assert (back[~brain] == 0).all()


@pytest.mark.parametrize("mask", PATTERNS, ids=lambda m: m.bits)
def test_synthesize_returns_every_missing_modality_on_the_input_grid(config, phantom, mask):
    syn = synthesizer(config)
    given = {k: phantom.images[k] for k in mask.keys}
    out = syn.synthesize(given, mask, steps=2, samples=1, seed=0)
    assert set(out) == set(mask.missing_keys)
    ref = phantom.images[mask.keys[0]]
    for mean, std in out.values():
        assert std is None
        assert mean.same_grid(ref) and mean.array.dtype == np.float32 and np.isfinite(mean.array).all()


def test_same_seed_same_volume_other_seed_other_volume(config, phantom):
    syn = synthesizer(config)
    mask = AvailabilityMask.from_bits("1011")
    given = {k: phantom.images[k] for k in mask.keys}
    a = syn.synthesize(given, mask, steps=3, seed=5)["t1"][0].array
    b = syn.synthesize(given, mask, steps=3, seed=5)["t1"][0].array
    c = syn.synthesize(given, mask, steps=3, seed=6)["t1"][0].array
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_several_samples_give_a_mean_and_a_std_map(config, phantom):
    syn = synthesizer(config)
    mask = AvailabilityMask.from_bits("1100")
    given = {k: phantom.images[k] for k in mask.keys}
    out = syn.synthesize(given, mask, steps=2, samples=3, seed=0)
    brain = brain_mask(given)
    for key in ("t1c", "t2"):
        mean, std = out[key]
        assert std is not None and std.same_grid(mean)
        assert (std.array >= 0).all() and std.array[brain].max() > 0 and (std.array[~brain] == 0).all()
    one = syn.synthesize(given, mask, steps=2, samples=1, seed=0)
    assert not np.array_equal(one["t2"][0].array, out["t2"][0].array)  # the mean of three differs from one draw


def test_available_slices_pass_through_unchanged(config, phantom):
    syn = synthesizer(config)
    case = to_working_case({k: phantom.images[k] for k in ("flair", "t2")}, SPACING)
    mask = AvailabilityMask.from_bits("1001")
    mean, _ = syn.synthesize_case(case, mask, steps=2)
    assert np.array_equal(mean[[0, 3]], case.image[[0, 3]] * case.brain)


def test_missing_modality_gets_the_intensity_scale_of_its_kind(config, phantom):
    """The scale of a missing modality is estimated from the available ones (phantom: known scanner scales)."""
    brain = brain_mask(phantom.images)
    true = {k: Normalizer.fit(phantom.images[k].array, brain) for k in MODALITY_KEYS}
    est = estimate_normalizer("t1c", {k: true[k] for k in ("flair", "t2")}, config["intensity_reference"])
    assert abs(est.mean / true["t1c"].mean - 1) < 0.15 and abs(est.std / true["t1c"].std - 1) < 0.3


def test_regression_baseline_is_deterministic_and_one_pass(config, phantom):
    syn = synthesizer(config, kind="regression")
    mask = AvailabilityMask.from_bits("0111")
    given = {k: phantom.images[k] for k in mask.keys}
    a = syn.synthesize(given, mask, seed=0)["flair"][0].array
    b = syn.synthesize(given, mask, seed=1)["flair"][0].array
    assert np.array_equal(a, b)
    # Several samples of a deterministic model: one network pass per slice batch, the same mean, a zero std map.
    calls = []
    net_forward = syn.net.forward
    syn.net.forward = lambda *args, **kwargs: calls.append(1) or net_forward(*args, **kwargs)
    mean, std = syn.synthesize(given, mask, samples=4, seed=0)["flair"]
    assert len(calls) == 1 and np.array_equal(mean.array, a) and std is not None and not std.array.any()


def test_bad_requests_raise_input_errors(config, phantom):
    syn = synthesizer(config)
    with pytest.raises(InputError):
        syn.synthesize({"t1": phantom.images["t1"]}, AvailabilityMask.from_bits("0110"))
    with pytest.raises(InputError):
        syn.synthesize({"t1": phantom.images["t1"]}, steps=0)
    with pytest.raises(InputError):
        syn.synthesize({"t1": phantom.images["t1"]}, samples=0)
    assert syn.synthesize(dict(phantom.images)) == {}


def test_checkpoint_round_trip_and_tamper_check(config, phantom, tmp_path):
    torch.manual_seed(0)
    net = M2DNet(**config["net"])
    path = tmp_path / "syn.pt"
    save_checkpoint(path, {"state_dict": net.state_dict(), "config": config})
    syn = load_synthesizer(path, "cpu")
    assert syn.kind == "m2dn" and syn.spacing == SPACING
    given = {k: phantom.images[k] for k in ("flair", "t1")}
    ref = synthesizer(config).synthesize(given, steps=2, seed=0)["t2"][0].array
    assert np.array_equal(syn.synthesize(given, steps=2, seed=0)["t2"][0].array, ref)
    path.write_bytes(path.read_bytes() + b"0")
    with pytest.raises(CheckpointError):
        load_synthesizer(path, "cpu")


@pytest.mark.parametrize("kind", ["m2dn", "regression"])
def test_a_2_5d_network_synthesises_whole_volumes_and_its_grown_twin_gives_the_same(config, phantom, kind):
    """The synthesizer feeds a 2.5D network each slice's neighbours; grown from a 2D one, it gives the 2D output."""
    flat_config = {**config, "net": {**config["net"], "context": 0, "refine_blocks": 0}}
    flat = synthesizer(flat_config, kind)
    net = M2DNet(**{**config["net"], "context": 1, "refine_blocks": 1})
    net.load_grown(flat.net.state_dict())
    deep = Synthesizer(net, {**config, "kind": kind, "net": {**config["net"], "context": 1}}, torch.device("cpu"))
    assert deep.context == 1 and flat.context == 0
    mask = AvailabilityMask.from_bits("1101")
    given = {k: phantom.images[k] for k in mask.keys}
    a, b = (s.synthesize(given, mask, steps=2, seed=0)["t1c"][0].array for s in (flat, deep))
    assert np.allclose(a, b, atol=1e-4)
    for p in net.refine.parameters():  # once the added parts have weights, the neighbours count
        torch.nn.init.normal_(p, std=0.1)
    for enc in net.encoders:
        torch.nn.init.normal_(enc.body[0].weight, std=0.3)
    c = deep.synthesize(given, mask, steps=2, seed=0)["t1c"][0].array
    assert c.shape == a.shape and np.isfinite(c).all() and not np.allclose(a, c, atol=1e-4)
