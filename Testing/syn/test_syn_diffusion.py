"""M2DN diffusion: masks, forward process, samplers, network shapes."""

import itertools

import monai
import numpy as np
import pytest
import torch
from medmodels.errors import InputError
from medmodels.modalities import AvailabilityMask
from medmodels.nets.m2dn import M2DNet
from medmodels.syn import diffusion as D
from medmodels.syn.losses import synthesis_loss
from medmodels.syn.masks import PATTERNS, missing_tensor, sample_missing
from medmodels.syn.variants import variant as variant_of
from monai.networks.schedulers import DDIMScheduler

SMALL = dict(encoder_channels=4, channels=(8, 16, 16), emb_dim=16)


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return M2DNet(**SMALL).eval()


def test_there_are_14_patterns_none_trivial():
    bits = {m.bits for m in PATTERNS}
    assert len(bits) == 14
    assert bits == {"".join(b) for b in itertools.product("01", repeat=4)} - {"0000", "1111"}


def test_training_draws_every_nontrivial_mask_and_no_other():
    v = sample_missing(4000, torch.Generator().manual_seed(0))
    assert v.shape == (4000, 4)
    rows = {tuple(int(x) for x in r) for r in v.tolist()}
    expected = {tuple(int(x) for x in m.missing_vector()) for m in PATTERNS}
    assert rows == expected  # all 14 drawn, nothing else (no all-missing, no all-present)
    counts = torch.stack([(v == torch.tensor(p)).all(1).sum() for p in expected])
    assert counts.min() > 4000 / 14 * 0.7  # roughly uniform


def test_forward_process_leaves_available_modalities_untouched():
    cfg = D.DiffusionConfig()
    sched = D.ddpm_scheduler(cfg)
    x0 = torch.randn(14, 4, 16, 16)
    missing = torch.stack([torch.as_tensor(m.missing_vector()) for m in PATTERNS])
    t = torch.full((14,), 500)
    xt = D.forward_missing(x0, missing, t, torch.randn_like(x0), sched)
    avail = ~missing.bool()
    for b in range(14):
        assert torch.equal(xt[b, avail[b]], x0[b, avail[b]])
        assert not torch.allclose(xt[b, ~avail[b]], x0[b, ~avail[b]])


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sampler_output_equals_inputs_on_available_modalities(sampler):
    cfg = D.DiffusionConfig(num_train_timesteps=40)
    net = tiny_net()
    x = torch.randn(14, 4, 16, 16)
    missing = torch.stack([torch.as_tensor(m.missing_vector()) for m in PATTERNS])
    g = torch.Generator().manual_seed(0)
    if sampler == "ddim":
        out = D.sample_ddim(net, cfg, x, missing, 5, g)
    else:
        out = D.sample_ddpm(net, cfg, x, missing, g)
    avail = ~missing.bool()
    assert out.shape == x.shape and torch.isfinite(out).all()
    for b in range(14):
        assert torch.equal(out[b, avail[b]], x[b, avail[b]])
    reg = D.predict_regression(net, x, missing)
    for b in range(14):
        assert torch.equal(reg[b, avail[b]], x[b, avail[b]])


def test_ddim_grid_starts_from_pure_noise_and_ends_at_zero_noise():
    cfg = D.DiffusionConfig()
    for steps in (1, 4, 10, 1000):
        ts = D.ddim_scheduler(cfg, steps).timesteps
        assert len(ts) == steps and int(ts[0]) == 999
        assert int(ts[-1]) - 1000 // steps < 0  # the last step lands on alpha = 1 (the clean image)


def _monai_1_5_1_set_timesteps(self, num_inference_steps, device=None):
    """MONAI 1.5.1's DDIMScheduler.set_timesteps (what Slicer 5.6/5.8 users get on Python 3.9)."""
    self.num_inference_steps = num_inference_steps
    step_ratio = self.num_train_timesteps // num_inference_steps
    grid = (np.arange(0, num_inference_steps) * step_ratio).round()[::-1].copy().astype(np.int64)
    self.timesteps = torch.from_numpy(grid).to(device) + self.steps_offset


def _ddim_run(steps):
    cfg = D.DiffusionConfig()
    x = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    missing = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]])
    return D.ddim_scheduler(cfg, steps).timesteps, D.sample_ddim(
        tiny_net(), cfg, x, missing, steps, torch.Generator().manual_seed(0)
    )


