"""Synthesis commands: ``train-syn``, ``export-syn``, ``evaluate-syn``, ``synthesize``, ``bench-syn``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medmodels.commands.common import add_runtime_arguments, apply_runtime_arguments
from medmodels.modalities import BY_KEY, MODALITY_KEYS


def _floats(text: str) -> tuple[float, ...]:
    vals = tuple(float(v) for v in text.replace("x", ",").split(",") if v)
    return vals * 3 if len(vals) == 1 else vals


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.replace("x", ",").split(",") if v)


def register(sub: argparse._SubParsersAction) -> None:
    # -- train-syn -------------------------------------------------------------
    p = sub.add_parser("train-syn", help="train M2DN (or the regression baseline) on BraTS-layout data",
                       description="Train the 2D modality-masked diffusion network (M2DN) or, with --model "
                                   "regression, the same network without diffusion. Resumes from OUT/last.pt. "
                                   "Several GPUs: torchrun --nproc_per_node=N -m medmodels train-syn ...")
    p.add_argument("data", type=Path, help="folder of BraTS case folders")
    p.add_argument("--split", type=Path, default=None, help="split JSON (training/validation case names)")
    p.add_argument("--out", type=Path, required=True, help="output folder (last.pt, model.pt, history.json)")
    p.add_argument("--model", choices=("m2dn", "regression"), default="m2dn")
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epoch-iters", type=int, default=100, help="iterations between validation + checkpoint")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--spacing", type=_floats, default=(2.0, 2.0, 2.0), help="working spacing in mm, e.g. 2 or 2,2,2")
    p.add_argument("--patch-size", type=_ints, default=(96, 96), help="training slice canvas H,W at the working spacing")
    p.add_argument("--channels", type=_ints, default=(24, 48, 96), help="fusion U-Net widths")
    p.add_argument("--encoder-channels", type=int, default=8)
    p.add_argument("--timesteps", type=int, default=1000, help="T of the forward process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-cases", type=int, default=None)
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on the GPU")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")
    add_runtime_arguments(p)
    p.set_defaults(func=_train)

    # -- evaluate-syn ----------------------------------------------------------
    p = sub.add_parser("evaluate-syn", help="PSNR/SSIM/MAE of M2DN vs baselines over the 14 missing patterns",
                       description="For each missing pattern and validation case: PSNR, SSIM, MAE inside the brain "
                                   "(working spacing, a fixed subset of slices), for M2DN, the regression U-Net "
                                   "and the mean fill; paired Wilcoxon tests; optional downstream Dice.")
    p.add_argument("data", type=Path)
    p.add_argument("--split", type=Path, required=True)
    p.add_argument("--checkpoint", default=None, help="M2DN .pt (default: bundled)")
    p.add_argument("--baseline", default=None, help="regression .pt (default: bundled)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the synthesizer's default)")
    p.add_argument("--slice-stride", type=int, default=4, help="every k-th brain slice of the working grid")
    p.add_argument("--max-cases", type=int, default=None)
    p.add_argument("--patterns", default=None, help="comma-separated availability bits, e.g. 1011,0100 (default: all 14)")
    p.add_argument("--dice", action="store_true", help="also the downstream segmentation Dice (needs seg weights)")
    p.add_argument("--out", type=Path, required=True, help="JSON with all figures; a .md table beside it")
    p.add_argument("--seed", type=int, default=0)
    add_runtime_arguments(p)
    p.set_defaults(func=_evaluate)

    # -- synthesize ------------------------------------------------------------
    p = sub.add_parser("synthesize", help="synthesise the missing modalities of one case into NIfTI files",
                       description="Give the acquired modalities; writes <key>.nii.gz for each missing one "
                                   "(and <key>_std.nii.gz with --samples > 1) on the grid of the inputs.")
    for key in MODALITY_KEYS:
        p.add_argument(f"--{key}", type=Path, default=None, help=f"{BY_KEY[key].display} volume (omit if missing)")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--checkpoint", default=None, help=".pt with its .json record (default: bundled M2DN)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's default)")
    p.add_argument("--samples", type=int, default=1, help="samples per case; >1 also writes a std map")
    p.add_argument("--seed", type=int, default=0)
    add_runtime_arguments(p)
    p.set_defaults(func=_synthesize)

    # -- export-syn --------------------------------------------------------------
    p = sub.add_parser("export-syn", help="write a finished train-syn run as a bundled checkpoint (+ record)",
                       description="Copy RUN/model.pt (weights + config only) to INTO/NAME.pt with its JSON record "
                                   "(SHA-256, training facts, data note).")
    p.add_argument("run", type=Path, help="a train-syn output folder (model.pt, history.json)")
    p.add_argument("--name", required=True, help="e.g. m2dn_brats18 or m2dn_regression_brats18")
    p.add_argument("--into", type=Path, default=None, help="destination folder (default: the bundled weights folder)")
    p.set_defaults(func=_export)

    # -- bench-syn ---------------------------------------------------------------
    p = sub.add_parser("bench-syn", help="time whole-volume synthesis; SSIM against the number of sampler steps",
                       description="Times synthesising one missing modality of a real case on its own grid, and "
                                   "compares DDIM with several step counts against the full-length DDPM sampler.")
    p.add_argument("case", type=Path, help="a BraTS case folder with all four modalities")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--missing", default="t1c", help="modality to synthesise for the timing (default t1c)")
    p.add_argument("--steps", default=None, help="comma-separated DDIM step counts for the SSIM sweep, e.g. 5,10,20,50")
    p.add_argument("--patterns", default="1101,0111,1000", help="availability bits for the sweep")
    p.add_argument("--full", action="store_true", help="include the full-length DDPM sampler in the sweep")
    p.add_argument("--timing-only", action="store_true", help="only the whole-volume timing, no sweep")
    p.add_argument("--slice-stride", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1, help="timing repeats (the median is reported)")
    p.add_argument("--out", type=Path, default=None, help="JSON with the figures")
    p.add_argument("--seed", type=int, default=0)
    add_runtime_arguments(p)
    p.set_defaults(func=_bench)


def _train(args: argparse.Namespace) -> int:
    from medmodels.syn.train import SynTrainConfig, train

    cfg = SynTrainConfig(
        data=str(args.data), out=str(args.out), split=str(args.split) if args.split else None, model=args.model,
        spacing=tuple(args.spacing), encoder_channels=args.encoder_channels, channels=tuple(args.channels),
        num_train_timesteps=args.timesteps, patch_size=tuple(args.patch_size), batch_size=args.batch_size,
        iterations=args.iterations, epoch_iters=args.epoch_iters, lr=args.lr, seed=args.seed,
        threads=args.threads, device=args.device, amp=not args.no_amp, resume=not args.no_resume,
        max_cases=args.max_cases)
    summary = train(cfg)
    if summary:
        last = summary["history"][-1] if summary["history"] else {}
        print(json.dumps({"out": str(args.out), "iterations": summary["iterations"],
                          "wall_s_training": summary["wall_s_training"], "last": last}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    apply_runtime_arguments(args)
    from medmodels.syn.evaluate import evaluate

    result = evaluate(args.data, args.split, args.out, checkpoint=args.checkpoint, baseline=args.baseline,
                      steps=args.steps, slice_stride=args.slice_stride, max_cases=args.max_cases,
                      patterns=args.patterns, dice=args.dice, device=args.device, seed=args.seed)
    print(result["markdown"])
    return 0


def _synthesize(args: argparse.Namespace) -> int:
    apply_runtime_arguments(args)
    from medmodels.io import read_image, write_image
    from medmodels.modalities import AvailabilityMask
    from medmodels.preprocess import to_common_grid
    from medmodels.syn.synthesize import load_synthesizer

    images = {k: read_image(getattr(args, k)) for k in MODALITY_KEYS if getattr(args, k) is not None}
    images, notes = to_common_grid(images)
    for n in notes:
        print(n)
    syn = load_synthesizer(args.checkpoint, args.device)
    out = syn.synthesize(images, AvailabilityMask.from_keys(images), steps=args.steps, samples=args.samples,
                         seed=args.seed)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for key, (mean, std) in out.items():
        write_image(mean, args.output_dir / f"{key}.nii.gz")
        print(args.output_dir / f"{key}.nii.gz")
        if std is not None:
            write_image(std, args.output_dir / f"{key}_std.nii.gz")
            print(args.output_dir / f"{key}_std.nii.gz")
    return 0


def _export(args: argparse.Namespace) -> int:
    from medmodels.syn.train import bundle

    record = bundle(args.run, args.name, args.into)
    print(json.dumps({"file": record["file"], "sha256": record["sha256"], "size_bytes": record["size_bytes"]}))
    return 0


def _bench(args: argparse.Namespace) -> int:
    apply_runtime_arguments(args)
    from medmodels.syn.benchmark import benchmark

    steps = [] if args.timing_only else ([int(s) for s in args.steps.split(",")] if args.steps else None)
    result = benchmark(args.case, checkpoint=args.checkpoint, missing=args.missing, steps=steps,
                       patterns=args.patterns.split(","), full=args.full and not args.timing_only, slice_stride=args.slice_stride,
                       repeats=args.repeats, device=args.device, seed=args.seed)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0
