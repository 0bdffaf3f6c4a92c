"""Synthesis commands: ``train-syn``, ``evaluate-syn``, ``bench-syn``.

Synthesising a case is ``medmodels run --synthesize`` (alias ``synthesize``);
exporting a trained model is ``medmodels export``. Torch-heavy modules are
imported inside the command functions, so that ``medmodels --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medmodels.atomic import check_output_folder
from medmodels.checkpoint_ref import checkpoint_argument
from medmodels.commands.common import (
    add_runtime_arguments,
    apply_runtime_arguments,
    check_report_folder,
    command_of,
    out_argument,
    show_report,
)
from medmodels.errors import InputError
from medmodels.flags import floats
from medmodels.options import DEFAULT_SAMPLES
from medmodels.report import report_files
from medmodels.syn.config import SynTrainConfig


def _augment(text: str) -> tuple[float, float]:
    vals = floats(text) if "," in text else ()
    if len(vals) != 2:
        raise argparse.ArgumentTypeError(f"give DEGREES,SCALE (e.g. 10,0.1), not '{text}'")
    return vals[0], vals[1]


class _AugmentShorthand(argparse.Action):
    """``--augment D,S``: the two fields ``augment_degrees`` and ``augment_scale`` at once (the
    flag the bundled models' cards give); each field keeps its own flag."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.augment_degrees, namespace.augment_scale = values


#: The report bench-syn writes into --out (<stem>.json, <stem>.md): of sampling (False) or of training
#: (--training, True).
BENCH_FILES = {False: "bench_syn", True: "bench_syn_training"}
#: The report evaluate-syn writes into --out: evaluation.json with all figures, evaluation.md with the tables.
EVALUATION = "evaluation"
#: The flag of each model evaluate-syn names in its result, and for the segmenter the split the bundled
#: models were trained on (they never saw its validation cases).
HELD_OUT_FLAGS = {
    "m2dn": ("--checkpoint", ""),
    "regression": ("--baseline", ""),
    "segmenter": (
        "--seg-checkpoint",
        ", or --split splits/brats18_shared.json: the bundled models never saw its validation cases",
    ),
}


def register(sub: argparse._SubParsersAction) -> None:
    # -- train-syn -------------------------------------------------------------
    p = sub.add_parser(
        "train-syn",
        help="train M2DN (or the regression baseline) on BraTS-layout data",
        description="Train the 2D modality-masked diffusion network (M2DN) or, with --model "
        "regression, the same network without diffusion. --resume continues from OUT/last.pt. "
        "Several GPUs: torchrun --nproc_per_node=N -m medmodels train-syn ...",
    )
    SynTrainConfig.add_arguments(p)
    p.add_argument(
        "--augment",
        type=_augment,
        action=_AugmentShorthand,
        default=argparse.SUPPRESS,
        metavar="DEGREES,SCALE",
        help="shorthand for --augment-degrees DEGREES --augment-scale SCALE (e.g. 10,0.1)",
    )
    p.set_defaults(func=_train)

    # -- evaluate-syn ----------------------------------------------------------
    p = sub.add_parser(
        "evaluate-syn",
        help="PSNR/SSIM/MAE of M2DN vs baselines over the 14 missing patterns",
        description="For each missing pattern and validation case: PSNR, SSIM, MAE inside the brain "
        "(working spacing, a fixed subset of slices), for M2DN, the regression U-Net "
        "and the mean fill; the same on the input grid for whole synthesised volumes, inside the brain "
        "and the tumour, and the T1c enhancement (ET over edema); paired tests over cases "
        "(and slice-level ones); optional downstream Dice.",
    )
    p.add_argument("data", type=Path)
    p.add_argument("--split", type=Path, required=True)
    p.add_argument(
        "--checkpoint", default=None, type=checkpoint_argument, help="M2DN .pt, or 'bundled' (default: bundled M2DN)"
    )
    p.add_argument(
        "--baseline",
        default=None,
        type=checkpoint_argument,
        help="regression .pt, or 'baseline' (default: the bundled regression baseline)",
    )
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the synthesizer's default)")
    p.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_SAMPLES,
        help=f"M2DN's output is the mean of this many samples (default {DEFAULT_SAMPLES}, as medmodels run)",
    )
    p.add_argument("--slice-stride", type=int, default=4, help="every k-th brain slice of the working grid")
    p.add_argument("--max-cases", type=int, default=None)
    p.add_argument(
        "--patterns", default=None, help="comma-separated availability bits, e.g. 1011,0100 (default: all 14)"
    )
    p.add_argument(
        "--no-input-grid",
        dest="input_grid",
        action="store_false",
        help="skip the whole-volume scores on the input grid (brain, tumour, T1c enhancement); faster",
    )
    p.add_argument(
        "--dice",
        action="store_true",
        help="also the downstream segmentation Dice (needs seg weights); it is in evaluation.json and .md, "
        "which are written once, after it (should it fail, without it)",
    )
    p.add_argument(
        "--seg-checkpoint",
        default=None,
        type=checkpoint_argument,
        help="the segmenter of --dice: a segmentation .pt, 'bundled' (ShaSpec, the default) or 'baseline'",
    )
    _regions_argument(p)
    out_argument(p, "evaluation.json with all figures, evaluation.md with the tables")
    p.add_argument("--seed", type=int, default=0)
    add_runtime_arguments(p)
    p.set_defaults(func=_evaluate)
    _register_bench(sub)


