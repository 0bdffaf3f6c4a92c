"""The posterior-mean flow (PMRF): its sampler, its loss, its frozen mean, its training and loading."""

import numpy as np
import pytest
import torch
from medmodels.errors import InputError
from medmodels.nets.m2dn import M2DNet
from medmodels.nets.synthesis import MeanAndFlow, build_synthesis_net
from medmodels.phantom import make_phantom
from medmodels.syn import diffusion as D
from medmodels.syn import flow as F
from medmodels.syn.inference import load_synthesizer
from medmodels.syn.train import SynTrainConfig, fit, grows_from, model_config
from medmodels.syn.variants import variant
from syn_tiny import TINY, phantom_cases

SMALL = dict(modalities=4, encoder_channels=4, channels=[8, 16], emb_dim=16, context=0, refine_blocks=0)
CFG = D.DiffusionConfig(num_train_timesteps=50)
MISSING = torch.tensor([[0, 0, 1, 0], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.float32)


def mean_and_flow(seed=0) -> MeanAndFlow:
    torch.manual_seed(seed)
    return MeanAndFlow(SMALL).eval()


class Oracle(torch.nn.Module):
    """A flow network that always predicts the true image, beside a real mean network."""

    def __init__(self, target):
        super().__init__()
        self.mean, self.target = M2DNet(**SMALL).eval(), target

    def forward(self, x, t, missing, context=None):
        return self.target


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_a_perfect_flow_network_lands_on_the_image_in_any_number_of_steps(steps):
    x0 = torch.randn(3, 4, 16, 16)
    out = F.flow_sample(Oracle(x0), x0, MISSING, steps, CFG, F.FlowConfig(noise=0.3), torch.Generator().manual_seed(0))
    expected = torch.where(MISSING.bool()[:, :, None, None], x0.clamp(-CFG.clip, CFG.clip), x0)  # inputs held
    assert torch.allclose(out, expected, atol=1e-5)


def test_without_noise_one_step_is_the_flow_network_on_the_regression_prediction():
    net, x = mean_and_flow(), torch.randn(3, 4, 16, 16)
    out = F.flow_sample(net, x, MISSING, 1, CFG, F.FlowConfig(noise=0.0))
    mu = D.predict_regression(net.mean, x, MISSING)
    t = torch.full((3,), CFG.num_train_timesteps - 1)
    expected = torch.where(MISSING.bool()[:, :, None, None], net.flow(mu, t, MISSING).clamp(-3, 3), x)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out[~MISSING.bool()], x[~MISSING.bool()])  # available channels are the inputs


def test_samples_differ_by_the_start_noise_and_repeat_with_the_seed():
    net, x = mean_and_flow(), torch.randn(3, 4, 16, 16)
    v = variant({"kind": "pmrf", "diffusion": CFG.to_dict(), "flow": {"noise": 0.5}})
    a, b = (v.sample(net, x, MISSING, 2, torch.Generator().manual_seed(s)) for s in (1, 1))
    c = v.sample(net, x, MISSING, 2, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_loss_trains_the_flow_and_never_the_mean():
    net = mean_and_flow().train()
    assert not net.mean.training and net.flow.training  # the mean part stays in evaluation mode
    v = variant({"kind": "pmrf", "diffusion": CFG.to_dict()})
    loss = v.loss(net, torch.randn(3, 4, 16, 16), MISSING, torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None for p in net.mean.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.flow.parameters())


def test_flow_time_counts_down_like_the_diffusion_timestep():
    t = F.flow_timestep(torch.tensor([0.0, 0.5, 1.0]), 1000)
    assert t.tolist() == [999, 500, 0]


def test_a_flow_starts_from_a_single_network_of_its_shape_only():
    base = dict(spacing=(8.0,) * 3, encoder_channels=4, channels=(8, 16), emb_dim=16, context=0, refine_blocks=0)
    flow, m2dn = (model_config(SynTrainConfig(model=m, **base)) for m in ("pmrf", "m2dn"))
    assert "flow" in flow and "flow" not in m2dn
    assert grows_from(flow, m2dn) and grows_from(flow, model_config(SynTrainConfig(model="regression", **base)))
    wider = model_config(SynTrainConfig(model="m2dn", **{**base, "encoder_channels": 8}))
    assert not grows_from(flow, wider)
    net = build_synthesis_net(flow)
    single = M2DNet(**flow["net"])
    net.load_grown(single.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(net.flow.state_dict().values(), single.state_dict().values()))


@pytest.fixture(scope="module")
def cases():
    return phantom_cases()


@pytest.fixture(scope="module")
def regression(cases, tmp_path_factory):
    out = tmp_path_factory.mktemp("regression")
    fit(SynTrainConfig(out=str(out), model="regression", iterations=20, val_every=20, **TINY), cases[:2], cases[2:])
    return out / "model.pt"


def test_a_flow_trains_over_a_frozen_regression_and_loads_for_synthesis(cases, regression, tmp_path):
    cfg = SynTrainConfig(
        out=str(tmp_path), model="pmrf", mean_checkpoint=str(regression), iterations=30, val_every=10, **TINY
    )
    summary = fit(cfg, cases[:2], cases[2:])
    h = summary["history"]
    assert h[-1]["val_loss"] < h[0]["val_loss"] and summary["mean_checkpoint"]["checkpoint"] == str(regression)
    syn = load_synthesizer(tmp_path / "model.pt", device="cpu")
    assert syn.kind == "pmrf" and isinstance(syn.net, MeanAndFlow)
    # its samples differ, so the evaluation averages as many as asked (it once drew one for all but M2DN)
    assert syn.draws(4) == 4 and load_synthesizer(regression, device="cpu").draws(4) == 1
    trained = torch.load(regression, weights_only=True)["state_dict"]
    assert all(torch.equal(v.float(), syn.net.mean.state_dict()[k]) for k, v in trained.items())  # never trained
    images = make_phantom((48, 48, 32), seed=5).images
    out = syn.synthesize({k: images[k] for k in ("flair", "t1", "t2")}, steps=2, samples=2, seed=0)
    mean, std = out["t1c"]
    assert np.isfinite(mean.array).all() and std is not None and std.array.max() > 0


def test_a_mean_checkpoint_that_is_not_a_regression_is_refused(cases, tmp_path):
    fit(SynTrainConfig(out=str(tmp_path / "m2dn"), iterations=2, val_every=2, **TINY), cases[:1], [])
    cfg = SynTrainConfig(
        out=str(tmp_path / "f"), model="pmrf", mean_checkpoint=str(tmp_path / "m2dn" / "model.pt"), **TINY
    )
    with pytest.raises(InputError, match="is not a regression of this network"):
        fit(cfg, cases[:1], [])
    assert not (tmp_path / "f" / "last.pt").exists()
