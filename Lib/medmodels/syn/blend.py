"""M2DN's samples averaged with the regression's prediction: one checkpoint, one synthesizer.

The mean of M2DN's samples and the regression's output are two estimates of the same posterior mean,
made by two networks whose errors are partly independent, so their weighted mean

    output = w * mean(M2DN samples) + (1 - w) * regression        (z-scores, missing channels)

scores higher at the input grid than either alone, where more samples of M2DN alone do not
(docs/synthesis.md, "M2DN averaged with the regression"). The regression draws less enhancement than
M2DN, so ``w`` trades enhancement for SSIM. The regression is deterministic: the blend's per-voxel
spread over samples is ``w`` times M2DN's, and it runs once per case, not once per sample.

``medmodels export M2DN REGRESSION --blend W --name NAME`` writes a blend (``write_blend``, here) as one
checkpoint (``kind: "blend"``; the network ``nets.synthesis.SamplerAndMean``), which every command
and the Slicer module load like any synthesis checkpoint: ``syn.inference.load_synthesizer`` gives a
``syn.inference.BlendedSynthesizer``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from medmodels.atomic import check_output_folder, check_plain_name
from medmodels.checkpoint_ref import PATH, CheckpointRef
from medmodels.errors import InputError
from medmodels.nets.synthesis import BLEND_KIND
from medmodels.syn.inference import BASELINE_NAME, BUNDLED_NAME
from medmodels.weights import BUNDLED_DIR, open_checkpoint, save_checkpoint

#: M2DN's share by default (``write_blend``; ``export --blend`` always names it). On the split's 4 validation cases (T1c missing,
#: docs/synthesis.md) 0.5 scored the highest brain SSIM and 0.75 kept more of the enhancement for 0.001 less.
DEFAULT_WEIGHT = 0.75
#: Config entries the two networks must share: they run on one working case, one map and one slice batch.
SHARED = ("net", "spacing", "modalities", "condition", "diffusion", "preprocessing")


def check_weight(weight) -> float:
    """``weight`` as a float in [0, 1], or an ``InputError`` that names the fix."""
    try:
        value = float(weight)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise InputError(f"The blend weight {weight!r} is not between 0 and 1: give M2DN's share, e.g. 0.75.")
    return value


def blend_config(sampler: Mapping, mean: Mapping, weight: float, names: tuple[str, str]) -> dict:
    """The blend's config from its parts' configs (``sampler``: M2DN, ``mean``: a regression).

    Raises:
        InputError: a part of the wrong kind, or parts that differ in an entry of ``SHARED`` (naming it and the fix).
    """
    if sampler.get("kind", "m2dn") != "m2dn":  # checkpoints older than the kind entry are M2DN
        raise InputError(f"'{names[0]}' is a {sampler.get('kind')} model: the first model of a blend is M2DN.")
    if mean.get("kind") != "regression":
        raise InputError(
            f"'{names[1]}' is a {mean.get('kind', 'm2dn')} model: the second model of a blend is a regression "
            "(train-syn --model regression)."
        )
    for key in SHARED:
        if sampler.get(key) != mean.get(key):
            raise InputError(
                f"The two models differ in '{key}' ({names[0]}: {sampler.get(key)}; {names[1]}: {mean.get(key)}): "
                "a blend runs both on one working case, so give an M2DN and a regression of the same network, "
                "working spacing and region map."
            )
    blend = {"weight": check_weight(weight), "sampler_kind": "m2dn", "mean_kind": "regression"}
    # M2DN's intensity reference: the blend maps its z-scores back as the sampler does
    return {**dict(sampler), "kind": BLEND_KIND, "blend": blend}


def write_blend(
    sampler: str | os.PathLike | None,
    mean: str | os.PathLike | None,
    name: str,
    dest_dir: str | os.PathLike | None = None,
    weight: float = DEFAULT_WEIGHT,
    half: bool = True,
) -> dict:
    """Write ``<dest_dir>/<name>.pt`` and its record: the blend of an M2DN and a regression checkpoint.

    Args:
        sampler, mean: references as ``load_synthesizer`` takes them (None or "bundled" = the bundled
            M2DN, "baseline" = the bundled regression, or a ``.pt`` with its record, whose SHA-256 is
            checked), or a training run's folder (its ``model.pt``).
        name: the file name without ``.pt`` (a plain name).
        dest_dir: the folder (created if needed; an existing ``<name>.pt``/``.json`` is not replaced;
            default: the package's bundled weights folder, as ``export``).
        weight: M2DN's share ``w`` in [0, 1].
        half: float32 weights stored as float16, as ``export`` stores them.

    Returns:
        The record written (``weights.save_checkpoint``): both parts' files and SHA-256, every stage
        that made them and the union of their training cases (``held_out`` reads it).
    """
    from medmodels.training import MODEL, combined_training, half_storage  # imports torch

    check_plain_name(name, "blend name (--name)")
    weight = check_weight(weight)
    dest = Path(dest_dir) if dest_dir else BUNDLED_DIR
    check_output_folder(dest, [f"{name}.pt", f"{name}.json"], "give another --name or --out")
    refs = [
        Path(r) / MODEL if r is not None and CheckpointRef(r).kind == PATH and Path(r).is_dir() else r
        for r in (sampler, mean)
    ]
    opened = [open_checkpoint(r, BUNDLED_NAME, BASELINE_NAME) for r in refs]
    names = (opened[0].path.name, opened[1].path.name)
    config = blend_config(opened[0].payload["config"], opened[1].payload["config"], weight, names)
    config["blend"].update({"sampler_sha256": opened[0].record["sha256"], "mean_sha256": opened[1].record["sha256"]})
    state = {
        f"{part}.{k}": half_storage(v) if half else v
        for part, o in zip(("sampler", "mean"), opened, strict=True)
        for k, v in o.payload["state_dict"].items()
    }
    record = {
        "parts": [
            {"part": part, "file": n, "sha256": o.record["sha256"], "kind": o.payload["config"].get("kind", "m2dn")}
            for part, n, o in zip(("sampler", "mean"), names, opened, strict=True)
        ],
        "training": {"blend_of": [o.record["sha256"] for o in opened], **combined_training([o.record for o in opened])},
    }
    return save_checkpoint(dest / f"{name}.pt", {"state_dict": state, "config": config}, record)