#: ``--regions-from``'s word for no map: a conditioned model synthesises with an empty one.
NO_REGIONS = "none"


def _regions_reference(text: str):
    return NO_REGIONS if text == NO_REGIONS else checkpoint_argument(text)


def _regions_argument(p: argparse.ArgumentParser) -> None:
    """``--regions-from``: the segmenter whose map a conditioned synthesizer reads (``medmodels.region_condition``)."""
    p.add_argument(
        "--regions-from",
        default=None,
        type=_regions_reference,
        metavar="bundled|baseline|ensemble|PATH|none",
        help="for a synthesis model conditioned on the tumour regions (train-syn --condition regions): the "
        "segmenter whose probabilities on the acquired modalities it reads (default: the default segmenter, "
        "as medmodels run); on a split, give one trained on its training cases; 'none': an empty map (what "
        "the model draws without a segmenter). Other models ignore it",
    )


def _regions(args: argparse.Namespace):
    """The region source of ``--regions-from`` (loaded only if a conditioned synthesizer asks)."""
    from medmodels.syn.conditioning import no_regions

    if args.regions_from == NO_REGIONS:
        return no_regions
    from medmodels.region_condition import segmenter_regions

    return segmenter_regions(args.regions_from, args.device)


def _register_bench(sub: argparse._SubParsersAction) -> None:
    """``bench-syn`` (its own function: ``register`` stays under 80 lines)."""
    p = sub.add_parser(
        "bench-syn",
        help="time whole-volume synthesis; SSIM against the number of sampler steps",
        description="Times synthesising one missing modality of a real case on its own grid, and "
        "compares DDIM with several step counts against the full-length DDPM sampler.",
    )
    p.add_argument("case", type=Path, nargs="?", default=None, help="a BraTS case folder with all four modalities")
    p.add_argument(
        "--checkpoint",
        default=None,
        type=checkpoint_argument,
        help="synthesis .pt, or 'ensemble' / 'bundled' / 'baseline' (default: 'ensemble', what run synthesises "
        "with; with --training the bundled M2DN)",
    )
    p.add_argument("--missing", default="t1c", help="modality to synthesise for the timing (default t1c)")
    p.add_argument("--steps", default=None, help="comma-separated DDIM step counts for the SSIM sweep, e.g. 5,10,20,50")
    p.add_argument("--patterns", default="1101,0111,1000", help="availability bits for the sweep")
    p.add_argument("--full", action="store_true", help="include the full-length DDPM sampler in the sweep")
    p.add_argument("--timing-only", action="store_true", help="only the whole-volume timing, no sweep")
    p.add_argument("--slice-stride", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1, help="timing repeats (the median is reported)")
    p.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_SAMPLES,
        help=f"samples averaged in the timed synthesis (default {DEFAULT_SAMPLES}, as medmodels run)",
    )
    p.add_argument(
        "--training",
        action="store_true",
        help="instead: training throughput of the checkpoint's configuration on a phantom (no case needed; "
        "seconds per phase, iterations/s, GFLOP/s against the matmul peak)",
    )
    p.add_argument("--iterations", type=int, default=20, help="training steps to time (with --training)")
    p.add_argument("--batch-size", type=int, default=8, help="slices per step (with --training)")
    p.add_argument("--tumour-weight", type=float, default=0.0, help="loss weight on the tumour (with --training)")
    p.add_argument(
        "--adversarial-weight",
        type=float,
        default=0.0,
        help="weight of the adversarial loss, so its PatchGAN discriminator is timed too (with --training; "
        "train-syn's option)",
    )
    p.add_argument(
        "--segmenter-weight",
        type=float,
        default=0.0,
        help="weight of the segmenter-in-the-loop loss, so its block and frozen segmenter are timed too (with "
        "--training; train-syn's option, with the bundled segmenter)",
    )
    p.add_argument(
        "--segmenter-block",
        type=int,
        default=64,
        help="edge of the segmenter loss's block in working voxels (with --training and --segmenter-weight)",
    )
    _regions_argument(p)
    out_argument(
        p, "also write the figures to OUT/bench_syn.json and .md (--training: bench_syn_training)", required=False
    )
    p.add_argument("--seed", type=int, default=0)
    add_runtime_arguments(p)
    p.set_defaults(func=_bench)


def _block_loss(cfg: SynTrainConfig):
    """The segmenter-in-the-loop loss of ``--segmenter-weight`` (it needs both families: built here), or None."""
    if cfg.segmenter_weight <= 0:
        return None  # none asked for, or a negative weight, which the trainer refuses by name
    from medmodels.segmenter_in_the_loop import block_loss

    return block_loss(cfg)


