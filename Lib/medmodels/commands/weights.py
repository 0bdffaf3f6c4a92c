"""Weights commands: ``export`` (a trained model as a bundled checkpoint, several segmentation
models as one ensemble checkpoint, or an M2DN and a regression as one blend) and ``import-weights``
(a checkpoint obtained elsewhere)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medmodels.commands.common import out_argument
from medmodels.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained model (train-seg or train-syn) as a bundled checkpoint; several segmentation "
        "models as one ensemble",
        description="Copy the weights of a training run (RUN/model.pt, or RUN/best.pt of --keep-best; weights + "
        "config only) to "
        "OUT/NAME.pt with its JSON record (SHA-256, training summary); segmentation and "
        "synthesis models alike. Given two or more segmentation models, write one ensemble checkpoint that runs "
        "them all on the same input and averages their probabilities (they must share the working spacing, "
        "patch, modalities and regions); it has no threshold yet: choose one with evaluate-seg --calibrate "
        "--checkpoint OUT/NAME.pt --write OUT/NAME.pt on cases no member trained on. With --blend W, an M2DN and a "
        "regression become one synthesis checkpoint whose output is their weighted mean.",
    )
    p.add_argument(
        "model",
        nargs="+",
        help="model.pt written by train-seg/train-syn, or the run's output folder (its model.pt), or its best.pt "
        "(--keep-best: the record then gives the chosen iteration, its score and the compute up to it); "
        "two or more: the members of a segmentation ensemble, each also 'bundled' (ShaSpec) or 'baseline'",
    )
    p.add_argument("--name", required=True, help="bundled name, e.g. shaspec_brats18 or m2dn_brats18")
    out_argument(p, "NAME.pt and NAME.json; default: the package's weights folder", required=False)
    p.add_argument(
        "--blend",
        type=float,
        metavar="W",
        default=None,
        help="write a synthesis blend of two models, an M2DN (first) and a regression (second): the output is "
        "W times the mean of M2DN's samples plus (1 - W) times the regression's prediction (docs/synthesis.md); "
        "the words 'bundled' and 'baseline' then mean the bundled M2DN and regression",
    )
    p.add_argument(
        "--float32",
        dest="half",
        action="store_false",
        help="keep float32 storage (default: float16, half the size, loaded back as float32)",
    )
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "import-weights",
        help="record a checkpoint file obtained elsewhere (offline sites)",
        description="Copy a checkpoint into a folder and record its SHA-256, after checking it "
        "against the hash published with it. Nothing is downloaded.",
    )
    p.add_argument("file", type=Path)
    p.add_argument("--sha256", required=True, help="the hash published with the weights")
    out_argument(
        p,
        "the checkpoint and its record; default ~/.medmodels/weights",
        required=False,
        default=Path.home() / ".medmodels" / "weights",
    )
    p.set_defaults(func=_import_weights)


def _export(args: argparse.Namespace) -> int:
    if args.blend is not None:
        from medmodels.syn.blend import write_blend  # imports torch: only when the command runs

        if len(args.model) != 2:
            raise InputError(
                f"--blend averages two synthesis models, got {len(args.model)}: give one M2DN, then one regression."
            )
        record = write_blend(args.model[0], args.model[1], args.name, args.out, args.blend, args.half)
    elif len(args.model) > 1:  # write_ensemble refuses synthesis models, naming --blend
        from medmodels.seg.ensemble import write_ensemble  # imports torch: only when the command runs

        record = write_ensemble(args.model, args.name, args.out, args.half)
    else:
        from medmodels.training import export_checkpoint

        record = export_checkpoint(Path(args.model[0]), args.name, args.out, args.half)
    print(json.dumps({k: record[k] for k in ("file", "sha256", "size_bytes")}))
    return 0


def _import_weights(args: argparse.Namespace) -> int:
    from medmodels.weights import import_checkpoint  # imports torch: only when the command runs

    print(import_checkpoint(args.file, args.out, args.sha256))
    return 0
