"""Training of ShaSpec (or the baseline U-Net) on a BraTS-layout folder.

One process: ``medmodels train-seg DATA --split SPLIT --out DIR``; several
GPUs (or CPU processes, gloo): ``torchrun --nproc_per_node=N -m medmodels
train-seg ...``. Each process draws its own patches (seed + rank); DDP
averages the gradients, so one iteration uses ``N * batch`` patches.

Per iteration: a batch of patches (tumour oversampled), each with a random
non-empty modality subset (uniform over the 15) or the fixed ``--subset``
(a dedicated model), flips + intensity augmentation; loss = Dice + BCE +
``dao_weight`` * DAO + ``dco_weight`` * DCO. AdamW with linear warm-up and
cosine decay by default (``--optimizer sgd`` = the paper's SGD, Nesterov 0.99).
Every ``--epoch-iters`` iterations: validation Dice (whole validation
volumes, all four modalities, at the working spacing) and a resumable
checkpoint ``last.pt``; at the end ``model.pt`` (weights + config) and
``history.json``. The validation Dice is reported, never used to pick a
checkpoint: the last iteration is what is saved.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from medmodels import distributed
from medmodels.errors import InputError
from medmodels.modalities import MODALITY_KEYS, AvailabilityMask
from medmodels.progress import emit, progress
from medmodels.datasets import discover_cases, read_split
from medmodels.seg.data import prepare, read_case_arrays
from medmodels.seg.inference import build_model, predict_probabilities
from medmodels.seg.losses import seg_losses
from medmodels.seg.sampling import TrainCase, make_batch
from medmodels.weights import load_checkpoint, save_checkpoint


@dataclass
class TrainConfig:
    data: str
    out: str
    split: str | None = None
    arch: str = "shaspec"
    width: int = 8
    depth: int = 4
    spacing: tuple = (2.5, 2.5, 2.5)
    patch_size: tuple = (48, 48, 48)
    batch_size: int = 2
    iterations: int = 600
    epoch_iters: int = 100
    lr: float = 2e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    warmup: int = 20
    dao_weight: float = 0.1
    dco_weight: float = 0.02
    fg_prob: float = 0.5
    subset: str | None = None  # None = random dropping over the 15 subsets
    augment: bool = True
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    amp: bool = True
    resume: bool = False
    validate: bool = True
    max_cases: int | None = None


def parse_subset(text: str | None) -> tuple[bool, ...] | None:
    """``"flair,t1c"`` or ``"1010"`` -> a fixed mask; None/"random" -> None."""
    if text is None or text == "random":
        return None
    if set(text) <= {"0", "1"} and len(text) == 4:
        return AvailabilityMask.from_bits(text).available
    return AvailabilityMask.from_keys([t.strip() for t in text.split(",") if t.strip()]).available


def model_config(cfg: TrainConfig) -> dict:
    return {"arch": cfg.arch, "width": cfg.width, "depth": cfg.depth,
            "spacing": [float(s) for s in cfg.spacing], "patch_size": [int(p) for p in cfg.patch_size],
            "modalities": list(MODALITY_KEYS), "regions": ["ET", "TC", "WT"],
            "subset": "random" if parse_subset(cfg.subset) is None else "".join("1" if b else "0" for b in parse_subset(cfg.subset)),
            "preprocessing": "union-of-nonzero brain mask, crop (margin 2), clip 0.5-99.5 percentile + z-score "
                             "inside the brain, trilinear resampling of the crop to `spacing`"}


def load_cases(found: dict, names, cfg: TrainConfig, with_patch: bool = True, quiet: bool = False):
    """Read and preprocess the named cases once (they stay in memory)."""
    missing = [n for n in names if n not in found]
    if missing:
        raise InputError(f"The split names case(s) not found in '{cfg.data}': {', '.join(missing)}. "
                         "Fix the split file or the data folder.")
    cases = []
    for name in progress(names, desc="Reading cases", disable=quiet):
        arrays, labels, spacing = read_case_arrays(found[name])
        prep = prepare(arrays, spacing, cfg.spacing, labels)
        if with_patch:
            cases.append(TrainCase.build(name, prep.image, prep.regions, cfg.patch_size))
        else:
            cases.append((name, prep.image, prep.regions))
    return cases


def dice_scores(pred: np.ndarray, target: np.ndarray) -> list[float]:
    out = []
    for p, t in zip(pred.astype(bool), target.astype(bool)):
        denom = p.sum() + t.sum()
        out.append(1.0 if denom == 0 else float(2 * (p & t).sum() / denom))
    return out


def validate(model, val_cases, cfg: TrainConfig, device) -> dict:
    model.eval()
    scores = []
    for _name, image, regions in val_cases:
        probs = predict_probabilities(model, image, (True,) * 4, cfg.patch_size, 0.5, device)
        scores.append(dice_scores((probs >= 0.5).numpy(), regions.numpy()))
    model.train()
    s = np.mean(scores, axis=0)
    return {"ET": float(s[0]), "TC": float(s[1]), "WT": float(s[2])}


def lr_at(it: int, cfg: TrainConfig) -> float:
    warm = min(1.0, (it + 1) / max(1, cfg.warmup))
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * it / max(1, cfg.iterations)))


def train(cfg: TrainConfig) -> dict:
    """Run training; returns the summary written to ``history.json``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info = distributed.init(cfg.device)
    device = info.device
    out = Path(cfg.out)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    fixed = parse_subset(cfg.subset)

    found = discover_cases(cfg.data, require_all=True, require_label=True)
    if cfg.split:
        split = read_split(cfg.split)
        train_names, val_names = split["training"], split["validation"]
    else:
        train_names, val_names = list(found), []
    if cfg.max_cases:
        train_names, val_names = train_names[: cfg.max_cases], val_names[: cfg.max_cases]
    t0 = time.time()
    cases = load_cases(found, train_names, cfg, quiet=not info.is_main)
    val_cases = load_cases(found, val_names, cfg, with_patch=False) if (cfg.validate and val_names and info.is_main) else []
    load_s = time.time() - t0

    torch.manual_seed(cfg.seed)
    model = build_model(model_config(cfg)).to(device)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.99, nesterov=True, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise InputError(f"Unknown optimizer '{cfg.optimizer}': use adamw or sgd.")
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start, history, train_s = 0, [], 0.0
    last = out / "last.pt"
    if cfg.resume and last.exists():
        state = load_checkpoint(last, map_location=device)
        if state["config"] != model_config(cfg):
            raise InputError(f"'{last}' was trained with another configuration ({state['config']}); "
                             "use a new --out folder or the same options.")
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        start, history = int(state["iteration"]), json.loads(state["history"])
        train_s = float(state.get("train_s", 0.0))
        emit(0.0, f"Resumed from {last} at iteration {start}")

    net = DDP(model, find_unused_parameters=cfg.arch == "shaspec") if info.enabled else model
    # one generator per process and per resumed start, so a resumed run is reproducible
    rng = np.random.default_rng([cfg.seed, info.rank, start])
    model.train()
    bar = progress(range(start, cfg.iterations), desc=f"Training {cfg.arch}", disable=not info.is_main)
    sums: dict[str, float] = {}
    for it in bar:
        t_it = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(it, cfg)
        x, y, m = make_batch(cases, cfg.batch_size, cfg.patch_size, rng, cfg.fg_prob, fixed, cfg.augment)
        x, y, m = x.to(device), y.to(device), m.to(device)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
            outputs = net(x, m)
        losses = seg_losses(outputs, y, cfg.dao_weight, cfg.dco_weight)
        opt.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        scaler.step(opt)
        scaler.update()
        train_s += time.time() - t_it
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n_in_epoch = (it % cfg.epoch_iters) + 1
        bar.set_postfix(**{k: v / n_in_epoch for k, v in sums.items()})
        if (it + 1) % cfg.epoch_iters == 0 or it + 1 == cfg.iterations:
            record = {"iteration": it + 1, "lr": lr_at(it, cfg), "train_s": round(train_s, 1),
                      **{f"loss_{k}": round(distributed.all_reduce_mean(v / n_in_epoch, info), 5) for k, v in sums.items()}}
            sums = {}
            if info.is_main:
                if val_cases:
                    record["val_dice"] = validate(model, val_cases, cfg, device)
                history.append(record)
                emit((it + 1) / cfg.iterations, "epoch " + json.dumps(record))
                save_checkpoint(last, {"state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                                       "config": model_config(cfg), "iteration": it + 1, "train_s": train_s,
                                       "history": json.dumps(history)})
            if info.enabled:
                dist.barrier()

    params_in_sync = True
    if info.enabled:  # DDP check: every process must end with the same weights
        flat = torch.cat([p.detach().flatten().double() for p in model.parameters()])
        ref = flat.clone()
        dist.broadcast(ref, 0)
        diff = torch.tensor([float((flat - ref).abs().max())], dtype=torch.float64)
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
        params_in_sync = float(diff) < 1e-6
    summary = {}
    if info.is_main:
        summary = {
            "config": model_config(cfg), "train_options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
            "training_cases": list(train_names), "validation_cases": list(val_names),
            "iterations": cfg.iterations, "world_size": info.world_size, "params_in_sync": params_in_sync,
            "patches_seen": cfg.iterations * cfg.batch_size * info.world_size,
            "wall_s_training": round(train_s, 1), "wall_s_loading": round(load_s, 1),
            "threads": torch.get_num_threads(), "device": str(device), "hardware": distributed.describe_hardware(device),
            "parameters": sum(p.numel() for p in model.parameters()), "history": history,
        }
        save_checkpoint(out / "model.pt", {"state_dict": model.state_dict(), "config": model_config(cfg)},
                        {"training": {k: summary[k] for k in ("training_cases", "validation_cases", "iterations",
                                                              "wall_s_training", "hardware", "threads", "world_size")}})
        (out / "history.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    distributed.cleanup(info)
    return summary


def export_checkpoint(model_pt, name: str, dest_dir=None, half: bool = True, extra: dict | None = None) -> dict:
    """Write a trained ``model.pt`` as a bundled checkpoint ``<dest_dir>/<name>.pt``
    (+ ``.json`` record with its SHA-256), weights stored as float16 when
    ``half`` (half the size; loaded back into float32). The training summary
    (``history.json`` beside ``model.pt``) goes into the record."""
    from medmodels.weights import BUNDLED_DIR

    model_pt = Path(model_pt)
    payload = load_checkpoint(model_pt)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
    record = {"stored_dtype": "float16" if half else "float32"}
    hist = model_pt.parent / "history.json"
    if hist.exists():
        summary = json.loads(hist.read_text(encoding="utf-8"))
        record["training"] = {k: summary.get(k) for k in (
            "training_cases", "validation_cases", "iterations", "patches_seen", "wall_s_training",
            "hardware", "threads", "world_size", "parameters", "train_options")}
        record["training"]["final_validation_dice_all_modalities"] = (summary.get("history") or [{}])[-1].get("val_dice")
    record.update(extra or {})
    dest = Path(dest_dir) if dest_dir else BUNDLED_DIR
    return save_checkpoint(dest / f"{name}.pt", {"state_dict": state, "config": payload["config"]}, record)
