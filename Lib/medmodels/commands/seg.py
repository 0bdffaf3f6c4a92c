"""Segmentation commands: ``train-seg``, ``evaluate-seg`` (and its ``--calibrate``), ``bench-seg``.

Segmenting cases is ``medmodels run --segment`` (alias ``segment``); exporting
a trained model is ``medmodels export``. Torch-heavy modules are imported
inside the command functions, so that ``medmodels --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medmodels.atomic import check_output_folder, check_writable_folder
from medmodels.checkpoint_ref import BASELINE, BUNDLED, ENSEMBLE, PATH, CheckpointRef, checkpoint_argument
from medmodels.commands.common import (
    add_runtime_arguments,
    apply_runtime_arguments,
    check_report_folder,
    command_of,
    out_argument,
    show_report,
)
from medmodels.seg.config import TrainConfig

#: The report bench-seg writes into --out (<stem>.json, <stem>.md): of inference (False) or of training
#: (--training, True).
BENCH_FILES = {False: "bench_seg", True: "bench_seg_training"}
#: --mirror word -> axes of the (z, y, x) working volume flipped at test time.
MIRRORS = {"none": (), "x": (2,), "all": (0, 1, 2)}
#: The example of evaluate-seg's note on figures that are not held out (after ``held_out.FIX``): the split
#: the bundled weights were trained on, whose validation cases they never saw.
HELD_OUT_EXAMPLE = "(e.g. --split splits/brats18_shared.json: the bundled weights never saw its validation cases)"


def register(sub: argparse._SubParsersAction) -> None:
    """``train-seg``, ``evaluate-seg`` and ``bench-seg``."""
    _register_train(sub)
    _register_evaluate(sub)
    _register_bench(sub)


def _register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-seg",
        help="train ShaSpec (or the baseline U-Net) on a BraTS folder",
        description="Train a segmentation model on a BraTS-layout folder. Random modality dropping "
        "over the 15 subsets (one model for all), or --subset for a dedicated model. "
        "Several GPUs: torchrun --nproc_per_node=N -m medmodels train-seg ...",
    )
    TrainConfig.add_arguments(p)
    p.set_defaults(func=_train)


def _register_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate-seg",
        help="Dice and HD95 per availability subset (the paper's Table 1)",
        description="Segment every case with each of the 15 modality subsets and score ET, TC, "
        "WT (Dice, HD95). Writes results.md, results.csv, results.json.",
    )
    p.add_argument("data", help="folder of BraTS case folders (with _seg labels)")
    p.add_argument("--split", default=None, help="split file: evaluate its 'validation' cases")
    p.add_argument("--cases", nargs="*", default=None, help="case names (default: all, or the split's validation)")
    p.add_argument(
        "--checkpoint",
        action="append",
        default=None,
        type=checkpoint_argument,
        help="checkpoint .pt (repeat to compare models side by side); 'bundled' = bundled ShaSpec, "
        "'baseline' = bundled baseline, 'ensemble' = the two averaged. Default: ShaSpec and the baseline",
    )
    p.add_argument("--name", action="append", default=None, help="column name of each checkpoint")
    out_argument(p, "results.md, results.csv, results.json")
    p.add_argument("--no-cleanup", dest="cleanup", action="store_false")
    p.add_argument("--no-hd95", dest="hd95", action="store_false")
    p.add_argument("--jobs", type=int, default=1, help="evaluate cases in this many single-thread processes (CPU)")
    p.add_argument(
        "--include",
        default=None,
        help="results.json of an earlier run on the same cases and subsets, with the same --no-hd95, "
        "--no-cleanup and --mirror: its models are added to the tables (to evaluate models one after the "
        "other); other settings are refused before anything is evaluated",
    )
    p.add_argument("--subsets", default="all", help="'all' (15) or comma-separated bit strings like 1111,0010")
    p.add_argument(
        "--mirror",
        choices=tuple(MIRRORS),
        default="none",
        help="test-time mirroring: none; x: left-right (2 passes); all: every axis (8 passes, nnU-Net's)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="probability threshold for every model, instead of each checkpoint's own (its config's "
        "'threshold', set by --calibrate; 0.5 when it has none)",
    )
    _add_calibration_arguments(p)
    add_runtime_arguments(p)
    p.set_defaults(func=_evaluate)


def _add_calibration_arguments(p: argparse.ArgumentParser) -> None:
    """``evaluate-seg --calibrate``: choose one checkpoint's probability threshold (``seg.calibration``)."""
    g = p.add_argument_group(
        "calibration",
        "--calibrate: instead of the tables, choose the probability threshold of one --checkpoint. Each case and "
        "subset runs once; every candidate threshold is scored on the same probabilities (Dice of ET, TC, WT, with "
        "the clean-up) and the best mean over cases, subsets and regions is chosen; leaving one case out says what "
        "the choice is worth on a case it did not see. Writes calibration.md, .csv and .json into --out; with "
        "--write, a copy of the checkpoint with the threshold in its config (its record keeps the training and adds "
        "the calibration). Calibrate on cases the weights never trained on (a split's validation cases).",
    )
    g.add_argument("--calibrate", action="store_true", help="choose the checkpoint's probability threshold")
    g.add_argument(
        "--thresholds",
        default=None,
        help="candidates, comma-separated, in (0, 1) (default: 0.1 to 0.7 in steps of 0.05; 0.5 is always tried)",
    )
    g.add_argument(
        "--write",
        type=Path,
        default=None,
        metavar="PT",
        help="write the calibrated checkpoint here (with its .json record); may be the checkpoint itself",
    )


