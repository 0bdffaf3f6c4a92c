"""Training throughput of a synthesis configuration (``medmodels bench-syn --training``).

One phantom case with labels (no data set needed) goes to the configuration's
working grid like a training case; then ``medmodels.throughput.time_task_steps``
runs real training steps of the same ``Task`` that ``train-syn`` builds
(slice sampling with neighbours and tumour weights, masks, the variant's loss,
with ``adversarial_weight`` the discriminator's step too, with
``segmenter_weight`` the block through the frozen segmenter, backward, AdamW)
and reports seconds per phase, iterations/s, GFLOP per iteration and the
achieved GFLOP/s against the matmul peak. ``training_report``
makes the figures a report (``medmodels.report``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from medmodels.phantom import make_phantom
from medmodels.report import Report
from medmodels.syn.data import to_working_case
from medmodels.syn.train import SynTrainConfig, make_task
from medmodels.throughput import throughput_phrase, time_task_steps


def config_from_checkpoint(config: dict, **options) -> SynTrainConfig:
    """The ``train-syn`` options that rebuild a checkpoint's model (``options``: batch size, weights, ...)."""
    net, diffusion = config["net"], config["diffusion"]
    return SynTrainConfig(
        model=config.get("kind", "m2dn"),
        spacing=tuple(config["spacing"]),
        encoder_channels=net["encoder_channels"],
        channels=tuple(net["channels"]),
        emb_dim=net["emb_dim"],
        context=net.get("context", 0),
        refine_blocks=net.get("refine_blocks", 0),
        condition="regions" if net.get("condition_channels", 0) else "none",
        num_train_timesteps=diffusion["num_train_timesteps"],
        data_scale=diffusion["data_scale"],
        **options,
    )


def bench_training(
    cfg: SynTrainConfig,
    iterations: int = 20,
    phantom_size: tuple[int, int, int] = (160, 160, 120),
    block_loss: Callable | None = None,
) -> dict:
    """Time ``iterations`` training steps of ``cfg`` on one phantom of ``phantom_size`` voxels
    (x, y, z; 1.5 mm at the default); the figures of ``time_task_steps`` plus the configuration.
    ``block_loss``: with ``cfg.segmenter_weight``, the segmenter's loss (``make_task``'s)."""
    ph = make_phantom(tuple(phantom_size), seed=0)
    case = to_working_case(ph.images, cfg.spacing, "phantom", labels=ph.labels)
    task = make_task(cfg, [case], [], torch.device("cpu"), main=False, block_loss=block_loss)
    result = time_task_steps(task, iterations, cfg.lr, cfg.seed)
    return {
        "model": cfg.model,
        "parameters": sum(p.numel() for p in task.model.parameters()),
        "net": task.config["net"],
        "spacing_mm": list(cfg.spacing),
        "patch": list(cfg.patch_size),
        "batch_size": cfg.batch_size,
        "tumour_weight": cfg.tumour_weight,
        "adversarial_weight": cfg.adversarial_weight,
        # the discriminator of the adversarial loss: trained with the network, never part of the model
        "critic_parameters": sum(p.numel() for p in task.critic.parameters()) if task.critic is not None else 0,
        "segmenter_weight": cfg.segmenter_weight,
        # the block the frozen segmenter reads each step (edge in working voxels), with the weight only
        "segmenter_block": cfg.segmenter_block if cfg.segmenter_weight else 0,
        **result,
    }


def training_report(result: dict, command: str | None = None) -> Report:
    """``bench_training``'s figures as a report whose Markdown is one line (it/s, GFLOP/s against the peak).

    Args:
        result: what ``bench_training`` returned.
        command: the command line that made it (``report.command_line``), None from the library.
    """
    line = (
        f"training {result['model']} ({result['parameters']:,} parameters, context {result['net']['context']}, "
        f"refine blocks {result['net']['refine_blocks']}, batch {result['batch_size']} x {result['patch']}"
        + (
            f", adversarial weight {result['adversarial_weight']} ({result['critic_parameters']:,}-parameter "
            "discriminator)"
            if result.get("adversarial_weight")
            else ""
        )
        + (
            f", segmenter weight {result['segmenter_weight']} (a {result['segmenter_block']}-voxel block through the "
            "frozen segmenter)"
            if result.get("segmenter_weight")
            else ""
        )
        + "): "
        + throughput_phrase(result)
    )
    title = f"Training throughput of {result['model']} ({result['parameters']:,} parameters)"
    return Report(kind="bench-syn --training", title=title, data=result, body=[line], command=command)
