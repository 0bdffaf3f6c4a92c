"""ShaSpec and the baseline U-Net: shapes for every subset, masked inputs
ignored, and the two auxiliary losses."""

import pytest
import torch
from medmodels.errors import InputError
from medmodels.modalities import AvailabilityMask
from medmodels.nets.segmentation import build_segmentation_net as build_model
from medmodels.nets.shaspec import ShaSpec
from medmodels.nets.unet3d import UNet3D
from medmodels.seg.losses import dao_loss, dco_loss, seg_losses

SUBSETS = [m.available for m in AvailabilityMask.all_subsets()]


def _nets():
    torch.manual_seed(0)
    return [ShaSpec(width=4, depth=3).eval(), UNet3D(width=4, depth=3).eval()]


@pytest.mark.parametrize("net", _nets(), ids=["shaspec", "unet3d"])
def test_output_shape_for_every_subset(net):
    x = torch.randn(1, 4, 8, 12, 16)
    assert len(SUBSETS) == 15
    with torch.no_grad():
        for subset in SUBSETS:
            out = net(x, torch.tensor(subset))
            assert out["logits"].shape == (1, 3, 8, 12, 16)
            assert torch.isfinite(out["logits"]).all()


@pytest.mark.parametrize("net", _nets(), ids=["shaspec", "unet3d"])
def test_masked_out_modality_has_no_effect(net):
    torch.manual_seed(1)
    x = torch.randn(2, 4, 8, 8, 8)
    for subset in SUBSETS:
        if all(subset):
            continue
        mask = torch.tensor([subset, subset])
        y = x.clone()
        for i, avail in enumerate(subset):
            if not avail:
                y[:, i] = torch.randn_like(y[:, i]) * 10 + 5  # anything at all in the missing channel
        with torch.no_grad():
            a, b = net(x, mask)["logits"], net(y, mask)["logits"]
        assert torch.equal(a, b), subset
        # while an available modality does change the output
        j = subset.index(True)
        y[:, j] += 1.0
        with torch.no_grad():
            assert not torch.allclose(net(y, mask)["logits"], a)


def test_per_sample_masks_match_single_sample_runs():
    net = _nets()[0]
    x = torch.randn(2, 4, 16, 16, 16)
    masks = torch.tensor([[True, False, True, False], [False, False, False, True]])
    with torch.no_grad():
        both = net(x, masks)["logits"]
        one = torch.cat([net(x[i : i + 1], masks[i : i + 1])["logits"] for i in range(2)])
    assert torch.allclose(both, one, atol=1e-5)


def test_missing_shared_feature_is_mean_of_available():
    net = _nets()[0]
    x = torch.randn(1, 4, 16, 16, 16)
    mask = torch.tensor([[True, False, True, False]])
    with torch.no_grad():
        shared = net(x, mask)["shared"][0]
    mean = (shared[0] + shared[2]) / 2
    assert torch.allclose(shared[1], mean) and torch.allclose(shared[3], mean)
    assert not torch.allclose(shared[0], shared[2])


def test_empty_mask_is_refused():
    with pytest.raises(ValueError, match="at least one available"):
        _nets()[0](torch.randn(1, 4, 8, 8, 8), torch.zeros(1, 4, dtype=torch.bool))


def test_dao_loss_is_l1_between_available_shared_features():
    shared = torch.zeros(1, 4, 2, 2, 2, 2)
    shared[0, 0] = 1.0
    shared[0, 1] = 3.0  # missing: must not count
    mask = torch.tensor([[True, False, True, False]])
    assert float(dao_loss(shared, mask)) == pytest.approx(1.0)  # |1 - 0|
    mask = torch.tensor([[True, True, True, False]])  # pairs (0,1)=2, (0,2)=1, (1,2)=3 -> mean 2
    assert float(dao_loss(shared, mask)) == pytest.approx(2.0)
    assert float(dao_loss(shared, torch.tensor([[True, False, False, False]]))) == 0.0


def test_dco_loss_is_cross_entropy_over_available_modalities():
    mask = torch.tensor([[True, False, True, True]])
    good = torch.full((1, 4, 4), -10.0)
    for i in range(4):
        good[0, i, i] = 10.0
    bad = good.roll(1, dims=2)
    bad[0, 1] = 0  # the missing row does not count either way
    assert float(dco_loss(good, mask)) < 1e-6
    assert float(dco_loss(bad, mask)) > 10
    uniform = torch.zeros(1, 4, 4)
    assert float(dco_loss(uniform, mask)) == pytest.approx(torch.log(torch.tensor(4.0)).item(), rel=1e-5)