def _register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench-seg",
        help="whole-case inference time and peak memory",
        description="Time segment() on one case (a BraTS case folder, or a 240x240x155 phantom when "
        "none is given) and print seconds and peak resident memory.",
    )
    p.add_argument("case", nargs="?", default=None, help="BraTS case folder (default: a phantom)")
    p.add_argument(
        "--checkpoint",
        default=None,
        type=checkpoint_argument,
        help="checkpoint .pt, or 'bundled' (ShaSpec) / 'baseline' / 'ensemble' (default: the ensemble, what run "
        "segments with; with --training: bundled ShaSpec)",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--training",
        action="store_true",
        help="instead: training throughput of the checkpoint's configuration on a phantom "
        "(seconds per phase, iterations/s, GFLOP/s against the matmul peak)",
    )
    p.add_argument("--iterations", type=int, default=20, help="training steps to time (with --training)")
    p.add_argument("--batch-size", type=int, default=2, help="patches per step (with --training)")
    p.add_argument(
        "--no-amp", dest="amp", action="store_false", help="float32 steps (with --training; default: bf16 autocast)"
    )
    out_argument(
        p, "also write the figures to OUT/bench_seg.json and .md (--training: bench_seg_training)", required=False
    )
    add_runtime_arguments(p)
    p.set_defaults(func=_bench)


