"""Training of M2DN (or the regression baseline) on 2D slices of a BraTS-layout folder.

One process: ``medmodels train-syn DATA --split SPLIT --out DIR``; several GPUs
(or CPU processes, gloo): ``torchrun --nproc_per_node=N -m medmodels train-syn ...``.
Each process draws its own slices (seed + rank); DDP averages the gradients.

Per iteration: a batch of axial brain slices at the working spacing, each with
a mask drawn uniformly from the 14 non-trivial patterns; M2DN: a timestep
uniform in [0, T), the missing modalities noised, loss = MSE of the x0
prediction over all modalities; regression baseline (``--model regression``):
the same network and loss, missing inputs zero-filled, fixed timestep.
AdamW with linear warm-up and cosine decay; mixed precision on the GPU.
Every ``--epoch-iters`` iterations: the loss on a fixed set of validation
slices and a resumable ``last.pt``; at the end ``model.pt`` + ``history.json``.
The last iteration is what is saved (validation never picks a checkpoint).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from medmodels import distributed
from medmodels.datasets import discover_cases, read_split
from medmodels.errors import InputError
from medmodels.modalities import MODALITY_KEYS
from medmodels.nets.m2dn import build_m2dn
from medmodels.progress import emit, progress
from medmodels.syn import diffusion as D
from medmodels.syn.masks import sample_missing
from medmodels.syn.slices import WorkingCase, prepare_case, sample_slices
from medmodels.weights import load_checkpoint, save_checkpoint

MODELS = ("m2dn", "regression")


@dataclass
class SynTrainConfig:
    """Options of ``train-syn`` (see ``medmodels train-syn --help``)."""

    data: str = ""
    out: str = ""
    split: str | None = None
    model: str = "m2dn"
    spacing: tuple = (2.0, 2.0, 2.0)
    encoder_channels: int = 8
    channels: tuple = (24, 48, 96)
    emb_dim: int = 64
    num_train_timesteps: int = 1000
    data_scale: float = 0.5
    patch_size: tuple = (96, 96)
    batch_size: int = 8
    iterations: int = 2000
    epoch_iters: int = 100
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    amp: bool = True
    resume: bool = True
    max_cases: int | None = None
    val_slices: int = 32


def model_config(cfg: SynTrainConfig, intensity_reference: dict | None = None) -> dict:
    """What a checkpoint needs to rebuild and run the model."""
    if cfg.model not in MODELS:
        raise InputError(f"Unknown synthesis model '{cfg.model}': use {' or '.join(MODELS)}.")
    return {
        "kind": cfg.model,
        "net": {"modalities": len(MODALITY_KEYS), "encoder_channels": cfg.encoder_channels,
                "channels": [int(c) for c in cfg.channels], "emb_dim": cfg.emb_dim},
        "diffusion": D.DiffusionConfig(cfg.num_train_timesteps, data_scale=cfg.data_scale).to_dict(),
        "spacing": [float(s) for s in cfg.spacing],
        "modalities": list(MODALITY_KEYS),
        "intensity_reference": intensity_reference or {},
        "preprocessing": "union-of-nonzero brain mask, clip 0.5-99.5 percentile + z-score inside the brain "
                         "(medmodels.preprocess.Normalizer), linear resampling to `spacing`, crop to the brain; "
                         "axial 2D slices; network space = z-score * diffusion.data_scale",
    }


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
        images, _ = found[name].load()
        out.append(prepare_case(images, spacing, name))
    return out


def lr_at(it: int, cfg: SynTrainConfig) -> float:
    warm = min(1.0, (it + 1) / max(1, cfg.warmup))
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * it / max(1, cfg.iterations)))


def compute_loss(net, x0: torch.Tensor, missing: torch.Tensor, kind: str, scheduler, generator) -> torch.Tensor:
    if kind == "m2dn":
        return D.diffusion_loss(net, x0, missing, scheduler, generator)
    return D.regression_loss(net, x0, missing)


def validation_batch(cases: Sequence[WorkingCase], cfg: SynTrainConfig):
    """A fixed batch (slices, masks, timesteps, noise) so the validation loss is comparable across epochs."""
    rng = np.random.default_rng(12345)
    x0 = sample_slices(cases, cfg.val_slices, tuple(cfg.patch_size), rng, flip=False) * cfg.data_scale
    return x0, sample_missing(cfg.val_slices, torch.Generator().manual_seed(12345))


@torch.no_grad()
def validation_loss(model, batch, cfg: SynTrainConfig, scheduler, device) -> float:
    x0, missing = batch
    model.eval()
    loss = compute_loss(model, x0.to(device), missing.to(device), cfg.model, scheduler, torch.Generator().manual_seed(7))
    model.train()
    return float(loss)


def train(cfg: SynTrainConfig) -> dict:
    """Read the cases named by the split (all cases without one) and fit."""
    if cfg.split:
        split = read_split(cfg.split)
        train_names, val_names = split["training"], split["validation"]
    else:
        train_names, val_names = sorted(discover_cases(cfg.data)), []
    if cfg.max_cases:
        train_names, val_names = train_names[: cfg.max_cases], val_names[: cfg.max_cases]
    t0 = time.time()
    cases = load_working_cases(cfg.data, train_names, cfg.spacing)
    val_cases = load_working_cases(cfg.data, val_names, cfg.spacing) if val_names else []
    return fit(cfg, cases, val_cases, load_s=time.time() - t0)


def fit(cfg: SynTrainConfig, cases: Sequence[WorkingCase], val_cases: Sequence[WorkingCase] = (),
        load_s: float = 0.0) -> dict:
    """Train on prepared cases; returns the summary written to ``history.json``."""
    if not cases:
        raise InputError("No training cases: give a data folder with cases (and a split naming some).")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info = distributed.init(cfg.device)
    device = info.device
    out = Path(cfg.out)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    config = model_config(cfg, intensity_reference(cases))
    diff_cfg = D.DiffusionConfig(**config["diffusion"])
    scheduler = D.ddpm_scheduler(diff_cfg).to(device)

    torch.manual_seed(cfg.seed)
    model = build_m2dn(config["net"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start, history = 0, []
    last = out / "last.pt"
    if cfg.resume and last.exists():
        state = load_checkpoint(last, map_location=device)
        if state["config"] != config:
            raise InputError(f"'{last}' was trained with another configuration; use a new --out folder or the same options.")
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        start, history = int(state["iteration"]), json.loads(state["history"])
        emit(0.0, f"Resumed from {last} at iteration {start}")

    net = DDP(model) if info.enabled else model
    # one stream per process and per resumed start, so a resumed run is reproducible
    rng = np.random.default_rng([cfg.seed, info.rank, start])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    val_batch = validation_batch(val_cases or cases, cfg) if info.is_main else None
    model.train()
    train_s, sums, n_sum = 0.0, 0.0, 0
    bar = progress(range(start, cfg.iterations), desc=f"Training {cfg.model}", disable=not info.is_main)
    for it in bar:
        t_it = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(it, cfg)
        x0 = (sample_slices(cases, cfg.batch_size, tuple(cfg.patch_size), rng) * cfg.data_scale).to(device)
        missing = sample_missing(cfg.batch_size, gen, device)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
            loss = compute_loss(net, x0, missing, cfg.model, scheduler, gen)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        train_s += time.time() - t_it
        sums, n_sum = sums + float(loss.detach()), n_sum + 1
        bar.set_postfix(loss=sums / n_sum)
        if (it + 1) % cfg.epoch_iters == 0 or it + 1 == cfg.iterations:
            record = {"iteration": it + 1, "lr": lr_at(it, cfg), "train_s": round(train_s, 1),
                      "loss": round(distributed.all_reduce_mean(sums / n_sum, info), 5)}
            sums, n_sum = 0.0, 0
            if info.is_main:
                record["val_loss"] = round(validation_loss(model, val_batch, cfg, scheduler, device), 5)
                history.append(record)
                emit((it + 1) / cfg.iterations, "epoch " + json.dumps(record))
                save_checkpoint(last, {"state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                                       "config": config, "iteration": it + 1, "history": json.dumps(history)})
            if info.enabled:
                dist.barrier()

    summary: dict = {}
    if info.is_main:
        summary = {
            "config": config,
            "train_options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
            "training_cases": [c.name for c in cases], "validation_cases": [c.name for c in val_cases],
            "iterations": cfg.iterations, "batch_size": cfg.batch_size, "world_size": info.world_size,
            "slices_seen": cfg.iterations * cfg.batch_size * info.world_size,
            "wall_s_training": round(train_s, 1), "wall_s_loading": round(load_s, 1),
            "threads": torch.get_num_threads(), "device": str(device), "hardware": distributed.describe_hardware(device),
            "parameters": sum(p.numel() for p in model.parameters()), "history": history,
        }
        save_checkpoint(out / "model.pt", {"state_dict": model.state_dict(), "config": config},
                        {"training": {k: summary[k] for k in ("training_cases", "validation_cases", "iterations",
                                                              "batch_size", "wall_s_training", "hardware",
                                                              "threads", "world_size", "parameters")}})
        (out / "history.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    distributed.cleanup(info)
    return summary


DATA_NOTE = ("Trained on BraTS 2018 training-set cases (research use; cite Menze et al., IEEE TMI 2015; "
             "Bakas et al., Sci. Data 2017; Bakas et al., arXiv:1811.02629).")


def bundle(run_dir: str | Path, name: str, destination: str | Path | None = None) -> dict:
    """Copy a finished run's ``model.pt`` (weights + config only) into the bundled
    weights folder as ``<name>.pt`` with its record (training facts, data note)."""
    from medmodels.weights import BUNDLED_DIR

    run_dir = Path(run_dir)
    payload = load_checkpoint(run_dir / "model.pt")
    summary = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
    keys = ("training_cases", "validation_cases", "iterations", "batch_size", "slices_seen", "wall_s_training",
            "hardware", "threads", "world_size", "parameters")
    record = {"training": {k: summary[k] for k in keys},
              "last_epoch": summary["history"][-1] if summary["history"] else None,
              "data": DATA_NOTE}
    dest = Path(destination or BUNDLED_DIR) / f"{name}.pt"
    return save_checkpoint(dest, {"state_dict": payload["state_dict"], "config": payload["config"]}, record)
