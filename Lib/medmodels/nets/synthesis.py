"""The synthesis networks a checkpoint can hold, and the one builder for them.

M2DN and the regression baseline are one ``M2DNet``. The posterior-mean flow
(``medmodels.syn.flow``) is two of the same shape: a frozen regression network
that predicts the posterior mean, and the flow network that refines it. A blend
(``medmodels.syn.blend``) is two of the same shape too: M2DN, whose samples are
averaged, and a regression, whose prediction is averaged with them. Each pair
is kept in one module so one state dict, one SHA-256 and one ``export`` carry
both.
"""

from __future__ import annotations

import torch
from torch import nn

from medmodels.nets.m2dn import M2DNet, build_m2dn

#: ``config["kind"]`` of the checkpoints whose network is a ``MeanAndFlow``.
MEAN_AND_FLOW_KINDS = ("pmrf",)
#: ``config["kind"]`` of the checkpoints whose network is a ``SamplerAndMean`` (``medmodels.syn.blend``).
BLEND_KIND = "blend"


class MeanAndFlow(nn.Module):
    """A frozen posterior-mean network and the flow network that refines its prediction.

    Args:
        net: the ``M2DNet`` constructor arguments of both parts (a checkpoint's ``config["net"]``).

    Forward (the flow network's; the mean part is called by ``medmodels.syn.flow``):
        x: ``(B, M, H, W)`` the flow's state (available modalities clean).
        t: ``(B,)`` integer timesteps (``flow.flow_timestep``).
        missing: ``(B, M)`` float, 1 = missing.
        context: ``(B, M, 2k, H, W)`` neighbouring slices, for 2.5D networks.

    Returns:
        ``(B, M, H, W)``: the flow network's prediction of the clean images.
    """

    def __init__(self, net: dict) -> None:
        super().__init__()
        self.mean = build_m2dn(net)
        self.flow = build_m2dn(net)
        self.mean.requires_grad_(False)  # the posterior mean is trained before, by the regression

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, missing: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.flow(x, t, missing, context)

    def train(self, mode: bool = True) -> MeanAndFlow:
        """The flow trains; the mean part stays in evaluation mode (it is not trained)."""
        super().train(mode)
        self.mean.eval()
        return self

    def load_mean(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the posterior-mean part from a regression ``M2DNet``'s weights."""
        self.mean.load_state_dict(state_dict)

    def load_grown(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Start the flow part from a single ``M2DNet``'s weights (an M2DN or regression
        checkpoint, ``--init``); the mean part keeps the weights ``load_mean`` gave it.

        Raises:
            RuntimeError: the weights do not fit the flow network.
        """
        self.flow.load_state_dict(state_dict)


class SamplerAndMean(nn.Module):
    """The two networks of a blend (``medmodels.syn.blend``): an M2DN sampler and a regression network.

    Args:
        net: the ``M2DNet`` constructor arguments of both parts (a checkpoint's ``config["net"]``).

    It has no forward pass of its own: ``syn.blend.BlendedSynthesizer`` runs each part as the
    synthesizer of its kind runs it (``sampler`` through the diffusion sampler, ``mean`` once).
    """

    def __init__(self, net: dict) -> None:
        super().__init__()
        self.sampler = build_m2dn(net)
        self.mean = build_m2dn(net)


def build_synthesis_net(config: dict) -> M2DNet | MeanAndFlow | SamplerAndMean:
    """The network of a synthesis checkpoint's config (``kind`` and ``net``)."""
    if config.get("kind") in MEAN_AND_FLOW_KINDS:
        return MeanAndFlow(config["net"])
    if config.get("kind") == BLEND_KIND:
        return SamplerAndMean(config["net"])
    return build_m2dn(config["net"])
