"""ShaSpec (Wang et al., CVPR 2023) for brain-tumour segmentation with any
subset of the four BraTS modalities.

What follows the paper:

* one *shared* encoder (same weights for every modality) applied to each
  available modality ``i`` -> shared features ``r_i`` at every level;
* one *specific* encoder per modality -> ``s_i`` at the bottleneck, computed
  for available modalities only (a missing modality has no specific feature);
* a missing modality ``n`` gets ``r_n = mean over available i of r_i``;
* residual fusion at the bottleneck: ``f_i = r_i + g([r_i, s_i])`` with ``g``
  a convolution over the concatenation (one ``g`` for all modalities);
  a missing modality contributes ``f_n = r_n``;
* the fused features of all four modalities are concatenated and decoded by a
  U-Net decoder whose skip connections come from the shared encoder;
* a domain-classification head (linear, on globally pooled ``s_i``) for the
  DCO loss and the shared bottleneck features for the DAO (L1) loss, both on
  available modalities only (see :mod:`medmodels.seg.losses`);
* three sigmoid outputs ET, TC, WT.

Departures (also in docs/segmentation.md):

* encoders are small plain conv U-Net encoders (``width``/``depth``
  arguments; default 8 channels, 4 levels) instead of 3D ResNet-50 encoders
  (~188M parameters) so a whole case runs in seconds on a laptop CPU;
* by default (``skip_fusion="mean"``) the skip connection of each level is
  the *mean* of the available modalities' shared features (equal to the
  mean-filled slot of a missing modality), not the official code's
  concatenation of the four slots reduced by a 1x1x1 convolution
  (``skip_fusion="concat"``, which lets the decoder tell which modality a
  fine-scale feature came from, e.g. FLAIR's edema edge; a mean cannot). The
  bundled weights use the mean; a concatenating network grows from them
  exactly (``load_grown``: its reducers start as the mean);
* the concatenated fused features are reduced to the bottleneck width by a
  1x1x1 convolution before decoding, so the decoder is identical to the
  baseline's :class:`~medmodels.nets.unet3d.Decoder`.
"""

from __future__ import annotations

import torch
from torch import nn

from medmodels.nets.unet3d import N_MODALITIES, N_REGIONS, ConvNormAct, Decoder, Encoder, _check_mask, stage_channels

#: How the decoder's skip connections combine the modalities' shared features.
SKIP_FUSIONS = ("mean", "concat")


