"""The synthesis variants by name: what a checkpoint's ``config["kind"]`` means.

``m2dn`` (the paper's masked diffusion) and ``regression`` (the same network,
one pass) are in ``medmodels.syn.diffusion``; ``pmrf`` (a flow refining the
regression's posterior mean) in ``medmodels.syn.flow``. All have one
interface, ``loss(net, x0, missing, generator, context, weight)`` and
``sample(net, x_avail, missing, steps, generator, context)``, so training and
synthesis never branch on the kind.
"""

from __future__ import annotations

from collections.abc import Mapping

from medmodels.errors import InputError
from medmodels.syn.diffusion import Diffusion, DiffusionConfig, Regression
from medmodels.syn.flow import FlowConfig, PosteriorMeanFlow

#: ``config["kind"]`` -> its variant class.
VARIANTS: dict[str, type] = {c.kind: c for c in (Diffusion, Regression, PosteriorMeanFlow)}


def variant(config: Mapping) -> Diffusion | Regression | PosteriorMeanFlow:
    """The variant of a synthesis checkpoint's config (``kind``, ``diffusion`` and, for a flow, ``flow``)."""
    kind = config.get("kind", Diffusion.kind)  # checkpoints older than the kind entry are M2DN
    if kind not in VARIANTS:
        raise InputError(f"Unknown synthesis model '{kind}': use {', '.join(VARIANTS)}.")
    cfg = DiffusionConfig(**config["diffusion"])
    if kind == PosteriorMeanFlow.kind:
        return PosteriorMeanFlow(cfg, FlowConfig(**config.get("flow", {})))
    return VARIANTS[kind](cfg)
