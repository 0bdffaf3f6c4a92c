"""Data command: ``phantom`` (generate a demo case)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medmodels.flags import size3


def add_lesion_argument(p: argparse.ArgumentParser) -> None:
    """``--lesion``: the phantom tumour's contrast (``phantom.LESION_CONTRAST``; the choices are
    written out here because importing the phantom module at parser time would import its dependencies)."""
    p.add_argument(
        "--lesion",
        choices=("bright", "real"),
        default="bright",
        help="the tumour's contrast: 'bright' (default; the self-tests' phantom), much brighter than in real "
        "cases, or 'real', inside the range of real BraTS cases as the segmentation network sees them",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="write a seeded BraTS-like phantom case folder",
        description="Write a deterministic BraTS-like phantom (four contrasts and labels) "
        "as OUT_DIR/CASE/ in BraTS naming.",
    )
    p.add_argument("out_dir", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--size",
        type=size3,
        default=(96, 96, 64),
        help="voxels along x, y, z, e.g. 240x240x155 (BraTS's grid) or 96 (default 96x96x64)",
    )
    p.add_argument("--case", default=None, help="case name (default Phantom_<seed>)")
    p.add_argument("--naming", choices=("2018", "2023"), default="2018", help="BraTS file naming convention")
    p.add_argument("--head", action="store_true", help="skull, scalp and fat around the brain (not skull-stripped)")
    p.add_argument(
        "--misaligned",
        action="store_true",
        help="each contrast on its own thick-slice axial grid with a known rigid misalignment (up to 10 deg, 15 mm), recorded in CASE/transforms.json; labels on the FLAIR grid",
    )
    p.add_argument("--slice-mm", type=float, default=5.0, help="slice thickness with --misaligned (default 5)")
    add_lesion_argument(p)
    p.set_defaults(func=_phantom)


def _phantom(args: argparse.Namespace) -> int:
    from medmodels.phantom import write_phantom_case  # imports torch: only when the command runs

    case = args.case or f"Phantom_{args.seed:03d}"
    folder = write_phantom_case(
        args.out_dir, case, args.size, args.seed, args.naming, args.head, args.misaligned, args.slice_mm, args.lesion
    )
    print(folder)
    return 0