def _train(args: argparse.Namespace) -> int:
    apply_runtime_arguments(args)
    from medmodels.seg.train import train

    cfg = TrainConfig.from_namespace(args)
    summary = train(cfg)
    if summary:
        print(json.dumps({k: summary[k] for k in ("iterations", "wall_s_training", "world_size", "parameters")}))
        print(Path(args.out) / "model.pt")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    apply_runtime_arguments(args)
    if args.calibrate or args.thresholds is not None or args.write is not None:
        return _calibrate(args)
    import time

    from medmodels.datasets import read_split
    from medmodels.errors import InputError
    from medmodels.seg.evaluate import (
        NEW_RESULTS_FOLDER,
        RESULT_FILES,
        check_included,
        evaluate,
        merge_results,
        parse_subsets,
        read_included,
        resolve_cases,
        write_results,
    )

    ckpts = args.checkpoint or ["bundled", "baseline"]
    names = args.name or [_column_name(c) for c in ckpts]
    if len(names) != len(ckpts):
        raise InputError("Give one --name per --checkpoint, or none.")
    models = dict(zip(names, ckpts))  # CheckpointRefs: the loaders resolve 'bundled', 'baseline', paths
    if args.cases is not None and not args.cases:
        raise InputError("--cases names no case: name the cases to evaluate, or leave --cases out (all cases).")
    cases = args.cases or (read_split(args.split, required=("validation",))["validation"] if args.split else None)
    subsets = parse_subsets(args.subsets)
    # Everything that could fail after the evaluation is checked before it: hours of work are not lost.
    earlier = read_included(args.include) if args.include else None
    if earlier is not None:
        names_now = resolve_cases(args.data, cases)[1]
        check_included(
            earlier, names_now, [m.bits for m in subsets], list(models), args.hd95, args.cleanup, args.mirror
        )
    check_writable_folder(args.out)
    check_output_folder(args.out, list(RESULT_FILES.values()), NEW_RESULTS_FOLDER)
    t0 = time.time()
    device = "cpu" if args.device == "auto" and args.jobs > 1 else args.device
    result = evaluate(
        args.data,
        cases,
        models,
        subsets,
        args.cleanup,
        args.hd95,
        jobs=args.jobs,
        device=device,
        mirror_axes=MIRRORS[args.mirror],
        threshold=args.threshold,
    )
    result["mirror"] = args.mirror
    result["wall_s"] = round(time.time() - t0, 1)
    if earlier is not None:
        result = merge_results(earlier, result)
    paths = write_results(result, args.out, command_of(args))
    print(paths["md"].read_text(encoding="utf-8"))
    for m in result["models"]:
        dice = result["summary"][m]["mean_dice_fewer_than_4"]
        shown = f"{100 * dice:.2f}" if dice is not None else "n/a (only the full set 1111 was evaluated)"
        print(f"{m}: mean Dice over subsets with < 4 modalities = {shown}")
    print(f"wall time {result['wall_s']} s; written: {', '.join(str(p) for p in paths.values())}")
    from medmodels.held_out import CALIBRATED_ON, FIX, not_held_out, not_held_out_models

    for m, trained in not_held_out_models(result).items():
        print(f"note: {not_held_out(m, trained, len(result['cases']))}: {FIX} {HELD_OUT_EXAMPLE}.", file=sys.stderr)
    for m, chosen in result.get(CALIBRATED_ON, {}).items():
        if chosen:
            print(
                f"note: {m}'s probability threshold was chosen on {', '.join(chosen)}: for figures free of that "
                "choice, see evaluate-seg --calibrate's leave-one-case-out table, or evaluate on other cases.",
                file=sys.stderr,
            )
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    """``evaluate-seg --calibrate`` (the runtime arguments already applied by ``_evaluate``)."""
    from medmodels.datasets import read_split
    from medmodels.errors import InputError
    from medmodels.progress import progress
    from medmodels.seg.calibration import (
        CANDIDATES,
        REPORT_FILES,
        calibrate,
        check_candidates,
        write_calibrated,
        write_calibration,
    )
    from medmodels.seg.evaluate import check_label_grids, parse_subsets, resolve_cases
    from medmodels.seg.inference import load_segmenter, segmenter_file

    if not args.calibrate:
        raise InputError("--thresholds and --write belong to --calibrate: add --calibrate, or leave them out.")
    refused = {
        "--include": args.include,
        "--threshold": args.threshold is not None,
        "--mirror": args.mirror != "none",
        "--name": args.name,
        "--jobs": args.jobs > 1,
    }
    if [flag for flag, given in refused.items() if given] or len(args.checkpoint or []) > 1:
        shown = ", ".join(
            [f for f, given in refused.items() if given] + ["a second --checkpoint"] * (len(args.checkpoint or []) > 1)
        )
        raise InputError(
            f"--calibrate chooses the threshold of one checkpoint on its own, unmirrored, in one process: leave out {shown}."
        )
    if args.cases is not None and not args.cases:
        raise InputError("--cases names no case: name the cases to calibrate on, or give --split.")
    names = args.cases or (read_split(args.split, required=("validation",))["validation"] if args.split else None)
    if names is None:
        raise InputError(
            "Name the cases to calibrate on: --split SPLIT (its validation cases) or --cases NAME ...; never the "
            "cases the weights trained on."
        )
    try:
        given = [float(t) for t in args.thresholds.split(",") if t.strip()] if args.thresholds else CANDIDATES
    except ValueError:
        raise InputError(
            f"--thresholds '{args.thresholds}' is not a comma-separated list of numbers: e.g. 0.2,0.3,0.5."
        ) from None
    candidates = check_candidates(given)
    subsets = parse_subsets(args.subsets)
    found, names = resolve_cases(args.data, names)
    check_label_grids([found[n] for n in names])
    # Checked before hours of work: the output folder, and the checkpoint (resolved, hash checked on load).
    check_writable_folder(args.out)
    check_output_folder(args.out, list(REPORT_FILES.values()), "give another --out")
    source = segmenter_file((args.checkpoint or [BUNDLED])[0])
    if args.write is not None:
        check_writable_folder(args.write.parent)
    segmenter = load_segmenter(source, device=args.device)
    from medmodels.held_out import trained_on_cases

    trained = trained_on_cases(source, names)
    if trained:  # a threshold chosen where the network is sure of itself is too high for unseen cases
        print(
            f"note: the checkpoint was trained on {', '.join(trained)}: calibrate on cases it never saw "
            "(a split's validation cases).",
            file=sys.stderr,
        )
    bar = iter(progress(range(len(names) * len(subsets)), desc="Calibrating"))
    result = calibrate(segmenter, {n: found[n] for n in names}, subsets, candidates, args.cleanup, bar)
    next(bar, None)
    result["checkpoint"] = str(source)
    paths = write_calibration(result, args.out, command_of(args))
    print(paths["md"].read_text(encoding="utf-8"))
    if result["edge_note"]:
        print(f"warning: {result['edge_note']}", file=sys.stderr)
    if args.write is not None:
        record = write_calibrated(source, args.write, {**result, "command": command_of(args)})
        print(json.dumps({"file": str(args.write), "sha256": record["sha256"], "threshold": result["threshold"]}))
    return 0


