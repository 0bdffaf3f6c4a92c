"""Pipeline commands: ``run`` (the one inference command) and ``demo``.

``run`` takes one case file by file (``--flair/--t1/--t1c/--t2``), a folder of
volumes named by modality, a BraTS case folder, or a dataset root (a folder of
case folders); ``medmodels.datasets.resolve_inputs`` says which. One case is
written into ``--out`` itself, several cases each into ``--out/<case>/``,
``manifest.json`` last. ``synthesize`` and ``segment`` are ``run`` with that
job only (unless --synthesize/--segment say otherwise), ``run-folder`` is
``run``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from medmodels.commands.common import add_runtime_arguments, apply_runtime_arguments, out_argument
from medmodels.commands.data import add_lesion_argument
from medmodels.errors import InputError
from medmodels.flags import size3
from medmodels.modalities import BY_KEY, MODALITY_KEYS
from medmodels.options import RunOptions

#: Names under which ``run`` is also known; ``synthesize``/``segment`` default to that job alone.
RUN_ALIASES = ("synthesize", "segment", "run-folder")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        aliases=list(RUN_ALIASES),
        help="synthesise missing modalities and/or segment: one case or a dataset",
        description="Run M2DN synthesis and/or ShaSpec segmentation. INPUT is a folder: a BraTS case folder, a "
        "folder of volumes named by modality (e.g. flair.nii.gz, *_t1ce.nii.gz, *-t2f.nii.gz) or a "
        "dataset root holding one such folder per case; or give one case's volumes one by one "
        "(--flair, --t1, --t1c, --t2; any may be left out). One case is written into --out, several "
        "each into OUT/<case>/, manifest.json last; a failing case of several is reported at the end "
        "and the others go on. 'synthesize' and 'segment' are 'run' doing only that job; "
        "'run-folder' is 'run'.",
    )
    p.add_argument(
        "input",
        type=Path,
        nargs="?",
        default=None,
        help="case folder, folder of named volumes, or folder of case folders",
    )
    for key in MODALITY_KEYS:
        p.add_argument(
            f"--{key}",
            type=Path,
            default=None,
            metavar="PATH",
            help=f"{BY_KEY[key].display} volume (file or DICOM folder)",
        )
    out_argument(p, "one case: its outputs and manifest.json; several: one folder per case")
    p.add_argument("--use", default=None, help="modalities to use of those present, e.g. flair,t2 (default: all)")
    RunOptions.add_arguments(p)
    add_runtime_arguments(p, device=False)
    # No --labels: the convention of the input names (resolved with the inputs in _run), 2018 otherwise.
    p.set_defaults(func=_run, label_convention=None)

    p = sub.add_parser(
        "demo",
        help="the main job on a generated phantom: leave T1c out, synthesise it, segment",
        description="Write a phantom case, leave the chosen modalities out, synthesise them and segment with "
        "the bundled weights, and print how close the results are to the phantom's truth.",
    )
    p.add_argument("out_dir", type=Path, nargs="?", default=Path("demo_output"))
    p.add_argument("--size", type=size3, default=(240, 240, 155), help="phantom voxels (default BraTS's 240x240x155)")
    p.add_argument("--phantom-seed", type=int, default=7)
    add_lesion_argument(p)
    p.add_argument("--drop", nargs="+", choices=MODALITY_KEYS, default=["t1c"], help="modalities to leave out")
    RunOptions.add_arguments(p)
    add_runtime_arguments(p, device=False)
    p.set_defaults(func=_demo)


def options_for_command(args: argparse.Namespace) -> RunOptions:
    """The run options, with the job of an alias (``synthesize``/``segment``) when no job flag is given."""
    if getattr(args, "command", None) in ("synthesize", "segment") and not (args.synthesize or args.segment):
        setattr(args, args.command, True)
    return RunOptions.from_namespace(args)


def select_modalities(cases: list[tuple[str, dict[str, Path]]], use: str | None) -> list[tuple[str, dict[str, Path]]]:
    """Keep the modalities named in ``use`` ("flair,t2"; None: all), refusing a case that lacks one."""
    if not use:
        return cases
    keys = [k.strip().lower() for k in use.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODALITY_KEYS]
    if unknown or not keys:
        raise InputError(f"--use takes modality keys from {', '.join(MODALITY_KEYS)} (got '{use}').")
    for name, files in cases:
        absent = [k for k in keys if k not in files]
        if absent:
            raise InputError(
                f"Case '{name}' has no {', '.join(BY_KEY[k].display for k in absent)} volume, asked "
                "for with --use: leave it out of --use, or add the file."
            )
    return [(name, {k: files[k] for k in MODALITY_KEYS if k in keys}) for name, files in cases]


def _label_convention(
    given: str | None, folder: Path | None, cases: list[tuple[str, dict[str, Path]]]
) -> tuple[str, str | None]:
    """The run's label convention: ``--labels`` when given, else that of the input names; and a note when guessed.

    Args:
        given: the ``--labels`` value, None when not given.
        folder: the INPUT folder, None when the files were given one by one (their names follow no convention).
        cases: the resolved inputs.
    """
    from medmodels.datasets import input_label_convention

    if given is not None:
        return given, None
    named = input_label_convention(cases) if folder is not None else "2018"
    if named == "2023":
        return (
            "2023",
            "the inputs are named in BraTS 2023 style, so the labels are too (ET = 3); --labels 2018 gives ET = 4.",
        )
    if named is None:
        return (
            "2018",
            "the cases are named in both BraTS styles: the labels are BraTS 2018 (ET = 4); --labels 2023 gives ET = 3.",
        )
    return "2018", None


def _run(args: argparse.Namespace) -> int:
    from medmodels.datasets import resolve_inputs, skipped_inputs
    from medmodels.pipeline import run_cases  # imports the models' stack: only when the command runs
    from medmodels.runtime import choose_device, cpu_warning
    from medmodels.syn.inference import DEFAULT_STEPS

    given_labels, args.label_convention = args.label_convention, args.label_convention or "2018"
    options = options_for_command(args)
    options.check()
    apply_runtime_arguments(args)
    device = choose_device(options.device)
    print(device.line(), flush=True)  # the first line: "auto" never falls back to the CPU unsaid
    cases = resolve_inputs(args.input, {k: getattr(args, k) for k in MODALITY_KEYS})
    convention, labels_note = _label_convention(given_labels, args.input, cases)
    options = dataclasses.replace(options, label_convention=convention)
    for line in skipped_inputs(cases) if args.input is not None else []:  # a modality left out is synthesised
        print(f"WARNING: {line}", file=sys.stderr, flush=True)
    if labels_note:
        print(f"note: {labels_note}", file=sys.stderr, flush=True)
    cases = select_modalities(cases, args.use)
    warning = cpu_warning(device, cases, options, DEFAULT_STEPS)
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    outcomes = run_cases(cases, args.out, options, on_case=_report_case)
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        print(
            f"ERROR: {len(failed)} of {len(outcomes)} cases failed: "
            + "; ".join(f"{o.name} ({o.error})" for o in failed),
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


def _report_case(outcome) -> None:
    """Print one case's outcome as soon as it is known: the manifest on stdout, notes and errors on stderr."""
    for note in outcome.notes:
        if note.startswith("Warning: "):  # e.g. inputs not skull-stripped: a WARNING line, not a quiet note
            print(f"WARNING: {outcome.name}: {note[len('Warning: ') :]}", file=sys.stderr)
        else:
            print(f"note: {outcome.name}: {note}", file=sys.stderr)
    if outcome.error is not None:
        print(f"ERROR in case {outcome.name}: {outcome.error}", file=sys.stderr, flush=True)
    else:
        print(outcome.manifest, flush=True)


def _demo(args: argparse.Namespace) -> int:
    from medmodels.demo import run_demo

    apply_runtime_arguments(args)
    options = RunOptions.from_namespace(args)
    print(run_demo(args.out_dir, args.size, args.phantom_seed, tuple(args.drop), options, args.lesion))
    return 0
