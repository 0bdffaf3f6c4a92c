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
        context: neighbouring slices seen on each side of the slice (2.5D; 0 =
            the paper's 2D network). Each modality's encoder then reads its
            slice and its ``2 * context`` neighbours, so the volume need not
            stripe across slices; neighbours of missing modalities are zeroed
            here, whatever the caller passes.
        refine_blocks: residual blocks at the full input resolution before the
            output convolution (0 = one 3x3 convolution over the up-sampled
            features and the input state), for detail finer than the fusion
            network's half resolution. They start as identities (zero-initialised),
            so a grown network computes what the smaller one did.
        condition_channels: planes of a per-pixel condition map (0 = none; 3 for
            the tumour regions ET, TC, WT of ``medmodels.syn.conditioning``). The
            map gets its own stem (a ``ModalityEncoder``) whose features pass a
            zero-initialised 1x1 convolution and are added to the first fusion
            level's output: added, not concatenated, so the fusion blocks keep
            their shapes, and zero at the start, so a network grown from one
            without a condition computes what it did.

    Forward:
        x: ``(B, M, H, W)`` current diffusion state (available modalities clean,
            missing ones noisy), in the normalised intensity space.
        t: ``(B,)`` integer timesteps.
        missing: ``(B, M)`` float, 1 = missing (the paper's condition vector v).
        context: ``(B, M, 2 * context, H, W)`` the neighbouring slices, below
            then above, in the same space (required when ``context > 0``).
        condition: ``(B, condition_channels, H, W)`` the condition map, values in
            [0, 1]; None = all zeros (no condition known), which a network
            trained with condition dropout has learned to read.

    Returns:
        ``(B, M, H, W)``: prediction of the clean images of all modalities.
    """

    def __init__(
        self,
        modalities: int = 4,
        encoder_channels: int = 8,
        channels: Sequence[int] = (32, 64, 96),
        emb_dim: int = 64,
        context: int = 0,
        refine_blocks: int = 0,
        condition_channels: int = 0,
    ) -> None:
        super().__init__()
        self.modalities = modalities
        self.condition_channels = condition_channels
        self.emb_dim = emb_dim
        self.context = context
        channels = list(channels)
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.encoders = nn.ModuleList(ModalityEncoder(encoder_channels, 1 + 2 * context) for _ in range(modalities))
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
        self.refine = nn.ModuleList(
            ResBlockSE(channels[0], channels[0], emb_dim, zero_init=True) for _ in range(refine_blocks)
        )
        self.condition = None
        if condition_channels:
            self.condition = nn.Sequential(
                ModalityEncoder(encoder_channels, condition_channels), nn.Conv2d(encoder_channels, channels[0], 1)
            )
            nn.init.zeros_(self.condition[1].weight)
            nn.init.zeros_(self.condition[1].bias)

    def _planes(self, x: torch.Tensor, missing: torch.Tensor, context: torch.Tensor | None) -> list[torch.Tensor]:
        """Each modality's encoder input: its slice, then its neighbours (zero where the modality is missing)."""
        if self.context == 0:
            return [x[:, i : i + 1] for i in range(self.modalities)]
        expected = (x.shape[0], self.modalities, 2 * self.context, *x.shape[2:])
        if context is None or tuple(context.shape) != expected:
            got = None if context is None else tuple(context.shape)
            raise ValueError(f"M2DNet with context={self.context} expects context of shape {expected}, got {got}")
        context = context * (1 - missing.to(context.dtype))[:, :, None, None, None]
        return [torch.cat([x[:, i : i + 1], context[:, i]], dim=1) for i in range(self.modalities)]

    def _condition(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor | None:
        """The condition map checked against ``x``; zeros when the network has one and none is given."""
        if self.condition is None:
            if condition is not None:
                raise ValueError("This M2DNet has no condition input (condition_channels=0); pass condition=None")
            return None
        expected = (x.shape[0], self.condition_channels, *x.shape[2:])
        if condition is None:
            return x.new_zeros(expected)
        if tuple(condition.shape) != expected:
            raise ValueError(f"M2DNet expects condition of shape {expected}, got {tuple(condition.shape)}")
        return condition.to(x.dtype)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        missing: torch.Tensor,
        context: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.modalities:
            raise ValueError(f"M2DNet expects (B, {self.modalities}, H, W), got {tuple(x.shape)}")
        emb = self.time_mlp(timestep_embedding(t, self.emb_dim))
        planes = self._planes(x, missing, context)
        condition = self._condition(x, condition)
        h = torch.cat([enc(p) for p, enc in zip(planes, self.encoders)], dim=1)
        skips = []
        for level, block in enumerate(self.down):
            if level > 0:
                h = downsample(h)
            h = block(h, emb)
            if level == 0 and condition is not None:
                h = h + self.condition(condition)
            skips.append(h)
        v = missing.to(h.dtype)[:, :, None, None].expand(-1, -1, *h.shape[2:])  # unpool M x 1 x 1 -> M x h x w
        h = self.bottleneck(torch.cat([h, v], dim=1), emb)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = block(torch.cat([upsample(h, skip.shape[2:]), skip], dim=1), emb)
        h = upsample(h, x.shape[2:])
        conv_in, act, conv_out = self.head
        h = act(conv_in(torch.cat([h, x], dim=1)))
        for block in self.refine:
            h = block(h, emb)
        return conv_out(h)

    def load_grown(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the weights of a network with less context, fewer refinement blocks or no condition.

        The new inputs of each encoder's first convolution (the neighbouring
        slices) get zero weights, the new refinement blocks keep their
        identity start and a new condition stem its zero output, so this
        network computes exactly what the smaller one did, and training
        continues from it instead of from scratch.

        Raises:
            RuntimeError: a weight that is neither of those does not match.
        """
        grown = {}
        for name, ours in self.state_dict().items():
            theirs = state_dict.get(name)
            if theirs is None and name.startswith(("refine.", "condition.")):
                grown[name] = ours
            elif theirs is not None and name.endswith("body.0.weight") and theirs.shape[1] < ours.shape[1]:
                w = torch.zeros_like(ours)
                w[:, : theirs.shape[1]] = theirs  # the slice itself comes first, its neighbours after it
                grown[name] = w
            else:
                grown[name] = state_dict[name] if theirs is not None else None
        missing = [k for k, v in grown.items() if v is None]
        unused = sorted(set(state_dict) - set(grown))
        if missing or unused:
            raise RuntimeError(f"cannot grow: weights missing {missing[:3]}, unexpected {unused[:3]}")
        self.load_state_dict(grown)


def build_m2dn(config: dict) -> M2DNet:
    """The network from a checkpoint's ``config["net"]`` dict (keys = constructor arguments)."""
    return M2DNet(**config)
