"""Writing an ensemble of segmentation checkpoints as one checkpoint (``medmodels export A B ... --name NAME``).

The ensemble's network is ``medmodels.nets.ensemble.ProbabilityMean`` (the mean of the members'
probabilities). Its checkpoint holds every member's weights (under ``members.<i>.``) and config, so
it is one file with one SHA-256, loaded, calibrated (``evaluate-seg --calibrate --write``) and run
like any segmentation checkpoint. Its probability threshold is its own: a member's threshold was
chosen for that member's probabilities, not for their mean, so none is carried over.

Its record keeps where each member came from (file, SHA-256, threshold) and, under ``training``,
every member's stages (``training.lineage_of``) and the union of their training cases, so
``held_out.trained_on_cases`` knows every case any member trained on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from medmodels.atomic import check_output_folder, check_plain_name
from medmodels.checkpoint_ref import PATH, CheckpointRef
from medmodels.errors import InputError
from medmodels.seg.inference import BASELINE_NAME, BUNDLED_NAME, segmenter_file
from medmodels.weights import BUNDLED_DIR, open_checkpoint, save_checkpoint

#: Config entries the members must share: the ensemble runs them on one prepared input and one window.
SHARED = ("spacing", "patch_size", "modalities", "regions", "subset", "preprocessing")


def ensemble_config(configs: Sequence[dict], names: Sequence[str]) -> dict:
    """The ensemble's config from its members' (nested) configs.

    Raises:
        InputError: fewer than two members, a member that is itself an ensemble or a synthesis model, or
            members that differ in an entry of ``SHARED`` (naming the entry, the members and the fix).
    """
    if len(configs) < 2:
        raise InputError("An ensemble needs two or more checkpoints: give export two or more models.")
    for name, config in zip(names, configs):
        if config.get("kind") == "ensemble":
            raise InputError(f"'{name}' is already an ensemble: give its members instead.")
        if "diffusion" in config:  # a synthesis model: two of them make a blend (medmodels.syn.blend)
            raise InputError(
                f"'{name}' is a synthesis model, and several synthesis models are written as a blend: give "
                "export --blend W (M2DN's share, e.g. 0.75), one M2DN, then one regression."
            )
    first = configs[0]
    for key in SHARED:
        values = [c.get(key) for c in configs]
        if any(v != values[0] for v in values):
            shown = "; ".join(f"{n}: {v}" for n, v in zip(names, values))
            raise InputError(
                f"The checkpoints differ in '{key}' ({shown}): an ensemble runs its members on one prepared "
                "input, so give checkpoints trained with the same spacing, patch, modalities and regions."
            )
    members = [{"kind": c["kind"], "net": c.get("net") or {}} for c in configs]
    return {"kind": "ensemble", "net": {"members": members}, **{k: first[k] for k in SHARED if k in first}}


def write_ensemble(
    checkpoints: Sequence[str | os.PathLike | None],
    name: str,
    dest_dir: str | os.PathLike | None = None,
    half: bool = True,
) -> dict:
    """Write ``<dest_dir>/<name>.pt`` and its record: the ensemble of ``checkpoints``, uncalibrated.

    Args:
        checkpoints: references as the segmentation loaders take them ("bundled", "baseline" or a
            ``.pt`` path with its record; each SHA-256 is checked), or a training run's folder (its
            ``model.pt``).
        name: the file name without ``.pt`` (a plain name).
        dest_dir: the folder (created if needed; an existing ``<name>.pt``/``.json`` is not replaced;
            default: the package's bundled weights folder, as ``export``).
        half: float32 weights stored as float16, as ``export`` stores them (members stored so stay so).

    Returns:
        The record written (``weights.save_checkpoint``).
    """
    from medmodels.training import MODEL, combined_training, half_storage  # imports torch

    check_plain_name(name, "ensemble name (--name)")
    dest = Path(dest_dir) if dest_dir else BUNDLED_DIR
    check_output_folder(dest, [f"{name}.pt", f"{name}.json"], "give another --name or --out")
    # a run folder stands for its model.pt; the words "bundled"/"baseline" are never folders
    refs = [
        Path(c) / MODEL if c is not None and CheckpointRef(c).kind == PATH and Path(c).is_dir() else c
        for c in checkpoints
    ]
    opened = [open_checkpoint(segmenter_file(c), BUNDLED_NAME, BASELINE_NAME) for c in refs]
    names = [o.path.name for o in opened]
    config = ensemble_config([o.payload["config"] for o in opened], names)
    state = {
        f"members.{i}.{k}": half_storage(v) if half else v
        for i, o in enumerate(opened)
        for k, v in o.payload["state_dict"].items()
    }
    record = {
        "members": [
            {
                "file": n,
                "sha256": o.record["sha256"],
                "kind": o.payload["config"]["kind"],
                "threshold": o.payload["config"].get("threshold"),
            }
            for n, o in zip(names, opened)
        ],
        "training": {
            "ensemble_of": [o.record["sha256"] for o in opened],
            **combined_training([o.record for o in opened]),
        },
    }
    return save_checkpoint(dest / f"{name}.pt", {"state_dict": state, "config": config}, record)