def _train(args: argparse.Namespace) -> int:
    from medmodels.syn.train import train

    cfg = SynTrainConfig.from_namespace(args)
    summary = train(cfg, _block_loss(cfg))
    if summary:
        last = summary["history"][-1] if summary["history"] else {}
        print(
            json.dumps(
                {
                    "out": str(args.out),
                    "iterations": summary["iterations"],
                    "wall_s_training": summary["wall_s_training"],
                    "last": last,
                }
            )
        )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    apply_runtime_arguments(args)
    from medmodels.syn.evaluate import evaluate, write_result

    # checked before the hours of evaluation: earlier tables are never replaced
    check_output_folder(args.out, list(report_files(EVALUATION).values()), "give another --out")
    if args.seg_checkpoint is not None and not args.dice:
        raise InputError("--seg-checkpoint is the segmenter of the downstream Dice: add --dice, or leave it out.")
    options = dict(steps=args.steps, max_cases=args.max_cases, patterns=args.patterns, device=args.device)
    options.update(seed=args.seed, samples=args.samples, regions=_regions(args))
    result = evaluate(
        args.data,
        args.split,
        checkpoint=args.checkpoint,
        baseline=args.baseline,
        slice_stride=args.slice_stride,
        input_grid=args.input_grid,
        **options,
    )
    if result.get("region_condition"):  # the segmenter whose map the conditioned model read, by file and SHA-256
        from medmodels.seg.inference import segmenter_record

        segmenter = None if args.regions_from == NO_REGIONS else segmenter_record(args.regions_from)
        result["region_condition"] = {**result["region_condition"], "segmenter": segmenter}
    out = args.out / f"{EVALUATION}.json"
    if args.dice:  # pipeline level: needs the segmenter as well as the synthesizer
        from medmodels.downstream import add_downstream_dice

        try:
            result = add_downstream_dice(
                result, args.data, args.split, checkpoint=args.checkpoint, segmenter=args.seg_checkpoint, **options
            )
        except BaseException:  # the synthesis scores took hours: keep them, without the Dice
            write_result(result, out, command_of(args))
            print(f"note: the downstream Dice failed; {out} holds the evaluation without it.", file=sys.stderr)
            _held_out_notes(result)
            raise
    write_result(result, out, command_of(args))  # once, with the Dice when asked for: nothing is rewritten
    print(result["markdown"])
    _held_out_notes(result)
    return 0


def _held_out_notes(result: dict) -> None:
    """A ``note:`` on stderr for each model of ``result`` (evaluate-syn's) that trained on evaluated cases.

    Args:
        result: the evaluation (``syn.evaluate.evaluate``'s, with ``medmodels.downstream``'s Dice when run).
    """
    from medmodels.held_out import FIX, not_held_out, not_held_out_models

    for model, trained in not_held_out_models(result).items():
        flag, example = HELD_OUT_FLAGS[model]
        sentence = not_held_out(model, trained, len(result["validation_cases"]))
        print(f"note: {sentence}: {FIX} ({flag} PATH{example}).", file=sys.stderr)


def _bench(args: argparse.Namespace) -> int:
    apply_runtime_arguments(args)
    check_report_folder(args.out, BENCH_FILES[args.training])  # before the timing: earlier figures are kept
    if args.training:
        return _bench_training(args)
    if args.case is None:
        raise InputError("bench-syn needs a BraTS case folder (or --training, which runs on a phantom).")
    from medmodels.syn.benchmark import benchmark, benchmark_report
    from medmodels.syn.inference import DEFAULT_SYNTHESIZER

    steps = [] if args.timing_only else ([int(s) for s in args.steps.split(",")] if args.steps else None)
    result = benchmark(
        args.case,
        checkpoint=args.checkpoint or DEFAULT_SYNTHESIZER,  # what run synthesises with
        missing=args.missing,
        steps=steps,
        patterns=args.patterns.split(","),
        full=args.full and not args.timing_only,
        slice_stride=args.slice_stride,
        repeats=args.repeats,
        device=args.device,
        seed=args.seed,
        samples=args.samples,
        regions=_regions(args),
    )
    return show_report(benchmark_report(result, command_of(args)), args.out, BENCH_FILES[False])


def _bench_training(args: argparse.Namespace) -> int:
    from medmodels.nets.synthesis import BLEND_KIND
    from medmodels.syn.inference import load_synthesizer
    from medmodels.syn.train_benchmark import bench_training, config_from_checkpoint, training_report

    config = load_synthesizer(args.checkpoint, device="cpu").config
    if config.get("kind") == BLEND_KIND:
        raise InputError(
            "A blend is not trained as one model: give bench-syn --training the M2DN or the regression checkpoint."
        )
    cfg = config_from_checkpoint(
        config,
        batch_size=args.batch_size,
        tumour_weight=args.tumour_weight,
        adversarial_weight=args.adversarial_weight,
        segmenter_weight=args.segmenter_weight,
        segmenter_block=args.segmenter_block,
        device="cpu",
    )
    result = bench_training(cfg, args.iterations, block_loss=_block_loss(cfg))
    return show_report(training_report(result, command_of(args)), args.out, BENCH_FILES[True])