def _column_name(checkpoint: str) -> str:
    """The results column of a --checkpoint: ShaSpec, Baseline, or the run folder's name."""
    ref = CheckpointRef(checkpoint)
    if ref.kind != PATH:
        return {BUNDLED: "ShaSpec", BASELINE: "Baseline", ENSEMBLE: "Ensemble"}[ref.kind]
    return Path(ref).parent.name or Path(ref).stem


def _bench(args: argparse.Namespace) -> int:
    apply_runtime_arguments(args)
    check_report_folder(args.out, BENCH_FILES[args.training])  # before the timing: earlier figures are kept
    if args.training:
        return _bench_training(args)
    from medmodels.seg.benchmark import bench, benchmark_report

    result = bench(args.case, args.checkpoint, args.device, args.repeats)
    return show_report(benchmark_report(result, command_of(args)), args.out, BENCH_FILES[False])


def _bench_training(args: argparse.Namespace) -> int:
    from medmodels.seg.inference import load_segmenter
    from medmodels.seg.train_benchmark import bench_training, training_report

    # An ensemble is trained member by member: its training throughput is its members'.
    config = load_segmenter(args.checkpoint or BUNDLED, device="cpu").config
    if config["kind"] == "ensemble":
        from medmodels.errors import InputError

        raise InputError("bench-seg --training times one network: give a member, e.g. --checkpoint bundled.")
    result = bench_training(config, args.batch_size, args.iterations, amp=args.amp)
    return show_report(training_report(result, command_of(args)), args.out, BENCH_FILES[True])