def _mean_reducer(modalities: int, channels: int) -> nn.Conv3d:
    """1x1x1 convolution ``(B, M*C, ...) -> (B, C, ...)`` that starts as the mean over the M slots."""
    conv = nn.Conv3d(modalities * channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for m in range(modalities):
            conv.weight[:, m * channels : (m + 1) * channels, 0, 0, 0] = torch.eye(channels) / modalities
    return conv


class ShaSpec(nn.Module):
    """``forward(x, mask)`` with ``x`` ``(B, 4, D, H, W)`` and ``mask`` a
    ``(B, 4)`` bool tensor (True = available; None = all).

    Returns a dict: ``logits`` ``(B, 3, D, H, W)``; ``shared`` ``(B, 4, C, d, h, w)``
    bottleneck shared features (missing slots mean-filled); ``domain_logits``
    ``(B, 4, 4)`` (rows of missing modalities are zeros); ``mask`` ``(B, 4)``.
    The input channel of a missing modality is never read.
    """

    arch = "shaspec"

    def __init__(
        self,
        width: int = 8,
        depth: int = 4,
        n_modalities: int = N_MODALITIES,
        out_channels: int = N_REGIONS,
        specific_width: int | None = None,
        weight_std: bool = False,
        skip_fusion: str = "mean",
    ):
        super().__init__()
        if skip_fusion not in SKIP_FUSIONS:
            raise ValueError(f"skip_fusion must be one of {SKIP_FUSIONS}, got {skip_fusion!r}")
        specific_width = specific_width or width
        self.config = {
            "arch": self.arch,
            "width": width,
            "depth": depth,
            "n_modalities": n_modalities,
            "out_channels": out_channels,
            "specific_width": specific_width,
            "weight_std": weight_std,
            "skip_fusion": skip_fusion,
        }
        self.n_modalities = n_modalities
        chans = stage_channels(width, depth)
        spec_c = stage_channels(specific_width, depth)[-1]
        cb = chans[-1]
        self.shared_encoder = Encoder(1, width, depth, weight_std)
        self.specific_encoders = nn.ModuleList(
            Encoder(1, specific_width, depth, weight_std) for _ in range(n_modalities)
        )
        self.fusion = nn.Sequential(ConvNormAct(cb + spec_c, cb, 1, weight_std), nn.Conv3d(cb, cb, 1))
        self.reduce = ConvNormAct(n_modalities * cb, cb, 1, weight_std)
        self.domain_head = nn.Linear(spec_c, n_modalities)
        self.decoder = Decoder(width, depth, out_channels, weight_std)
        # concat: per level, the four slots side by side -> that level's width (started as their mean)
        self.skip_reducers = nn.ModuleList(
            _mean_reducer(n_modalities, c) for c in (chans[:-1] if skip_fusion == "concat" else ())
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        B, M = x.shape[:2]
        if M != self.n_modalities:
            raise ValueError(f"expected {self.n_modalities} modality channels, got {M}")
        if mask is None:
            mask = torch.ones(B, M, dtype=torch.bool, device=x.device)
        mask = _check_mask(mask, x)
        b_idx, m_idx = torch.nonzero(mask, as_tuple=True)  # available (sample, modality) pairs

        # shared encoder on every available modality, batched
        shared_in = x[b_idx, m_idx][:, None]
        shared_feats = self.shared_encoder(shared_in)
        wsum = mask.sum(dim=1).to(x.dtype)  # (B,)

        def to_slots(f):
            """(N_avail, C, ...) -> (B, M, C, ...) with missing slots = mean of available."""
            slots = f.new_zeros((B, M) + f.shape[1:])
            slots[b_idx, m_idx] = f
            view = (B, M) + (1,) * (f.dim() - 1)
            w = mask.to(f.dtype).view(view)
            mean = (slots * w).sum(dim=1) / wsum.view((B,) + (1,) * (f.dim() - 1))
            return torch.where(w.bool(), slots, mean[:, None].expand_as(slots)), mean

        if self.skip_reducers:
            skips = [red(to_slots(f)[0].flatten(1, 2)) for red, f in zip(self.skip_reducers, shared_feats[:-1])]
        else:
            skips = [to_slots(f)[1] for f in shared_feats[:-1]]
        shared_slots, _ = to_slots(shared_feats[-1])  # (B, M, C, d, h, w)

        # specific encoders, only on the samples where their modality is available
        fused = shared_slots.clone()
        domain_logits = x.new_zeros(B, M, M)
        for i, enc in enumerate(self.specific_encoders):
            rows = torch.nonzero(mask[:, i], as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            s_i = enc(x[rows, i : i + 1])[-1]
            r_i = shared_slots[rows, i]
            # Under autocast the convolutions return bfloat16/float16 while the slots were
            # allocated in the input's dtype: index_put needs one dtype, so cast to the slot's.
            fused[rows, i] = (r_i + self.fusion(torch.cat([r_i, s_i], dim=1))).to(fused.dtype)
            domain_logits[rows, i] = self.domain_head(s_i.mean(dim=(2, 3, 4))).to(domain_logits.dtype)

        bottleneck = self.reduce(fused.flatten(1, 2))
        logits = self.decoder(bottleneck, skips)
        return {"logits": logits, "shared": shared_slots, "domain_logits": domain_logits, "mask": mask}

    def load_grown(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the weights of a mean-skip ShaSpec into this concatenating one.

        Every weight is the smaller network's; the skip reducers (absent there) keep
        their start as the mean over the slots, so this network computes exactly what
        the other did, and training goes on from it.

        Raises:
            RuntimeError: weights other than the reducers are missing or unexpected.
        """
        result = self.load_state_dict(state_dict, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("skip_reducers.")]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"cannot grow: weights missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