@pytest.mark.parametrize("steps", [2, 3, 7])
def test_ddim_results_do_not_depend_on_monais_grid(steps, monkeypatch):
    """Issue 21: MONAI 1.5.1 and 1.6.1 make different grids for steps not dividing 1000;
    the sampler builds its own, so both give the same timesteps and the same images."""
    grid, out = _ddim_run(steps)
    monkeypatch.setattr(DDIMScheduler, "set_timesteps", _monai_1_5_1_set_timesteps)
    grid_151, out_151 = _ddim_run(steps)
    assert torch.equal(grid, grid_151) and torch.equal(out, out_151)
    assert torch.equal(grid, D.ddim_timesteps(1000, steps))


def test_ddim_grid_is_monai_1_6_1s_so_the_bundled_figures_stand():
    """The grid 1.6.1 makes (docs' figures, default 2 steps), from the issue's example and the rule."""
    assert D.ddim_timesteps(1000, 3).tolist() == [999, 666, 332]
    assert D.ddim_timesteps(1000, 2).tolist() == [999, 499]
    monai_version = tuple(int(p) for p in monai.__version__.split(".")[:2])
    if monai_version < (1, 6):
        pytest.skip(f"MONAI {monai.__version__}: the comparison needs 1.6's own grid")
    for steps in (1, 2, 3, 7, 10, 333, 1000):
        T = 1000
        sched = DDIMScheduler(T, "linear_beta", prediction_type="sample", steps_offset=T // steps - 1)
        sched.set_timesteps(steps)
        assert torch.equal(D.ddim_timesteps(T, steps), sched.timesteps), steps


def test_default_step_count_gives_monai_1_6_1s_images():
    """Default steps: the images equal those of MONAI 1.6.1's own scheduler set as before this change."""
    from medmodels.syn.inference import DEFAULT_STEPS

    monai_version = tuple(int(p) for p in monai.__version__.split(".")[:2])
    if monai_version < (1, 6):
        pytest.skip(f"MONAI {monai.__version__}: the comparison needs 1.6's own grid")
    cfg = D.DiffusionConfig()
    T, steps = cfg.num_train_timesteps, DEFAULT_STEPS
    before = DDIMScheduler(
        T,
        cfg.schedule,
        prediction_type="sample",
        clip_sample=True,
        clip_sample_min=-cfg.clip,
        clip_sample_max=cfg.clip,
        steps_offset=T // steps - 1,
    )
    before.set_timesteps(steps)
    x = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    missing = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]])
    expected = D.reverse_process(tiny_net(), before, x, missing, torch.Generator().manual_seed(0))
    assert torch.equal(_ddim_run(steps)[1], expected)


@pytest.mark.parametrize("mask", PATTERNS, ids=lambda m: m.bits)
def test_network_shapes_for_every_pattern(mask):
    net = tiny_net()
    x = torch.randn(2, 4, 24, 40)
    out = net(x, torch.tensor([0, 999]), missing_tensor(mask, 2))
    assert out.shape == (2, 4, 24, 40)


def test_regression_input_zero_fills_missing():
    x = torch.randn(1, 4, 8, 8)
    m = missing_tensor(AvailabilityMask.from_bits("1010"))
    r = D.regression_input(x, m)
    assert torch.equal(r[:, [0, 2]], x[:, [0, 2]]) and (r[:, [1, 3]] == 0).all()


