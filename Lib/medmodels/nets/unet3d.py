"""3D U-Net building blocks, shared by ShaSpec and the baseline U-Net.

The baseline (:class:`UNet3D`) is the ShaSpec network without the
shared/specific modelling: one encoder over the four modality channels
stacked (a missing modality's channel is zero-filled), the same decoder, the
same three sigmoid region outputs (ET, TC, WT). Both networks are built from
:class:`Encoder` and :class:`Decoder` below, so "same U-Net" holds by
construction.

Tensors are ``(B, C, D, H, W)`` with ``D = z``. Modality channels follow
``medmodels.modalities.MODALITY_KEYS`` (FLAIR, T1, T1c, T2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_MODALITIES = 4
N_REGIONS = 3  # ET, TC, WT


def stage_channels(width: int, depth: int, max_channels: int = 320) -> list[int]:
    """Channels of each resolution level: ``width * 2**level``, capped."""
    if width < 1 or depth < 1:
        raise ValueError(f"width and depth must be >= 1, got width={width}, depth={depth}")
    return [min(width * 2**lvl, max_channels) for lvl in range(depth)]


class WSConv3d(nn.Conv3d):
    """``nn.Conv3d`` with weight standardisation (Qiao et al. 2019): each output
    channel's kernel is centred and scaled to unit variance before use, as in
    every convolution of the official ShaSpec code. Same parameters and state
    dict as ``nn.Conv3d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3, 4), keepdim=True)
        std = w.std(dim=(1, 2, 3, 4), keepdim=True, unbiased=False)
        return self._conv_forward(x, (w - mean) / (std + 1e-5), self.bias)


class ConvNormAct(nn.Sequential):
    """3x3x3 convolution (weight-standardised when ``weight_std``), instance norm (affine), leaky ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, weight_std: bool = False):
        conv = WSConv3d if weight_std else nn.Conv3d
        super().__init__(
            conv(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.InstanceNorm3d(cout, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )


class ConvBlock(nn.Sequential):
    """Two :class:`ConvNormAct`; the first may downsample with stride 2."""

    def __init__(self, cin: int, cout: int, stride: int = 1, weight_std: bool = False):
        super().__init__(ConvNormAct(cin, cout, stride, weight_std), ConvNormAct(cout, cout, 1, weight_std))


class Encoder(nn.Module):
    """U-Net encoder: ``depth`` levels, stride-2 convolution between levels.

    ``forward`` returns the feature map of every level, finest first; the last
    one is the bottleneck.
    """

    def __init__(self, in_channels: int, width: int = 8, depth: int = 4, weight_std: bool = False):
        super().__init__()
        chans = stage_channels(width, depth)
        self.channels = chans
        blocks = [ConvBlock(in_channels, chans[0], 1, weight_std)]
        for lvl in range(1, depth):
            blocks.append(ConvBlock(chans[lvl - 1], chans[lvl], 2, weight_std))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


class Decoder(nn.Module):
    """U-Net decoder: transposed-conv upsampling, concatenation with the skip
    of the same level, :class:`ConvBlock`; a 1x1x1 head gives region logits."""

    def __init__(self, width: int = 8, depth: int = 4, out_channels: int = N_REGIONS, weight_std: bool = False):
        super().__init__()
        chans = stage_channels(width, depth)
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for lvl in range(depth - 1, 0, -1):
            self.ups.append(nn.ConvTranspose3d(chans[lvl], chans[lvl - 1], 2, stride=2, bias=False))
            self.blocks.append(ConvBlock(2 * chans[lvl - 1], chans[lvl - 1], 1, weight_std))
        self.head = nn.Conv3d(chans[0], out_channels, 1)

    def forward(self, bottleneck: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """``skips``: encoder features of levels ``0..depth-2`` (finest first)."""
        x = bottleneck
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips)):
            x = up(x)
            if x.shape[2:] != skip.shape[2:]:  # odd sizes: pad/crop to the skip's grid
                x = _match_size(x, skip.shape[2:])
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


def _match_size(x: torch.Tensor, size) -> torch.Tensor:
    pads = []
    for have, want in zip(reversed(x.shape[2:]), reversed(tuple(size))):
        pads += [0, want - have]
    return F.pad(x, pads)


class UNet3D(nn.Module):
    """Baseline: plain 3D U-Net over the four modality channels stacked.

    ``forward(x, mask)``: ``x`` is ``(B, 4, D, H, W)``, ``mask`` a ``(B, 4)``
    bool tensor (True = available) or None (all available). Channels of missing
    modalities are replaced by zeros, so their content never reaches the
    network. Returns ``{"logits": (B, 3, D, H, W)}`` (ET, TC, WT).

    Args:
        width: channels of the first level (doubling per level, capped at 320).
        depth: resolution levels (``depth - 1`` stride-2 downsamplings).
        in_channels, out_channels: modality channels in, region logits out.
        weight_std: weight-standardised 3x3x3 convolutions (``WSConv3d``).
    """

    arch = "unet3d"

    def __init__(
        self,
        width: int = 8,
        depth: int = 4,
        in_channels: int = N_MODALITIES,
        out_channels: int = N_REGIONS,
        weight_std: bool = False,
    ):
        super().__init__()
        self.config = {
            "arch": self.arch,
            "width": width,
            "depth": depth,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "weight_std": weight_std,
        }
        self.encoder = Encoder(in_channels, width, depth, weight_std)
        self.decoder = Decoder(width, depth, out_channels, weight_std)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        if mask is not None:
            mask = _check_mask(mask, x)
            x = x * mask[:, :, None, None, None].to(x.dtype)
        feats = self.encoder(x)
        return {"logits": self.decoder(feats[-1], feats[:-1])}


def _check_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    mask = torch.as_tensor(mask, device=x.device).bool()
    if mask.dim() == 1:
        mask = mask[None].expand(x.shape[0], -1)
    if mask.shape != (x.shape[0], x.shape[1]):
        raise ValueError(f"mask must have shape (B, {x.shape[1]}), got {tuple(mask.shape)}")
    if not bool(mask.any(dim=1).all()):
        raise ValueError("every sample needs at least one available modality")
    return mask
