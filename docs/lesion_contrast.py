"""How bright each tumour region is, per modality, in real cases and in the self-test phantoms.

Prints the mean brain z-score inside the enhancing tumour, the edema and the
necrosis, per modality, on the segmentation network's own input (``seg.data.lesion_zscores``
at the bundled ShaSpec's 2.5 mm grid), one line per case of a BraTS-layout
folder, then the two phantoms the self-tests segment, with each lesion style of
``phantom.LESION_CONTRAST`` (docs/segmentation.md, "Why four cases move the network
off the phantom"):

    python docs/lesion_contrast.py ../shared/data/brats18
"""

from __future__ import annotations

import argparse

import numpy as np
from medmodels.datasets import discover_cases
from medmodels.phantom import LESION_STYLES, make_phantom
from medmodels.seg.data import lesion_zscores

#: The bundled ShaSpec's working spacing (mm).
SPACING = (2.5, 2.5, 2.5)
#: The self-test phantoms: the module's (64x64x40, seed 11) and the pipeline tests' (96x96x64, seed 2).
PHANTOMS = (((96, 96, 64), 2), ((64, 64, 40), 11))


def line(name: str, means: dict[str, dict[str, float]]) -> str:
    cells = [f"{r} {k} {v:5.2f}" for r, by_key in means.items() for k, v in by_key.items()]
    return f"{name:28s} " + " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="folder of BraTS case folders (with labels)")
    args = parser.parse_args()
    for name, case in sorted(discover_cases(args.data).items()):
        images, labels = case.load()
        print(line(name, lesion_zscores(images, labels, SPACING)))
    for lesion in LESION_STYLES:
        for size, seed in PHANTOMS:
            phantom = make_phantom(size, seed=seed, lesion=lesion)
            name = f"phantom {lesion} {'x'.join(map(str, size))} s{seed}"
            print(line(name, lesion_zscores(phantom.images, phantom.labels, SPACING)))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
