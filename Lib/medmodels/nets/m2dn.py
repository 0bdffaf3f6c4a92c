"""M2DN: the modality-masked diffusion network of Meng et al. (IEEE TMI 2024), compact 2D version.

One network for every missing pattern. Each modality has its own small encoder
(3x3 conv stride 2, GroupNorm, ReLU); the encoded modalities are concatenated
and fused by a U-shaped network of residual blocks with squeeze-and-excitation
channel attention and bilinear down/up-sampling; a sinusoidal timestep
embedding enters every block; the binary modality mask (missing = 1) is
unpooled to the bottleneck's size and concatenated there. The output is all
modalities as images (x0 prediction, joint synthesis).

The deterministic regression baseline is the same class called with a fixed
timestep and zero-filled missing inputs (see ``medmodels.syn.diffusion``), so a
comparison between the two isolates the diffusion process.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medmodels.nets.blocks2d import ModalityEncoder, ResBlockSE, downsample, timestep_embedding, upsample


class M2DNet(nn.Module):
    """Multi-input, multi-output 2D synthesis network.

    Args:
        modalities: number of modalities M (4 for BraTS: FLAIR, T1, T1c, T2).
        encoder_channels: feature channels of each per-modality encoder.
        channels: widths of the fusion U-Net levels, shallow to deep. Level 0
            works at half the input resolution (after the stride-2 encoders),
            each further level halves it again; the last is the bottleneck.
        emb_dim: width of the timestep embedding.

    Forward:
        x: ``(B, M, H, W)`` current diffusion state (available modalities clean,
            missing ones noisy), in the normalised intensity space.
        t: ``(B,)`` integer timesteps.
        missing: ``(B, M)`` float, 1 = missing (the paper's condition vector v).

    Returns:
        ``(B, M, H, W)``: prediction of the clean images of all modalities.
    """

    def __init__(
        self,
        modalities: int = 4,
        encoder_channels: int = 8,
        channels: Sequence[int] = (32, 64, 96),
        emb_dim: int = 64,
    ) -> None:
        super().__init__()
        self.modalities = modalities
        self.emb_dim = emb_dim
        channels = list(channels)
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.encoders = nn.ModuleList(ModalityEncoder(encoder_channels) for _ in range(modalities))
        self.down = nn.ModuleList()
        prev = modalities * encoder_channels
        for ch in channels:
            self.down.append(ResBlockSE(prev, ch, emb_dim))
            prev = ch
        # The mask (M channels) joins the deepest features, as in the paper.
        self.bottleneck = ResBlockSE(channels[-1] + modalities, channels[-1], emb_dim)
        self.up = nn.ModuleList(
            ResBlockSE(channels[i + 1] + channels[i], channels[i], emb_dim) for i in reversed(range(len(channels) - 1))
        )
        # Head at full resolution: the decoded features plus the input state,
        # so the clean available modalities' fine detail reaches the output.
        self.head = nn.Sequential(
            nn.Conv2d(channels[0] + modalities, channels[0], 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels[0], modalities, 1),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.modalities:
            raise ValueError(f"M2DNet expects (B, {self.modalities}, H, W), got {tuple(x.shape)}")
        emb = self.time_mlp(timestep_embedding(t, self.emb_dim))
        h = torch.cat([enc(x[:, i : i + 1]) for i, enc in enumerate(self.encoders)], dim=1)
        skips = []
        for level, block in enumerate(self.down):
            if level > 0:
                h = downsample(h)
            h = block(h, emb)
            skips.append(h)
        v = missing.to(h.dtype)[:, :, None, None].expand(-1, -1, *h.shape[2:])  # unpool M x 1 x 1 -> M x h x w
        h = self.bottleneck(torch.cat([h, v], dim=1), emb)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = block(torch.cat([upsample(h, skip.shape[2:]), skip], dim=1), emb)
        h = upsample(h, x.shape[2:])
        return self.head(torch.cat([h, x], dim=1))


def build_m2dn(config: dict) -> M2DNet:
    """The network from a checkpoint's ``config["net"]`` dict (keys = constructor arguments)."""
    return M2DNet(**config)
