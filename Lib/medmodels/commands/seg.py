"""Segmentation commands: ``train-seg``, ``evaluate-seg``, ``segment``, ``bench-seg``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medmodels.commands.common import add_runtime_arguments, apply_runtime_arguments, parse_size


def _spacing(text: str) -> tuple[float, float, float]:
    parts = [float(p) for p in text.lower().replace(",", "x").split("x") if p]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"spacing is S or SXxSYxSZ in mm, got '{text}'")
    return tuple(parts)  # type: ignore[return-value]


def register(sub: argparse._SubParsersAction) -> None:
    # -- train-seg ---------------------------------------------------------
    p = sub.add_parser("train-seg", help="train ShaSpec (or the baseline U-Net) on a BraTS folder",
                       description="Train a segmentation model on a BraTS-layout folder. Random modality dropping "
                                   "over the 15 subsets (one model for all), or --subset for a dedicated model. "
                                   "Several GPUs: torchrun --nproc_per_node=N -m medmodels train-seg ...")
    p.add_argument("data", help="folder of BraTS case folders")
    p.add_argument("--split", default=None, help="JSON split file with 'training' and 'validation' case lists")
    p.add_argument("--out", required=True, help="output folder (last.pt, model.pt, history.json)")
    p.add_argument("--arch", choices=("shaspec", "unet3d"), default="shaspec",
                   help="shaspec, or unet3d: the baseline (zero-filled missing inputs)")
    p.add_argument("--width", type=int, default=8, help="channels of the first level (doubling per level)")
    p.add_argument("--depth", type=int, default=4, help="resolution levels")
    p.add_argument("--spacing", type=_spacing, default=(2.5, 2.5, 2.5), help="working spacing in mm (default 2.5)")
    p.add_argument("--patch", type=parse_size, default=(40, 40, 40), help="patch size in voxels (default 40)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--epoch-iters", type=int, default=100, help="iterations between validation/checkpoint")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                   help="adamw (default, for short budgets) or sgd (the paper: Nesterov momentum 0.99)")
    p.add_argument("--dao-weight", type=float, default=0.1, help="weight of the DAO (L1 alignment) loss")
    p.add_argument("--dco-weight", type=float, default=0.02, help="weight of the DCO (domain classification) loss")
    p.add_argument("--fg-prob", type=float, default=0.5, help="probability that a patch is centred on tumour")
    p.add_argument("--subset", default=None,
                   help="fixed modality subset for a dedicated model, e.g. flair,t1c or 1010 (default: random)")
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no mixed precision on the GPU")
    p.add_argument("--no-validate", dest="validate", action="store_false")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-cases", type=int, default=None, help=argparse.SUPPRESS)
    add_runtime_arguments(p)
    p.set_defaults(func=_train)

    # -- export-seg ----------------------------------------------------------
    p = sub.add_parser("export-seg", help="write a trained model.pt as a bundled checkpoint (+ record)",
                       description="Copy the weights of a train-seg run (OUT/model.pt) into medmodels/weights/NAME.pt "
                                   "(float16 storage by default) with a JSON record holding its SHA-256 and the "
                                   "training summary.")
    p.add_argument("model", help="model.pt written by train-seg")
    p.add_argument("--name", required=True, help="bundled name, e.g. shaspec_brats18")
    p.add_argument("--dest", default=None, help="folder (default: the package's weights folder)")
    p.add_argument("--float32", dest="half", action="store_false", help="keep float32 storage")
    p.set_defaults(func=_export)

    # -- evaluate-seg --------------------------------------------------------
    p = sub.add_parser("evaluate-seg", help="Dice and HD95 per availability subset (the paper's Table 1)",
                       description="Segment every case with each of the 15 modality subsets and score ET, TC, "
                                   "WT (Dice, HD95). Writes results.md, results.csv, results.json.")
    p.add_argument("data", help="folder of BraTS case folders (with _seg labels)")
    p.add_argument("--split", default=None, help="split file: evaluate its 'validation' cases")
    p.add_argument("--cases", nargs="*", default=None, help="case names (default: all, or the split's validation)")
    p.add_argument("--checkpoint", action="append", default=None,
                   help="checkpoint .pt (repeat to compare models side by side); 'bundled' = bundled ShaSpec, "
                        "'baseline' = bundled baseline. Default: both bundled models")
    p.add_argument("--name", action="append", default=None, help="column name of each checkpoint")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-cleanup", dest="cleanup", action="store_false")
    p.add_argument("--no-hd95", dest="hd95", action="store_false")
    p.add_argument("--jobs", type=int, default=1,
                   help="evaluate cases in this many single-thread processes (CPU)")
    p.add_argument("--include", default=None,
                   help="results.json of an earlier run on the same cases and subsets: its models are added "
                        "to the tables (to evaluate models one after the other)")
    p.add_argument("--subsets", default="all", help="'all' (15) or comma-separated bit strings like 1111,0010")
    add_runtime_arguments(p)
    p.set_defaults(func=_evaluate)

    # -- segment -------------------------------------------------------------
    p = sub.add_parser("segment", help="segment a case folder, a folder of case folders, or a folder of named volumes",
                       description="Write <case>_seg.nii.gz (BraTS labels) for one BraTS case folder, each case "
                                   "folder in a folder, or one folder of NIfTI/NRRD volumes named after their "
                                   "modality (flair.nii.gz, T1.nrrd, ...), using the modalities present (or --use).")
    p.add_argument("input", help="a case folder or a folder of case folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--checkpoint", default=None, help="checkpoint .pt (default: bundled ShaSpec)")
    p.add_argument("--use", default=None, help="modalities to use, e.g. flair,t2 (default: all present)")
    p.add_argument("--labels", dest="label_convention", choices=("2018", "2023"), default="2018")
    p.add_argument("--no-cleanup", dest="cleanup", action="store_false")
    add_runtime_arguments(p)
    p.set_defaults(func=_segment)

    # -- bench-seg -----------------------------------------------------------
    p = sub.add_parser("bench-seg", help="whole-case inference time and peak memory",
                       description="Time segment() on one case (a BraTS case folder, or a 240x240x155 phantom when "
                                   "none is given) and print seconds and peak resident memory.")
    p.add_argument("case", nargs="?", default=None, help="BraTS case folder (default: a phantom)")
    p.add_argument("--checkpoint", default=None, help="checkpoint .pt (default: bundled ShaSpec)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", dest="json_out", default=None, help="also write the figures to this JSON file")
    add_runtime_arguments(p)
    p.set_defaults(func=_bench)


def _train(args: argparse.Namespace) -> int:
    apply_runtime_arguments(args)
    from medmodels.seg.train import TrainConfig, train

    cfg = TrainConfig(data=args.data, out=args.out, split=args.split, arch=args.arch, width=args.width,
                      depth=args.depth, spacing=tuple(args.spacing), patch_size=tuple(args.patch),
                      batch_size=args.batch_size, iterations=args.iterations, epoch_iters=args.epoch_iters,
                      lr=args.lr, optimizer=args.optimizer, dao_weight=args.dao_weight, dco_weight=args.dco_weight,
                      fg_prob=args.fg_prob, subset=args.subset, augment=args.augment, seed=args.seed,
                      threads=args.threads, device=args.device, amp=args.amp, resume=args.resume,
                      validate=args.validate, max_cases=args.max_cases)
    summary = train(cfg)
    if summary:
        print(json.dumps({k: summary[k] for k in ("iterations", "wall_s_training", "world_size", "parameters")}))
        print(Path(args.out) / "model.pt")
    return 0


def _export(args: argparse.Namespace) -> int:
    from medmodels.seg.train import export_checkpoint

    record = export_checkpoint(args.model, args.name, args.dest, args.half)
    print(json.dumps({k: record[k] for k in ("file", "sha256", "size_bytes")}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    apply_runtime_arguments(args)
    from medmodels.seg.evaluate import evaluate_command

    return evaluate_command(args)


def _segment(args: argparse.Namespace) -> int:
    apply_runtime_arguments(args)
    from medmodels.seg.evaluate import segment_command

    return segment_command(args)


def _bench(args: argparse.Namespace) -> int:
    apply_runtime_arguments(args)
    from medmodels.seg.benchmark import bench_command

    return bench_command(args)