def test_auxiliary_losses_train_their_parts():
    """DCO reaches the specific encoders and the domain head; DAO the shared encoder."""
    net = ShaSpec(width=4, depth=3)
    x = torch.randn(2, 4, 16, 16, 16)
    out = net(x, torch.tensor([[True, True, False, True]] * 2))
    y = torch.zeros(2, 3, 16, 16, 16)
    losses = seg_losses(out, y, dao_weight=0.1, dco_weight=0.02)
    assert set(losses) == {"dice", "bce", "dao", "dco", "total"}
    expected = losses["dice"] + losses["bce"] + 0.1 * losses["dao"] + 0.02 * losses["dco"]
    assert torch.allclose(losses["total"], expected)
    net.zero_grad()
    losses["dco"].backward(retain_graph=True)
    assert net.domain_head.weight.grad.abs().sum() > 0
    assert net.specific_encoders[0].blocks[0][0][0].weight.grad.abs().sum() > 0
    assert net.specific_encoders[2].blocks[0][0][0].weight.grad is None  # T1c missing: unused
    net.zero_grad()
    losses["dao"].backward()
    assert net.shared_encoder.blocks[0][0][0].weight.grad.abs().sum() > 0
    assert net.decoder.head.weight.grad is None


def test_weight_standardised_convolution_ignores_the_kernels_scale_and_offset():
    from medmodels.nets.unet3d import WSConv3d

    torch.manual_seed(0)
    conv = WSConv3d(2, 3, 3, padding=1, bias=False)
    x = torch.randn(1, 2, 6, 6, 6)
    before = conv(x)
    with torch.no_grad():
        conv.weight.mul_(torch.tensor([3.0, 0.5, 7.0])[:, None, None, None, None]).add_(0.2)
    assert torch.allclose(conv(x), before, atol=1e-2)  # outputs reach ~20; eps 1e-5 on the std
    plain = torch.nn.Conv3d(2, 3, 3, padding=1, bias=False)
    plain.load_state_dict(conv.state_dict())  # same parameters as a plain convolution
    assert not torch.allclose(plain(x), before, atol=1e-2)


def test_weight_std_networks_build_from_their_config():
    for arch in ("shaspec", "unet3d"):
        net = build_model({"kind": arch, "net": {"width": 4, "depth": 3, "weight_std": True}})
        assert net.config["weight_std"] is True
        out = net(torch.randn(1, 4, 16, 16, 16), torch.tensor([True, False, True, True]))
        assert out["logits"].shape == (1, 3, 16, 16, 16)
        assert build_model({"kind": arch, "net": {"width": 4, "depth": 3}}).config["weight_std"] is False


def test_concatenating_skips_grow_exactly_from_mean_skips_and_then_learn_which_modality():
    """skip_fusion="concat" (the official code's) starts as the bundled weights' mean, then can differ."""
    from medmodels.seg.train import TrainConfig, grows_from, model_config

    torch.manual_seed(0)
    mean_net = ShaSpec(width=4, depth=3).eval()
    concat = ShaSpec(width=4, depth=3, skip_fusion="concat").eval()
    concat.load_grown(mean_net.state_dict())
    x = torch.randn(2, 4, 16, 16, 16)
    for bits in ("1111", "1000", "0110"):
        mask = torch.tensor([[c == "1" for c in bits]] * 2)
        with torch.no_grad():
            assert torch.allclose(concat(x, mask)["logits"], mean_net(x, mask)["logits"], atol=1e-5)
    with torch.no_grad():  # FLAIR's slot weighted apart from T1's: now the slots are told apart
        concat.skip_reducers[0].weight[:, :4] *= 3.0
        assert not torch.allclose(concat(x)["logits"], mean_net(x)["logits"], atol=1e-3)
    with pytest.raises(RuntimeError, match="cannot grow"):
        concat.load_grown({k: v for k, v in mean_net.state_dict().items() if not k.startswith("decoder.")})
    base = dict(width=4, depth=3)
    ours, theirs = (model_config(TrainConfig(skip_fusion=f, **base)) for f in ("concat", "mean"))
    assert "skip_fusion" not in theirs["net"] and grows_from(ours, theirs) and not grows_from(theirs, ours)
    assert not grows_from(ours, model_config(TrainConfig(skip_fusion="mean", width=8, depth=3)))
    assert build_model(ours).config["skip_fusion"] == "concat"
    with pytest.raises(InputError, match="is a ShaSpec option"):
        model_config(TrainConfig(arch="unet3d", skip_fusion="concat", **base))
