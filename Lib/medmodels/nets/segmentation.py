"""The segmentation networks a checkpoint can hold, and the one builder for them.

The mirror of ``medmodels.nets.synthesis``: a checkpoint's config names its
network (``arch``: ShaSpec, or the baseline U-Net), and this file builds it.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from medmodels.errors import CheckpointError
from medmodels.nets.shaspec import ShaSpec
from medmodels.nets.unet3d import UNet3D


def build_segmentation_net(config: Mapping) -> nn.Module:
    """The network a segmentation checkpoint's config describes (``arch`` shaspec or unet3d,
    ``width``, ``depth``, and ``specific_width``/``weight_std``/``skip_fusion`` where given)."""
    arch, ws = config.get("arch"), bool(config.get("weight_std", False))  # absent in the first weights' configs
    if arch == "shaspec":
        return ShaSpec(
            width=config["width"],
            depth=config["depth"],
            specific_width=config.get("specific_width"),
            weight_std=ws,
            skip_fusion=config.get("skip_fusion", "mean"),  # absent in the bundled weights' config: the mean
        )
    if arch == "unet3d":
        return UNet3D(width=config["width"], depth=config["depth"], weight_std=ws)
    raise CheckpointError(f"Checkpoint config names an unknown architecture '{arch}' (expected shaspec or unet3d).")
