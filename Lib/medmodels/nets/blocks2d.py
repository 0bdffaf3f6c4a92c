"""Small 2D building blocks for the M2DN synthesis network.

All tensors are ``(B, C, H, W)``; timestep embeddings are ``(B, E)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide ``channels`` (small nets have few channels)."""
    groups = math.gcd(8, channels)
    return nn.GroupNorm(groups, channels)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of diffusion timesteps.

    Args:
        t: ``(B,)`` integer or float timesteps.
        dim: embedding width (even).

    Returns:
        ``(B, dim)`` float tensor.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ModalityEncoder(nn.Module):
    """The paper's per-modality stem: 3x3 conv with stride 2, GroupNorm, ReLU.

    Args:
        out_channels: features per modality.
        in_channels: input planes of the modality: 1 (the slice), or 1 + its
            neighbouring slices when the network sees slice context.
            Input ``(B, in_channels, H, W)`` -> ``(B, out_channels, H/2, W/2)``.
    """

    def __init__(self, out_channels: int, in_channels: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1),
            group_norm(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation channel attention (Hu et al. 2018).

    Args:
        channels: feature channels C; ``(B, C, H, W)`` in and out.
        reduction: bottleneck ratio of the gating MLP.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.gate(x.mean(dim=(2, 3))))
        return x * w[:, :, None, None]


class ResBlockSE(nn.Module):
    """Residual block: (GN, SiLU, conv) x 2 with the timestep added in between,
    then squeeze-and-excitation, plus a 1x1 shortcut when widths differ.

    Args:
        in_channels: input channels. ``(B, in, H, W)`` -> ``(B, out, H, W)``.
        out_channels: output channels.
        emb_dim: width of the timestep embedding ``(B, emb_dim)``.
        zero_init: start the residual branch at zero (its last convolution), so
            the block is its shortcut until it is trained.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, zero_init: bool = False) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_channels)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.se = SqueezeExcite(out_channels)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        if zero_init:  # the block starts as its shortcut: added to a trained network, it changes nothing yet
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + self.se(h)


def downsample(x: torch.Tensor) -> torch.Tensor:
    """Halve H and W with bilinear interpolation (the paper's down-sampling)."""
    return F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=False)


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear up-sampling to an explicit size (robust to odd sizes)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