@pytest.mark.parametrize("kind", ["m2dn", "regression"])
def test_both_variants_share_one_interface(kind):
    cfg = D.DiffusionConfig(num_train_timesteps=40)
    variant = variant_of({"kind": kind, "diffusion": cfg.to_dict()})
    assert variant.kind == kind
    net = tiny_net()
    x = torch.randn(14, 4, 16, 16)
    missing = torch.stack([torch.as_tensor(m.missing_vector()) for m in PATTERNS])
    loss = variant.loss(net, x, missing, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    avail = ~missing.bool()
    for steps in (5, None):  # None: the full-length DDPM chain (M2DN); ignored by the regression baseline
        out = variant.sample(net, x, missing, steps, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert all(torch.equal(out[b, avail[b]], x[b, avail[b]]) for b in range(14))
    # the objects are the module's samplers and losses, not other code, run in diffusion space:
    # they take and give z-scores and scale by the config's data_scale themselves
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    s = cfg.data_scale
    if kind == "m2dn":
        assert torch.equal(variant.sample(net, x, missing, 5, g()), D.sample_ddim(net, cfg, x * s, missing, 5, g()) / s)
        pred = D.diffusion_prediction(net, x * s, missing, D.ddpm_scheduler(cfg), g())
    else:
        assert torch.equal(variant.sample(net, x, missing, 5, g()), D.predict_regression(net, x * s, missing) / s)
        pred = D.regression_prediction(net, x * s, missing)
    assert torch.equal(variant.loss(net, x, missing, g()), synthesis_loss(pred, x * s, missing))
    # training_prediction is that estimate, drawn as the loss draws, and the truth in diffusion space
    got, truth = variant.training_prediction(net, x, missing, g())
    assert torch.equal(got, pred) and torch.equal(truth, x * s)


@pytest.mark.parametrize("kind", ["m2dn", "regression"])
def test_the_variant_owns_the_diffusion_space_scaling(kind):
    """Callers pass and get z-scores; the network sees them times the checkpoint's data_scale."""
    seen = []

    def net(x, t, missing, context):  # records what the network is given, predicts its input
        seen.append((x.clone(), context.clone()))
        return x

    x, context = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 2, 8, 8)
    missing = torch.tensor([[0, 0, 1, 0]] * 3, dtype=torch.float32)
    for scale in (0.5, 0.25):
        variant = variant_of(
            {"kind": kind, "diffusion": D.DiffusionConfig(num_train_timesteps=20, data_scale=scale).to_dict()}
        )
        seen.clear()
        out = variant.sample(net, x, missing, 2, torch.Generator().manual_seed(0), context)
        assert all(torch.equal(v[:, [0, 1, 3]], x[:, [0, 1, 3]] * scale) for v, _ in seen)
        assert all(torch.equal(c, context * scale) for _, c in seen)
        assert torch.equal(out[:, [0, 1, 3]], x[:, [0, 1, 3]])  # given back in data space
        seen.clear()
        variant.loss(net, x, missing, torch.Generator().manual_seed(0), context)
        assert torch.equal(seen[0][0][:, [0, 1, 3]], x[:, [0, 1, 3]] * scale)


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(InputError, match="m2dn, regression, pmrf"):
        variant_of({"kind": "gan", "diffusion": {}})


def test_grown_network_computes_what_the_smaller_one_did():
    small = tiny_net(seed=3)
    big = M2DNet(**SMALL, context=2, refine_blocks=2).eval()
    big.load_grown(small.state_dict())
    x, ctx = torch.randn(5, 4, 16, 16), torch.randn(5, 4, 4, 16, 16)
    missing, t = torch.tensor([[0, 0, 1, 0]] * 5, dtype=torch.float32), torch.tensor([999, 600, 300, 10, 0])
    with torch.no_grad():
        assert torch.allclose(big(x, t, missing, ctx), small(x, t, missing), atol=1e-6)
    with pytest.raises(RuntimeError, match="cannot grow"):  # another width is not a growth
        M2DNet(encoder_channels=4, channels=(8, 16, 32), emb_dim=16).load_grown(small.state_dict())


def test_context_of_missing_modalities_is_not_seen():
    torch.manual_seed(0)
    net = M2DNet(**SMALL, context=1).eval()
    for p in net.parameters():  # a random net, so the neighbours matter
        torch.nn.init.normal_(p, std=0.3)
    x, ctx = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 2, 16, 16)
    missing, t = torch.tensor([[0, 0, 1, 0]] * 2, dtype=torch.float32), torch.tensor([999, 0])
    other = ctx.clone()
    other[:, 2] = 5.0  # T1c is missing: its neighbours must not change the output ...
    with torch.no_grad():
        out = net(x, t, missing, ctx)
        assert torch.equal(out, net(x, t, missing, other))
        other[:, 1] = 5.0  # ... while an available modality's neighbours do
        assert not torch.allclose(out, net(x, t, missing, other))
    with pytest.raises(ValueError, match="context"):
        net(x, t, missing)


@pytest.mark.parametrize("variant", [D.Diffusion(D.DiffusionConfig(num_train_timesteps=40)), D.Regression()])
def test_loss_weight_of_one_is_the_plain_mean_and_other_weights_change_it(variant):
    net = tiny_net()
    x0 = torch.randn(4, 4, 16, 16)
    missing = torch.tensor([[0, 0, 1, 0]] * 4, dtype=torch.float32)
    ones = torch.ones(4, 1, 16, 16)

    def loss(weight):
        return variant.loss(net, x0, missing, torch.Generator().manual_seed(0), weight=weight)

    assert torch.allclose(loss(ones), loss(None))  # weight 1 everywhere = the plain mean
    assert torch.allclose(loss(3 * ones), loss(None))  # divided by the mean weight: same scale
    region = ones.clone()
    region[:, :, :4] = 5.0
    assert not torch.allclose(loss(region), loss(None))
