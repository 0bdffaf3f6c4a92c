"""Posterior-mean rectified flow (PMRF): a flow that refines the regression's prediction.

Plain diffusion at this project's compute scores below the regression baseline
(issue 20; "Regression is all you need for medical image translation", arXiv
2505.02048): the regression network gives the posterior mean, the best guess in
squared error, but blurs what it cannot place (the enhancing rim, lesion
margins). PMRF (Ohayon, Michaeli and Elad, ICLR 2025; arXiv 2508.12640) keeps that
mean and learns only what is left: a rectified flow carries the mean, with a
little noise, to the true image,

    z_0 = mu + sigma * eps,    z_s = (1 - s) z_0 + s x_0,    s ~ U[0, 1],

and the network, given ``z_s`` in the missing channels (the available ones
clean), predicts ``x_0``; its velocity is ``(x0_pred - z_s) / (1 - s)``.
Sampling integrates that ODE with a few Euler steps from ``z_0``; one step
is one network call on the noisy mean. The flow therefore models the residual
``x_0 - mu`` (its start already is the mean), the mean's fidelity is kept, and
``sigma`` makes samples differ, so the std map over samples means something.

Tensors, spaces and arguments are as in ``medmodels.syn.diffusion``: callers
pass and get z-scores; the work happens in diffusion space (z-score times
``data_scale``). The network is a ``medmodels.nets.synthesis.MeanAndFlow``:
its frozen ``mean`` part is a trained regression ``M2DNet``, its forward pass
the flow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from medmodels.syn.diffusion import DiffusionConfig, Variant, _broadcast, predict_regression


@dataclass(frozen=True)
class FlowConfig:
    """The flow's settings, stored in a PMRF checkpoint (``config["flow"]``).

    Args:
        noise: sigma, the standard deviation (diffusion space) of the noise added
            to the mean at the start of the flow; 0 gives a deterministic refiner.
    """

    noise: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


def flow_timestep(s: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
    """Flow time ``s`` in [0, 1] (0 = the noisy mean) as the network's integer timestep:
    T - 1 at the start, 0 at the clean image, as the diffusion network counts, so a flow
    initialised from M2DN weights reads "far from clean" where it is."""
    return ((1.0 - s) * (num_train_timesteps - 1)).round().long()


def _device(generator: torch.Generator | None, x: torch.Tensor) -> torch.device:
    """Where random numbers are drawn: the generator's device (CPU in training, the
    synthesizer's device at inference), else the data's."""
    return generator.device if generator is not None else x.device


def _unwrapped(net: nn.Module) -> nn.Module:
    """The ``MeanAndFlow`` inside a DDP wrapper (its ``mean`` part is not trained)."""
    return getattr(net, "module", net)


def flow_start(
    mean_net: nn.Module,
    x: torch.Tensor,
    missing: torch.Tensor,
    noise: float,
    generator: torch.Generator | None = None,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """``z_0``, the flow's start in diffusion space: available channels equal ``x``, missing ones
    are the regression's prediction ``mu`` plus ``noise * eps``.
    """
    with torch.no_grad():
        mu = predict_regression(mean_net, x, missing, context)
    eps = torch.randn(x.shape, generator=generator, device=_device(generator, x)).to(x.device, x.dtype)
    return torch.where(_broadcast(missing), mu + noise * eps, x)


def flow_prediction(
    net: nn.Module,
    x0: torch.Tensor,
    missing: torch.Tensor,
    cfg: DiffusionConfig,
    flow: FlowConfig,
    generator: torch.Generator | None = None,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """The x0 estimate the loss (``syn.losses``) scores, at a uniform point of the straight path
    from the noisy mean to ``x0``; ``(B, M, H, W)`` like ``x0``."""
    z0 = flow_start(_unwrapped(net).mean, x0, missing, flow.noise, generator, context)
    s = torch.rand((x0.shape[0],), generator=generator, device=_device(generator, x0)).to(x0.device)
    zs = (1.0 - s)[:, None, None, None] * z0 + s[:, None, None, None] * x0
    zs = torch.where(_broadcast(missing), zs, x0)
    return net(zs, flow_timestep(s, cfg.num_train_timesteps), missing, context)


@torch.no_grad()
def flow_sample(
    net: nn.Module,
    x_avail: torch.Tensor,
    missing: torch.Tensor,
    steps: int,
    cfg: DiffusionConfig,
    flow: FlowConfig,
    generator: torch.Generator | None = None,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """Euler integration of the flow in ``steps`` network calls, available channels held.

    The last step lands on the network's x0 prediction (its step reaches s = 1).
    """
    m = _broadcast(missing)
    z = flow_start(_unwrapped(net).mean, x_avail, missing, flow.noise, generator, context)
    for k in range(steps):
        s = torch.full((x_avail.shape[0],), k / steps, device=x_avail.device)
        x0_pred = net(z, flow_timestep(s, cfg.num_train_timesteps), missing, context).clamp(-cfg.clip, cfg.clip)
        z = z + (x0_pred - z) / (steps - k)  # ds / (1 - s) with ds = 1 / steps
        z = torch.where(m, z, x_avail)
    return z


class PosteriorMeanFlow(Variant):
    """PMRF: a rectified flow from the regression's posterior mean to the image
    (``net`` a ``MeanAndFlow``); ``steps`` Euler steps, None = 1.

    Args:
        cfg: the checkpoint's diffusion settings (data_scale, T for the
            timestep embedding, the clamp).
        flow: the flow's settings (``config["flow"]``); default ``FlowConfig()``.
    """

    kind = "pmrf"

    def __init__(self, cfg: DiffusionConfig, flow: FlowConfig | None = None) -> None:
        super().__init__(cfg)
        self.flow = flow or FlowConfig()

    def space_prediction(self, net, x0, missing, generator, context) -> torch.Tensor:
        return flow_prediction(net, x0, missing, self.cfg, self.flow, generator, context)

    def space_sample(self, net, x, missing, steps, generator, context) -> torch.Tensor:
        return flow_sample(net, x, missing, steps or 1, self.cfg, self.flow, generator, context)
