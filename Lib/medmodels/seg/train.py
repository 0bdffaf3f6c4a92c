"""Segmentation training: ShaSpec (or the baseline U-Net) on a BraTS-layout folder.

One process: ``medmodels train-seg DATA --split SPLIT --out DIR``; several
GPUs (or CPU processes, gloo): ``torchrun --nproc_per_node=N -m medmodels
train-seg ...``. Each process draws its own patches (seed + rank); DDP
averages the gradients, so one iteration uses ``N * batch`` patches.

This file holds the family's pieces; the loop itself (init from weights,
resume, schedule, AMP, DDP, time budget, checkpoints) is ``medmodels.training``.
Per iteration: a batch of patches (tumour oversampled, each region in turn),
each with a random modality subset (after a full-modality warm-up: k ~ U{1..4}
modalities kept) or the fixed ``--subset`` (a dedicated model), nnU-Net-style
augmentation (``medmodels.seg.sampling.PatchRecipe``); loss = Dice + BCE +
``dao_weight`` * DAO + ``dco_weight`` * DCO. Validation: Dice of ET, TC, WT
on whole validation volumes (all four modalities, at the working spacing).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from medmodels import training
from medmodels.datasets import discover_cases, read_split
from medmodels.errors import InputError
from medmodels.metrics import dice
from medmodels.modalities import MODALITY_KEYS, AvailabilityMask
from medmodels.nets.segmentation import build_segmentation_net
from medmodels.progress import progress
from medmodels.seg.config import TrainConfig
from medmodels.seg.data import prepare, read_case
from medmodels.seg.inference import BASELINE_NAME, BUNDLED_NAME, predict_probabilities
from medmodels.seg.losses import seg_losses
from medmodels.seg.sampling import PatchRecipe, TrainCase, make_batch
from medmodels.training import Task


def parse_subset(text: str | None) -> tuple[bool, ...] | None:
    """``"flair,t1c"`` or ``"1010"`` -> a fixed mask; None/"random" -> None."""
    if text is None or text == "random":
        return None
    if set(text) <= {"0", "1"} and len(text) == 4:
        return AvailabilityMask.from_bits(text).available
    return AvailabilityMask.from_keys([t.strip() for t in text.split(",") if t.strip()]).available


def patch_recipe(cfg: TrainConfig) -> PatchRecipe:
    """The sampling options of ``cfg``; InputError naming each bad one."""
    recipe = PatchRecipe(
        fg_prob=cfg.fg_prob,
        fg_regions=cfg.fg_regions,
        modality_drop=cfg.modality_drop,
        full_modality_fraction=cfg.full_modality_fraction,
        augment=cfg.augment,
        bias_field=cfg.bias_field,
        tumour_mix=cfg.tumour_mix,
        fixed_mask=parse_subset(cfg.subset),
    )
    if recipe.problems():
        raise InputError("Training options: " + "; ".join(recipe.problems()) + ".")
    return recipe


def model_config(cfg: TrainConfig) -> dict:
    """What a checkpoint needs to rebuild and run the model: a nested config
    (``medmodels.nets.config``, which says what goes under ``net`` and what beside it)."""
    if cfg.skip_fusion != "mean" and cfg.arch != "shaspec":
        raise InputError(f"--skip-fusion {cfg.skip_fusion} is a ShaSpec option: leave it out for --arch {cfg.arch}.")
    subset = parse_subset(cfg.subset)
    return {
        "kind": cfg.arch,
        "net": {
            "width": cfg.width,
            "depth": cfg.depth,
            # only when on, so that the configs of the first weights (without the key) still match
            **({"weight_std": True} if cfg.weight_std else {}),
            **({"skip_fusion": cfg.skip_fusion} if cfg.skip_fusion != "mean" else {}),
        },
        "spacing": [float(s) for s in cfg.spacing],
        "patch_size": [int(p) for p in cfg.patch_size],
        "modalities": list(MODALITY_KEYS),
        "regions": ["ET", "TC", "WT"],
        "subset": "random" if subset is None else "".join("1" if b else "0" for b in subset),
        "preprocessing": "union-of-nonzero brain mask, crop (margin 2), clip 0.5-99.5 percentile + z-score "
        "inside the brain, trilinear resampling of the crop to `spacing`",
    }


#: Config entries an ``--init`` checkpoint may differ in. The networks are fully convolutional, so the
#: training grid and patch are not the weights' own: a finer grid can start from coarser weights. A
#: calibrated threshold (``evaluate-seg --calibrate``) belongs to the weights it was chosen for, not to
#: a run that changes them, so the new run's checkpoints have none until they are calibrated again.
INIT_FREE_KEYS = ("spacing", "patch_size", "threshold")


def grows_from(ours: dict, theirs: dict) -> bool:
    """Whether a model of config ``ours`` can start from ``--init`` weights of config ``theirs``
    (``ShaSpec.load_grown``): the same but for concatenating skips where those had the mean.

    Args:
        ours, theirs: nested configs (``model_config``; the checkpoint's as ``medmodels.weights`` reads it).
    """
    a, b = dict(ours), dict(theirs)
    net_a, net_b = dict(a.pop("net", {})), dict(b.pop("net", {}))
    return (
        net_a.pop("skip_fusion", "mean") == "concat"
        and net_b.pop("skip_fusion", "mean") == "mean"
        and ((a, net_a) == (b, net_b))
    )


def load_cases(found: dict, names, cfg: TrainConfig, with_patch: bool = True, quiet: bool = False):
    """Read and preprocess the named cases once (they stay in memory)."""
    missing = [n for n in names if n not in found]
    if missing:
        raise InputError(
            f"The split names case(s) not found in '{cfg.data}': {', '.join(missing)}. "
            "Fix the split file or the data folder."
        )
    cases = []
    for name in progress(names, desc="Reading cases", disable=quiet):
        images, labels = read_case(found[name])
        prep = prepare(images, None, cfg.spacing, labels)
        if with_patch:
            cases.append(TrainCase.build(name, prep.image, prep.regions, cfg.patch_size))
        else:
            cases.append((name, prep.image, prep.regions))
    return cases


#: Subsets scored at every validation (bits in FLAIR, T1, T1c, T2 order): all
#: four; FLAIR+T1+T2, the commonest gap (T1c missing); FLAIR alone. Learning
#: curves for these three decide the training settings (docs/segmentation.md).
VAL_SUBSETS = ("1111", "1101", "1000")


def validate(model, val_cases, cfg: TrainConfig, device, subsets=VAL_SUBSETS) -> dict:
    """Mean Dice of ET, TC, WT over whole validation volumes at the working
    spacing, for each subset in ``subsets``: ``{"1111": {"ET": .., "TC": .., "WT": ..}, ...}``."""
    out = {}
    for bits in subsets:
        mask = AvailabilityMask.from_bits(bits).available
        scores = []
        for _name, image, regions in val_cases:
            probs = predict_probabilities(model, image, mask, cfg.patch_size, 0.5, device)
            pred, truth = (probs >= 0.5).numpy(), regions.numpy()
            scores.append([dice(p, t) for p, t in zip(pred, truth)])
        s = np.mean(scores, axis=0)
        out[bits] = {"ET": float(s[0]), "TC": float(s[1]), "WT": float(s[2])}
    return out


def make_task(cfg: TrainConfig, cases, val_cases, device: torch.device) -> Task:
    """The pieces ``medmodels.training`` needs: network, sampler, loss, validation.

    Args:
        cases: ``TrainCase`` list (``load_cases``).
        val_cases: ``(name, image, regions)`` list (``load_cases(..., with_patch=False)``); empty = no validation.
        device: where validation runs.
    """
    recipe = patch_recipe(cfg)
    config = model_config(cfg)
    torch.manual_seed(cfg.seed)
    model = build_segmentation_net(config)

    def sample(rng: np.random.Generator, progress: float):
        return make_batch(cases, cfg.batch_size, cfg.patch_size, rng, recipe, progress)

    def loss(net, batch, generator):
        x, y, m = batch
        return seg_losses(net(x, m), y, cfg.dao_weight, cfg.dco_weight)

    def validation(net) -> dict:
        return {"val_dice": validate(net, val_cases, cfg, device)}

    return Task(
        name=cfg.arch,
        model=model,
        config=config,
        sample=sample,
        loss=loss,
        validate=validation if val_cases else None,
        bundled=BUNDLED_NAME if cfg.arch == "shaspec" else BASELINE_NAME,
        unit="patches",
        data_keys=INIT_FREE_KEYS,
        find_unused_parameters=cfg.arch == "shaspec",
        grows_from=grows_from,
        # --keep-best: the mean validation Dice over the validated subsets and ET, TC, WT
        score=lambda record: float(
            np.mean([d for by_region in record["val_dice"].values() for d in by_region.values()])
        ),
    )


def train(cfg: TrainConfig) -> dict:
    """Read the cases named by the split (all cases without one) and train;
    returns the summary written to ``history.json`` (empty on other DDP processes)."""
    started = time.time()
    info = training.setup(cfg)
    found = discover_cases(cfg.data, require_all=True, require_label=True)
    if cfg.split:
        split = read_split(cfg.split, required=("training", "validation") if cfg.validate else ("training",))
        train_names, val_names = split["training"], split["validation"]
    else:
        train_names, val_names = list(found), []
    if cfg.max_cases:
        train_names, val_names = train_names[: cfg.max_cases], val_names[: cfg.max_cases]
    cases = load_cases(found, train_names, cfg, quiet=not info.is_main)
    # validation runs on the main process only; the others need not read its cases
    val_cases = (
        load_cases(found, val_names, cfg, with_patch=False) if (cfg.validate and val_names and info.is_main) else []
    )
    task = make_task(cfg, cases, val_cases, info.device)
    task.facts = {
        "training_cases": list(train_names),
        "validation_cases": list(val_names),
        "wall_s_loading": round(time.time() - started, 1),
    }
    return training.run(cfg, task, info, started)
