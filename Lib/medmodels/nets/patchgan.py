"""A 2D PatchGAN discriminator (pix2pix, Isola et al., CVPR 2017): one real-or-fake score per patch.

Trained beside a synthesis network by ``train-syn --adversarial-weight`` and
never part of a synthesis checkpoint: it exists only while training. The
layers are MONAI's ``PatchDiscriminator`` (strided 4x4 convolutions, instance
norm, LeakyReLU 0.2); this file fixes the settings the project uses and gives
back the patch scores alone (MONAI's returns every layer's features too).

Tensors are ``(B, C, H, W)``, as everywhere in the 2D synthesis networks.
"""

from __future__ import annotations

import torch
from monai.networks.nets import PatchDiscriminator
from torch import nn

#: Width of the first layer (doubled at each further layer); a quarter of pix2pix's 64: 0.18 M parameters,
#: a third of the default synthesis network's, where 32 channels (0.7 M) nearly doubled a training step's
#: floating-point work (``bench-syn --training``: 16.8 -> 30.7 GFLOP per iteration of 8 slices of 96 x 96).
CHANNELS = 16
#: Layers after the first: 3 gives pix2pix's 70 x 70 pixel patches (140 mm at the 2 mm working spacing).
LAYERS = 3


class PatchCritic(nn.Module):
    """Scores each patch of an image as real (high) or synthesised (low); raw scores, no sigmoid
    (the least-squares GAN loss of ``medmodels.syn.losses`` compares them with 1 and 0).

    Instance norm, not MONAI's default batch norm: the discriminator is called on a batch of real
    and synthesised images together and once more on the synthesised ones alone, and batch
    statistics would let it tell the two apart by the batch, not by the image; instance norm has
    no running buffers either, so the second call changes nothing.

    Args:
        in_channels: channels ``C`` of the images it judges.
        channels: width of the first layer; each further layer doubles it.
        layers: layers after the first (the patch each score sees grows with them).
    """

    def __init__(self, in_channels: int, channels: int = CHANNELS, layers: int = LAYERS) -> None:
        super().__init__()
        self.net = PatchDiscriminator(
            spatial_dims=2,
            channels=channels,
            in_channels=in_channels,
            num_layers_d=layers,
            norm=("INSTANCE", {"affine": True}),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, 1, h, w)`` patch scores (``h, w`` about ``H, W`` / 8 at 3 layers)."""
        return self.net(x)[-1]
