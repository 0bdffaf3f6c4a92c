"""Pipeline commands: ``run`` (one case), ``run-folder`` (many), ``demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medmodels.commands.common import add_runtime_arguments, apply_runtime_arguments, parse_size
from medmodels.datasets import discover_cases
from medmodels.errors import InputError
from medmodels.io import is_volume_file, read_image
from medmodels.modalities import BY_KEY, MODALITY_KEYS, assign_modalities, check_distinct_sources
from medmodels.pipeline import PipelineOptions, run_case, write_outputs


def _add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_argument_group("what to run (default: both)")
    what.add_argument("--synthesize", action="store_true", help="synthesise the missing modalities (M2DN)")
    what.add_argument("--segment", action="store_true", help="segment the tumour (ShaSpec)")
    what.add_argument("--segment-on", choices=("acquired", "all"), default="acquired",
                      help="segment from the acquired volumes only, or acquired + synthesised")
    opts = p.add_argument_group("options")
    opts.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    opts.add_argument("--samples", type=int, default=1, help="synthesis samples; >1 also writes a std map")
    opts.add_argument("--no-cleanup", dest="cleanup", action="store_false",
                      help="keep every connected component of the segmentation")
    opts.add_argument("--cleanup", dest="cleanup", action="store_true", help=argparse.SUPPRESS)
    opts.add_argument("--seed", type=int, default=0)
    opts.add_argument("--reference", choices=MODALITY_KEYS, default=None,
                      help="modality whose grid the outputs use (default: first given in FLAIR,T1,T1c,T2 order)")
    opts.add_argument("--labels", dest="label_convention", choices=("2018", "2023"), default="2018",
                      help="label values: 2018 (ET=4) or 2023 (ET=3)")
    opts.add_argument("--seg-checkpoint", default=None, help="segmentation checkpoint (default: bundled)")
    opts.add_argument("--syn-checkpoint", default=None, help="synthesis checkpoint (default: bundled)")
    add_runtime_arguments(p)
    p.set_defaults(cleanup=True)


def _options(args: argparse.Namespace) -> PipelineOptions:
    both = not (args.synthesize or args.segment)
    return PipelineOptions(
        synthesize=args.synthesize or both, segment=args.segment or both, segment_on=args.segment_on,
        device=args.device, steps=args.steps, samples=args.samples, cleanup=args.cleanup, seed=args.seed,
        reference=args.reference, label_convention=args.label_convention,
        seg_checkpoint=args.seg_checkpoint, syn_checkpoint=args.syn_checkpoint)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="synthesise missing modalities and/or segment one case",
        description="Run M2DN synthesis and/or ShaSpec segmentation on one case. Give the modalities one by one "
                    "(--flair, --t1, --t1c, --t2; any may be left out) or a folder whose file names say the "
                    "modality (--input-dir). Outputs go to --output-dir, manifest.json last.")
    for key in MODALITY_KEYS:
        p.add_argument(f"--{key}", type=Path, default=None, metavar="PATH",
                       help=f"{BY_KEY[key].display} volume (file or DICOM folder)")
    p.add_argument("--input-dir", type=Path, default=None,
                   help="folder of volumes named by modality (e.g. *_t1ce.nii.gz, *-t2f.nii.gz)")
    p.add_argument("--output-dir", type=Path, required=True)
    _add_pipeline_arguments(p)
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "run-folder", help="run on every case folder of a dataset folder",
        description="Run on each case folder (BraTS naming, any modality may be missing); outputs go to "
                    "OUTPUT_DIR/<case>/.")
    p.add_argument("input_root", type=Path)
    p.add_argument("--output-dir", type=Path, required=True)
    _add_pipeline_arguments(p)
    p.set_defaults(func=_run_folder)

    p = sub.add_parser(
        "demo", help="the main job on a generated phantom: leave T1c out, synthesise it, segment",
        description="Write a phantom case, leave the chosen modalities out, synthesise them and segment with "
                    "the bundled weights, and print how close the results are to the phantom's truth.")
    p.add_argument("out_dir", type=Path, nargs="?", default=Path("demo_output"))
    p.add_argument("--size", type=parse_size, default=(240, 240, 155), help="phantom voxels (default BraTS's 240x240x155)")
    p.add_argument("--phantom-seed", type=int, default=7)
    p.add_argument("--drop", nargs="+", choices=MODALITY_KEYS, default=["t1c"], help="modalities to leave out")
    _add_pipeline_arguments(p)
    p.set_defaults(func=_demo)


def _inputs_from_args(args: argparse.Namespace) -> dict[str, Path]:
    given = {k: getattr(args, k) for k in MODALITY_KEYS if getattr(args, k) is not None}
    if args.input_dir is not None:
        if given:
            raise InputError("Give either --input-dir or the modalities one by one, not both.")
        if not args.input_dir.is_dir():
            raise InputError(f"--input-dir '{args.input_dir}' is not a folder.")
        files = [p for p in sorted(args.input_dir.iterdir()) if is_volume_file(p) or p.is_dir()]
        assignment = assign_modalities([p.name for p in files])
        if assignment.ambiguous:
            raise InputError(" ".join(assignment.problems()) + " Use --flair/--t1/--t1c/--t2 to choose.")
        given = {k: args.input_dir / name for k, name in assignment.assigned.items()}
        if not given:
            raise InputError(f"No file in '{args.input_dir}' is named like a modality (e.g. *_t1ce.nii.gz, *-t2f.nii.gz): "
                             "rename them or use --flair/--t1/--t1c/--t2.")
    if not given:
        raise InputError("No modality is available: provide at least one of --flair, --t1, --t1c, --t2 or --input-dir.")
    check_distinct_sources({k: str(p.resolve()) for k, p in given.items()}, what="file")
    return given


def _run(args: argparse.Namespace) -> int:
    apply_runtime_arguments(args)
    options = _options(args)
    options.check()
    paths = _inputs_from_args(args)
    images = {k: read_image(p) for k, p in paths.items()}
    result = run_case(images, options)
    manifest = write_outputs(result, args.output_dir, options, {k: str(p) for k, p in paths.items()})
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(manifest)
    return 0


def _run_folder(args: argparse.Namespace) -> int:
    apply_runtime_arguments(args)
    options = _options(args)
    options.check()
    cases = discover_cases(args.input_root, require_all=False)
    for name, case in cases.items():
        images, _ = case.load()
        result = run_case(images, options)
        print(write_outputs(result, args.output_dir / name, options, {k: str(p) for k, p in case.images.items()}))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from medmodels.demo import run_demo

    apply_runtime_arguments(args)
    options = _options(args)
    print(run_demo(args.out_dir, args.size, args.phantom_seed, tuple(args.drop), options))
    return 0
