"""The segmentation networks a checkpoint can hold, and the one builder for them.

The mirror of ``medmodels.nets.synthesis``: a checkpoint's config names its
network (``kind``: ShaSpec, or the baseline U-Net) and gives its arguments
(``net``; the schema is ``medmodels.nets.config``'s), and this file builds it.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from medmodels.errors import CheckpointError
from medmodels.nets.ensemble import ProbabilityMean
from medmodels.nets.shaspec import ShaSpec
from medmodels.nets.unet3d import UNet3D


def build_segmentation_net(config: Mapping) -> nn.Module:
    """The network a segmentation checkpoint's config describes: ``kind`` shaspec or unet3d,
    ``net``: ``width``, ``depth``, and ``specific_width``/``weight_std``/``skip_fusion`` where given;
    or ``kind`` ensemble, ``net``: ``{"members": [{"kind", "net"}, ...]}``, each member built by this
    function (``medmodels.nets.ensemble.ProbabilityMean``; ``medmodels.seg.ensemble`` writes them).

    Args:
        config: a nested config (``medmodels.nets.config``; a stored one is read through
            ``config_from_record``).
    """
    kind, net = config.get("kind"), config.get("net") or {}
    ws = bool(net.get("weight_std", False))  # absent in the first weights' configs
    if kind == "shaspec":
        return ShaSpec(
            width=net["width"],
            depth=net["depth"],
            specific_width=net.get("specific_width"),
            weight_std=ws,
            skip_fusion=net.get("skip_fusion", "mean"),  # absent in the bundled weights' config: the mean
        )
    if kind == "unet3d":
        return UNet3D(width=net["width"], depth=net["depth"], weight_std=ws)
    if kind == "ensemble":
        members = net.get("members")
        if not isinstance(members, list) or len(members) < 2 or any(m.get("kind") == "ensemble" for m in members):
            raise CheckpointError("An ensemble checkpoint's config needs net.members: two or more single networks.")
        return ProbabilityMean([build_segmentation_net(m) for m in members])
    raise CheckpointError(
        f"Checkpoint config names an unknown architecture '{kind}' (expected shaspec, unet3d or ensemble)."
    )
