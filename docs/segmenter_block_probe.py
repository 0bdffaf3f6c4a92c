"""Is the frozen segmenter a fair teacher at the block size ``train-syn --segmenter-weight`` uses?

For each block edge, the segmenter-in-the-loop loss (``medmodels.segmenter_in_the_loop``) on the
same training blocks (``syn.train.segmenter_block``, seed 0) with the true T1c, with the bundled
regression's T1c and with the T1 copied into T1c's place (no enhancement). A fair teacher scores the
true T1c lowest; the gap to the others is what the loss can teach (docs/synthesis.md,
"Segmenter-in-the-loop loss"):

    python docs/segmenter_block_probe.py ../shared/data/brats18 --split splits/brats18_shared.json
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from medmodels.datasets import read_split
from medmodels.segmenter_in_the_loop import block_loss
from medmodels.syn.inference import load_synthesizer
from medmodels.syn.train import SynTrainConfig, load_working_cases, segmenter_block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="folder of BraTS case folders (with labels)")
    parser.add_argument("--split", required=True, help="split JSON: its first 3 training cases are used")
    parser.add_argument("--sizes", default="48,64,80", help="block edges in working voxels")
    parser.add_argument("--blocks", type=int, default=6, help="blocks per size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    reg = load_synthesizer("baseline", device="cpu")
    names = read_split(args.split, required=("training",))["training"][:3]
    cases = load_working_cases(args.data, names, reg.spacing)
    for size in (int(s) for s in args.sizes.split(",")):
        cfg = SynTrainConfig(data=args.data, spacing=reg.spacing, segmenter_weight=1.0, segmenter_block=size)
        loss, rng, rows = block_loss(cfg), np.random.default_rng(0), []
        for _ in range(args.blocks):
            x0, missing, context, regions = segmenter_block(cases, cfg, rng)
            with torch.no_grad():
                regression = reg.variant.sample(reg.net, x0, missing, None, None, context)
                t1_copy = x0.clone()
                t1_copy[:, 2] = x0[:, 1]
                rows.append([float(loss(p, x0, missing, regions)) for p in (x0, regression, t1_copy)])
        true, regression, t1_copy = np.mean(rows, axis=0)
        wins = sum(r[0] < r[1] for r in rows)
        print(
            f"block {size}: loss with the true T1c {true:.3f}, the regression's {regression:.3f}, a T1 copy "
            f"{t1_copy:.3f}; the true T1c lower than the regression's in {wins} of {len(rows)} blocks"
        )


if __name__ == "__main__":
    main()
