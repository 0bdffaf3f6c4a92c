"""Synthesis training: M2DN (or the regression baseline) on 2D slices of a BraTS-layout folder.

One process: ``medmodels train-syn DATA --split SPLIT --out DIR``; several GPUs
(or CPU processes, gloo): ``torchrun --nproc_per_node=N -m medmodels train-syn ...``.
Each process draws its own slices (seed + rank); DDP averages the gradients.

This file holds the family's pieces; the loop itself (init from weights,
resume, schedule, AMP, DDP, time budget, checkpoints) is ``medmodels.training``.
Per iteration: a batch of axial brain slices at the working spacing, each with
a mask drawn uniformly from the 14 non-trivial patterns, and the loss of the
variant (``medmodels.syn.diffusion``): M2DN noises the missing modalities at a
uniform timestep and takes the MSE of the x0 prediction over all modalities;
the regression baseline (``--model regression``) is the same network and loss
on zero-filled inputs at a fixed timestep. With ``context`` the network also
sees each slice's neighbours (2.5D); with ``tumour_weight`` w the loss counts
tumour pixels (the case's labels) 1 + w times; with ``adversarial_weight`` a
PatchGAN discriminator (``Task.critic``, trained in the same step, never part
of the model) judges the missing channels of the network's x0 estimate and
the loss adds its adversarial terms (``syn.losses.adversarial_losses``); with
``segmenter_weight`` each batch also carries a block of slices around the
enhancing tumour, synthesised with T1c missing and read by a frozen segmenter
(``medmodels.segmenter_in_the_loop``), whose ET/TC loss is added.
Validation: the same loss on a fixed set of slices (draws, masks, timesteps and noise fixed) of the
validation cases, so it is comparable across iterations, and the SSIM and
PSNR of the missing modalities synthesised from those slices with the default
sampler (what a user gets), so the learning curves are in the figures the
issue's floors use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from medmodels import training
from medmodels.datasets import discover_cases, read_split
from medmodels.distributed import DistInfo
from medmodels.errors import InputError
from medmodels.metrics import psnr, ssim
from medmodels.modalities import MODALITY_KEYS
from medmodels.nets.patchgan import PatchCritic
from medmodels.nets.synthesis import MEAN_AND_FLOW_KINDS, build_synthesis_net
from medmodels.progress import progress
from medmodels.syn import diffusion as D
from medmodels.syn.conditioning import REGION_CONDITION, REGIONS, bind, training_condition
from medmodels.syn.config import MODELS, SynTrainConfig
from medmodels.syn.data import WorkingCase, random_affine, sample_batch, sample_block, to_working_case
from medmodels.syn.flow import FlowConfig
from medmodels.syn.inference import BASELINE_NAME, BUNDLED_NAME, DEFAULT_STEPS
from medmodels.syn.losses import adversarial_losses, region_mean_error, synthesis_loss
from medmodels.syn.masks import PATTERNS, missing_tensor, sample_missing
from medmodels.syn.variants import variant as variant_of
from medmodels.training import Task
from medmodels.weights import open_checkpoint

#: Config entries measured on the training cases: they may differ from an ``--init`` checkpoint's.
DATA_KEYS = ("intensity_reference",)
#: The record note ``medmodels export`` adds to the bundled synthesis weights.
DATA_NOTE = (
    "Trained on BraTS 2018 training-set cases (research use; cite Menze et al., IEEE TMI 2015; "
    "Bakas et al., Sci. Data 2017; Bakas et al., arXiv:1811.02629)."
)


def model_config(cfg: SynTrainConfig, intensity_reference: dict | None = None) -> dict:
    """What a checkpoint needs to rebuild and run the model."""
    if cfg.model not in MODELS:
        raise InputError(f"Unknown synthesis model '{cfg.model}': use {' or '.join(MODELS)}.")
    conditioned = cfg.condition == "regions"
    if conditioned and cfg.model in MEAN_AND_FLOW_KINDS:
        raise InputError(f"--condition regions is for m2dn and regression, not {cfg.model}: leave it out.")
    return {
        "kind": cfg.model,
        "net": {
            "modalities": len(MODALITY_KEYS),
            "encoder_channels": cfg.encoder_channels,
            "channels": [int(c) for c in cfg.channels],
            "emb_dim": cfg.emb_dim,
            "context": cfg.context,
            "refine_blocks": cfg.refine_blocks,
            # only a conditioned network has the key, so other configs stay those of their bundled weights
            **({"condition_channels": len(REGIONS)} if conditioned else {}),
        },
        **({"condition": dict(REGION_CONDITION)} if conditioned else {}),
        "diffusion": D.DiffusionConfig(cfg.num_train_timesteps, data_scale=cfg.data_scale).to_dict(),
        # only a flow has flow settings, so M2DN and regression configs stay those of their bundled weights
        **({"flow": FlowConfig(cfg.flow_noise).to_dict()} if cfg.model in MEAN_AND_FLOW_KINDS else {}),
        "spacing": [float(s) for s in cfg.spacing],
        "modalities": list(MODALITY_KEYS),
        "intensity_reference": intensity_reference or {},
        # Compared word for word with the bundled checkpoint's record (training.py): the old module
        # name stays in it (the Normalizer now lives in medmodels.normalisation).
        "preprocessing": "union-of-nonzero brain mask, clip 0.5-99.5 percentile + z-score inside the brain "
        "(medmodels.preprocess.Normalizer), linear resampling to `spacing`, crop to the brain; "
        "axial 2D slices; network space = z-score * diffusion.data_scale",
    }


#: Net options a trained network can grow along (``M2DNet.load_grown``); absent = 0 in older checkpoints.
GROWABLE = ("context", "refine_blocks", "condition_channels")


def grows_from(ours: dict, theirs: dict) -> bool:
    """Whether a network of config ``ours`` can start from weights of config ``theirs``:
    the same but for more slice context, more refinement blocks or a condition map
    (``config["condition"]`` then names it); or a flow
    (``MeanAndFlow.load_grown``) starting from a single network of its shape.
    The working spacing may differ too: the network is fully convolutional on
    2D slices, so weights trained at 2 mm are a start for a finer grid (the
    features then cover fewer millimetres, which the continued training adapts)."""
    a, b = dict(ours), dict(theirs)
    a.pop("spacing", None), b.pop("spacing", None)
    if "condition" in a and "condition" not in b:  # growing a condition input: its description is new too
        a.pop("condition")
    if a.get("kind") in MEAN_AND_FLOW_KINDS and b.get("kind") not in MEAN_AND_FLOW_KINDS:
        for c in (a, b):
            c.pop("kind", None), c.pop("flow", None)
        return a == b
    net_a, net_b = dict(a.pop("net", {})), dict(b.pop("net", {}))
    if a != b:
        return False
    for key in GROWABLE:
        if net_a.pop(key, 0) < net_b.pop(key, 0):
            return False
    return net_a == net_b


def intensity_reference(cases: Sequence[WorkingCase]) -> dict:
    """How each modality's intensity scale relates to the others', from the training cases.

    A synthesised modality has no input of its own to take its intensity scale
    from, so it gets one estimated from the available modalities of the same
    case: ``log mean_m = mean over available a of (log mean_a + d_mean[m][a])``
    (same for the std), and clip bounds at the median z-scores of the training
    cases' percentile bounds. Medians over the training cases.
    """
    full = [c for c in cases if all(k in c.normalizers for k in MODALITY_KEYS)]
    if not full:
        return {}
    lm = np.log([[max(c.normalizers[k].mean, 1e-6) for k in MODALITY_KEYS] for c in full])
    ls = np.log([[max(c.normalizers[k].std, 1e-6) for k in MODALITY_KEYS] for c in full])
    zl = [[(c.normalizers[k].low - c.normalizers[k].mean) / c.normalizers[k].std for k in MODALITY_KEYS] for c in full]
    zh = [[(c.normalizers[k].high - c.normalizers[k].mean) / c.normalizers[k].std for k in MODALITY_KEYS] for c in full]
    return {
        "d_log_mean": np.median(lm[:, :, None] - lm[:, None, :], axis=0).round(5).tolist(),
        "d_log_std": np.median(ls[:, :, None] - ls[:, None, :], axis=0).round(5).tolist(),
        "z_low": np.median(zl, axis=0).round(5).tolist(),
        "z_high": np.median(zh, axis=0).round(5).tolist(),
        "cases": len(full),
    }


def load_working_cases(data: str, names: Sequence[str], spacing) -> list[WorkingCase]:
    found = discover_cases(data)
    missing = [n for n in names if n not in found]
    if missing:
        raise InputError(f"Cases not found in '{data}': {', '.join(missing)}. Fix the split file or the folder.")
    out = []
    for name in progress(list(names), desc="Reading cases"):
        images, labels = found[name].load()
        out.append(to_working_case(images, spacing, name, labels=labels))
    return out


def training_batch(
    cases: Sequence[WorkingCase],
    cfg: SynTrainConfig,
    size: int,
    rng: np.random.Generator,
    flip: bool,
    tumour_weight: float | None = None,
    with_regions: bool | None = None,
    condition_dropout: float | None = None,
):
    """``(x0, missing, context, weight, regions, condition)``, z-scores, ready for ``variant.loss``:
    ``context``, ``weight``, ``regions`` (the labels, for the region-mean loss) and ``condition``
    (the region map of ``--condition regions``, ``syn.conditioning.training_condition``) are
    empty tensors when not used (the loop moves tensors). ``tumour_weight`` defaults
    to ``cfg.tumour_weight``, ``with_regions`` to whether ``cfg.region_weight`` is set;
    ``condition_dropout`` to ``cfg.condition_dropout``."""
    tumour_weight = cfg.tumour_weight if tumour_weight is None else tumour_weight
    mix = cfg.tumour_mix if flip else 0.0  # training batches only (validation: flip=False)
    batch = sample_batch(cases, size, tuple(cfg.patch_size), rng, flip=flip, context=cfg.context, tumour_mix=mix)
    if flip and (cfg.augment_degrees or cfg.augment_scale):  # training batches only (validation: flip=False)
        batch = random_affine(batch, rng, cfg.augment_degrees, cfg.augment_scale)
    # the masks come from the same stream, so one Generator state fixes the whole batch
    missing = sample_missing(size, torch.Generator().manual_seed(int(rng.integers(2**62))))
    context = batch.context if batch.context is not None else torch.empty(0)
    weight = torch.empty(0)
    if tumour_weight:
        weight = (1.0 + tumour_weight * (batch.labels > 0).float())[:, None]
    with_regions = bool(cfg.region_weight) if with_regions is None else with_regions
    regions = batch.labels.long() if with_regions else torch.empty(0)
    condition = torch.empty(0)
    if cfg.condition == "regions":  # drawn last, so runs without a condition draw the batches they drew
        dropout = cfg.condition_dropout if condition_dropout is None else condition_dropout
        condition = training_condition(batch.labels, rng, dropout)
    return batch.x0, missing, context, weight, regions, condition


def _optional(t: torch.Tensor) -> torch.Tensor | None:
    return t if t.numel() else None


def validation_batch(cases: Sequence[WorkingCase], cfg: SynTrainConfig):
    """A fixed batch (``training_batch``'s tuple, no mirroring) so the validation
    figures are comparable across iterations. Its weights always mark the tumour
    (for ``tumour_error``) and its labels are always there (for ``val_region_mse``);
    the validation loss itself is unweighted. A conditioned network's map is never
    dropped here: validation scores it with the map, as a segmenter gives one."""
    rng = np.random.default_rng(12345)
    return training_batch(
        cases,
        cfg,
        cfg.val_slices,
        rng,
        flip=False,
        tumour_weight=cfg.tumour_weight or 1.0,
        with_regions=True,
        condition_dropout=0.0,
    )


def tumour_error(
    pred: torch.Tensor, x0: torch.Tensor, missing: torch.Tensor, weight: torch.Tensor, cfg: D.DiffusionConfig
) -> dict:
    """``{"val_tumour_mse": ...}``: mean squared error of the missing channels on the
    tumour pixels of the validation slices; {} without weights.

    Args:
        pred, x0: ``(V, M, H, W)`` synthesised and true slices, z-scores.
        missing: ``(V, M)``, 1 = missing.
        weight: ``(V, 1, H, W)`` loss weights, above 1 on the tumour (or empty).
        cfg: the variant's diffusion settings: the error is measured in diffusion
            space, like ``val_loss`` beside it in the history.
    """
    if not weight.numel():
        return {}
    tumour = (weight[:, 0] > 1)[:, None] & missing.bool()[:, :, None, None]
    if not tumour.any():
        return {}
    return {"val_tumour_mse": round(float((D.to_diffusion_space(pred - x0, cfg) ** 2)[tumour].mean()), 5)}


def synthesis_scores(pred: torch.Tensor, x0: torch.Tensor, missing: torch.Tensor) -> dict:
    """SSIM and PSNR of the missing channels inside the brain, one 2D figure per
    (slice, missing modality), averaged.

    Args:
        pred, x0: ``(V, M, H, W)`` synthesised and true slices, z-scores (the
            figures do not depend on the scale).
        missing: ``(V, M)``, 1 = missing.

    Returns:
        ``{"val_ssim": ..., "val_psnr": ...}``; the peak and SSIM's range are the
        true slices' range inside the brain (background is 0 in every channel).
    """
    brain = (x0 != 0).any(dim=1)  # (V, H, W)
    v, m = torch.nonzero(missing.bool(), as_tuple=True)
    p, t = pred[v, m].cpu().numpy(), x0[v, m].cpu().numpy()
    mask = brain[v].cpu().numpy()
    drange = float(t[mask].max() - t[mask].min())
    return {
        "val_ssim": round(float(np.nanmean(ssim(p, t, mask, drange, per_slice=True))), 4),
        "val_psnr": round(float(np.nanmean(psnr(p, t, mask, drange, per_slice=True))), 2),
    }


def load_mean(model, cfg: SynTrainConfig, config: dict) -> dict:
    """Put the frozen regression of ``cfg.mean_checkpoint`` into a flow's mean part; its record.

    Raises:
        InputError: the checkpoint is not a regression of this run's network.
    """
    opened = open_checkpoint(cfg.mean_checkpoint, BASELINE_NAME, BASELINE_NAME)  # SHA-256, weights_only=True
    path, theirs = opened.path, opened.payload.get("config") or {}
    if theirs.get("kind") != "regression" or theirs.get("net") != config["net"]:
        raise InputError(
            f"--mean-checkpoint '{path}' is not a regression of this network (kind {theirs.get('kind')!r}, "
            f"net {theirs.get('net')}; this run's net {config['net']}). Give a regression checkpoint trained "
            "with the same network options, or those options."
        )
    model.load_mean({k: v.float() for k, v in opened.payload["state_dict"].items()})
    return {"checkpoint": str(path), "sha256": opened.record["sha256"]}


def make_critic(cfg: SynTrainConfig) -> PatchCritic | None:
    """The discriminator of ``--adversarial-weight`` (None without it), seeded after the network so the
    network's initial weights are those of a run without one.

    Raises:
        InputError: a negative weight.
    """
    if cfg.adversarial_weight < 0:
        raise InputError(f"--adversarial-weight must not be negative (got {cfg.adversarial_weight}); 0 = none.")
    if not cfg.adversarial_weight:
        return None
    torch.manual_seed(cfg.seed + 1)
    # it judges critic_input: the modalities (the missing ones candidates) and the missing mask as planes
    return PatchCritic(2 * len(MODALITY_KEYS))


#: The block's missing patterns: those without T1c. The segmenter reads the enhancing tumour and the core
#: from T1c, so a block with T1c acquired would give its loss almost nothing to teach.
T1C_MISSING = tuple(m for m in PATTERNS if "t1c" not in m.keys)


def checked_block_loss(cfg: SynTrainConfig, block_loss: Callable | None) -> Callable | None:
    """The block loss a run with ``cfg`` uses: ``block_loss`` with ``cfg.segmenter_weight``, None without.

    Raises:
        InputError: a negative weight, or a weight without a block loss.
    """
    if cfg.segmenter_weight < 0:
        raise InputError(f"--segmenter-weight must not be negative (got {cfg.segmenter_weight}); 0 = none.")
    if cfg.segmenter_weight and block_loss is None:
        raise InputError(
            "--segmenter-weight needs the segmenter's loss: pass block_loss=medmodels.segmenter_in_the_loop."
            "block_loss(cfg) (train-syn builds it from --segmenter)."
        )
    return block_loss if cfg.segmenter_weight else None


def segmenter_block(cases: Sequence[WorkingCase], cfg: SynTrainConfig, rng: np.random.Generator):
    """``(x0, missing, context, regions)`` of one block (``sample_block``) for the segmenter loss, with one
    pattern without T1c for all its slices; ``context`` is empty without slice context."""
    block = sample_block(cases, cfg.segmenter_block, rng, flip=True, context=cfg.context)
    pattern = T1C_MISSING[rng.integers(len(T1C_MISSING))]
    missing = missing_tensor(pattern, len(block.x0))
    context = block.context if block.context is not None else torch.empty(0)
    return block.x0, missing, context, block.regions


def make_loss(cfg: SynTrainConfig, variant, block_loss: Callable | None = None):
    """``Task.loss`` of a synthesis run: ``loss(net, batch, generator, critic=None) -> {"total", ...}``.

    The variant's slice loss on the batch's first six tensors (``training_batch``), with the adversarial
    terms when a critic is given; with ``block_loss``, plus ``cfg.segmenter_weight`` times its value on the
    block in the batch's last four tensors (``segmenter_block``; a conditioned network reads it without a map).
    """

    def slice_loss(net, batch, generator, critic=None):
        x0, missing, context, weight, regions, condition = batch
        weight, regions = _optional(weight), _optional(regions)
        net = bind(net, _optional(condition))
        if critic is None:
            return {
                "total": variant.loss(
                    net, x0, missing, generator, _optional(context), weight, regions, cfg.region_weight, cfg.ssim_weight
                )
            }
        pred, x0 = variant.training_prediction(net, x0, missing, generator, _optional(context))
        adv_g, adv_d = adversarial_losses(critic, pred, x0, missing)
        total = synthesis_loss(
            pred, x0, missing, weight, regions, cfg.region_weight, cfg.ssim_weight, variant.ssim_range
        )
        # adv_d's gradient reaches only the discriminator, adv_g's only the network (adversarial_losses)
        return {"total": total + cfg.adversarial_weight * adv_g + adv_d, "adv_g": adv_g, "adv_d": adv_d}

    def loss(net, batch, generator, critic=None):
        terms = slice_loss(net, batch[:6], generator, critic)
        if block_loss is None:
            return terms
        x0, missing, context, regions = batch[6:]
        pred, x0 = variant.training_prediction(net, x0, missing, generator, _optional(context))
        pred, x0 = D.to_data_space(pred, variant.cfg), D.to_data_space(x0, variant.cfg)
        seg = block_loss(pred, x0, missing, regions)
        return {**terms, "total": terms["total"] + cfg.segmenter_weight * seg, "segmenter": seg}

    return loss


def make_task(
    cfg: SynTrainConfig,
    cases: Sequence[WorkingCase],
    val_cases: Sequence[WorkingCase],
    device: torch.device,
    main: bool = True,
    block_loss: Callable | None = None,
) -> Task:
    """The pieces ``medmodels.training`` needs: network, sampler, loss, validation.

    Args:
        cases: training cases on the working grid; their intensities give ``intensity_reference``.
        val_cases: validation cases (empty: a fixed batch of training slices is used).
        device: where validation runs.
        main: whether this is the process that validates (DDP rank 0).
        block_loss: with ``cfg.segmenter_weight``, the segmenter's loss on a synthesised block
            (``medmodels.segmenter_in_the_loop.block_loss(cfg)``); not used without.
    """
    if not 0.0 <= cfg.tumour_mix <= 1.0:
        raise InputError(f"--tumour-mix is a probability: give a value in 0..1 (got {cfg.tumour_mix}); 0 = none.")
    config = model_config(cfg, intensity_reference(cases))
    variant = variant_of(config)
    torch.manual_seed(cfg.seed)
    model = build_synthesis_net(config)
    mean_record = load_mean(model, cfg, config) if cfg.model in MEAN_AND_FLOW_KINDS else None
    critic = make_critic(cfg)

    block_loss = checked_block_loss(cfg, block_loss)

    def sample(rng: np.random.Generator, progress: float = 1.0):
        batch = training_batch(cases, cfg, cfg.batch_size, rng, flip=True)
        return batch if block_loss is None else batch + segmenter_block(cases, cfg, rng)

    validate = None
    if main:
        x0_val, missing_val, ctx_val, w_val, regions_val, cond_val = (
            t.to(device) for t in validation_batch(val_cases or cases, cfg)
        )

        def validate(net) -> dict:
            net = bind(net, _optional(cond_val))
            # the plain (unweighted) loss, so curves with and without tumour weights compare
            value = variant.loss(net, x0_val, missing_val, torch.Generator().manual_seed(7), _optional(ctx_val))
            # its own generator: validation must not move the training streams (exact resume)
            gen = torch.Generator(device=x0_val.device).manual_seed(11)
            pred = variant.sample(net, x0_val, missing_val, DEFAULT_STEPS, gen, _optional(ctx_val))
            scores = synthesis_scores(pred, x0_val, missing_val)
            scaled = (D.to_diffusion_space(pred, variant.cfg), D.to_diffusion_space(x0_val, variant.cfg))
            return {
                "val_loss": round(float(value), 5),
                **scores,
                **tumour_error(pred, x0_val, missing_val, w_val, variant.cfg),
                # the tumour regions' mean intensities (what the region-mean loss teaches), every run alike
                "val_region_mse": round(float(region_mean_error(*scaled, missing_val, regions_val)), 5),
            }

    return Task(
        name=cfg.model,
        model=model,
        config=config,
        sample=sample,
        loss=make_loss(cfg, variant, block_loss),
        validate=validate,
        # a flow's --init bundled starts it from the bundled M2DN (its mean part is the regression)
        bundled=BASELINE_NAME if cfg.model == "regression" else BUNDLED_NAME,
        unit="slices",
        facts={"mean_checkpoint": mean_record} if mean_record else {},
        data_keys=DATA_KEYS,
        grows_from=grows_from,
        score=lambda record: record["val_ssim"],  # --keep-best: the validation SSIM of the missing modalities
        critic=critic,
    )


def train(cfg: SynTrainConfig, block_loss: Callable | None = None) -> dict:
    """Read the cases named by the split (all cases without one) and fit (``block_loss``: ``make_task``'s)."""
    started = time.time()
    info = training.setup(cfg)
    if cfg.split:
        split = read_split(cfg.split, required=("training", "validation"))
        train_names, val_names = split["training"], split["validation"]
    else:
        train_names, val_names = sorted(discover_cases(cfg.data)), []
    if cfg.max_cases:
        train_names, val_names = train_names[: cfg.max_cases], val_names[: cfg.max_cases]
    cases = load_working_cases(cfg.data, train_names, cfg.spacing)
    val_cases = load_working_cases(cfg.data, val_names, cfg.spacing) if val_names else []
    return fit(cfg, cases, val_cases, load_s=time.time() - started, info=info, started=started, block_loss=block_loss)


def fit(
    cfg: SynTrainConfig,
    cases: Sequence[WorkingCase],
    val_cases: Sequence[WorkingCase] = (),
    load_s: float = 0.0,
    info: DistInfo | None = None,
    started: float | None = None,
    block_loss: Callable | None = None,
) -> dict:
    """Train on prepared cases; returns the summary written to ``history.json``
    (empty on other DDP processes).

    Args:
        load_s: seconds spent reading the cases (for the summary).
        info: from ``medmodels.training.setup(cfg)`` (default: set up here).
        started: when the command began (the ``hours`` budget counts from it; default now).
        block_loss: ``make_task``'s.
    """
    if not cases:
        raise InputError("No training cases: give a data folder with cases (and a split naming some).")
    started = time.time() if started is None else started
    info = info or training.setup(cfg)
    task = make_task(cfg, cases, val_cases, info.device, info.is_main, block_loss)
    task.facts |= {
        "training_cases": [c.name for c in cases],
        "validation_cases": [c.name for c in val_cases],
        "wall_s_loading": round(load_s, 1),
    }
    return training.run(cfg, task, info, started)
