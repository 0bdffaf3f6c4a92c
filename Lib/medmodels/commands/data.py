"""Data commands: ``phantom`` (generate a demo case), ``import-weights``."""

from __future__ import annotations

import argparse
from pathlib import Path

from medmodels.commands.common import parse_size
from medmodels.phantom import write_phantom_case
from medmodels.weights import import_checkpoint


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("phantom", help="write a seeded BraTS-like phantom case folder",
                       description="Write a deterministic BraTS-like phantom (four contrasts and labels) "
                                   "as OUT_DIR/CASE/ in BraTS naming.")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=parse_size, default=(96, 96, 64),
                   help="voxels along x, y, z, e.g. 240x240x155 (BraTS's grid) or 96 (default 96x96x64)")
    p.add_argument("--case", default=None, help="case name (default Phantom_<seed>)")
    p.add_argument("--naming", choices=("2018", "2023"), default="2018", help="BraTS file naming convention")
    p.set_defaults(func=_phantom)

    p = sub.add_parser("import-weights", help="record a checkpoint file obtained elsewhere (offline sites)",
                       description="Copy a checkpoint into a folder and record its SHA-256, after checking it "
                                   "against the hash published with it. Nothing is downloaded.")
    p.add_argument("file", type=Path)
    p.add_argument("--sha256", required=True, help="the hash published with the weights")
    p.add_argument("--into", type=Path, default=Path.home() / ".medmodels" / "weights")
    p.set_defaults(func=_import_weights)


def _phantom(args: argparse.Namespace) -> int:
    case = args.case or f"Phantom_{args.seed:03d}"
    folder = write_phantom_case(args.out_dir, case, args.size, args.seed, args.naming)
    print(folder)
    return 0


def _import_weights(args: argparse.Namespace) -> int:
    print(import_checkpoint(args.file, args.into, args.sha256))
    return 0
