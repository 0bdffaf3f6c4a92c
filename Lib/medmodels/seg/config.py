"""The options of ``train-seg``, spelled once: ``TrainConfig`` and the words its options take.

Every field is declared with ``medmodels.flags.option``: its flag, default and
help text are this file's (``TrainConfig.add_arguments`` / ``from_namespace``).
The defaults are those the bundled weights were trained with where the weights
fix them (architecture, spacing, patch; ``weights/shaspec_brats18.md``), and
the official ShaSpec code's for the sampling recipe.

Torch-free: ``medmodels --help`` builds ``train-seg``'s parser from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from medmodels.flags import option, size3, spacing3
from medmodels.loop_config import LoopConfig

#: Segmentation networks: ShaSpec, or the baseline 3D U-Net (zero-filled missing inputs).
ARCHS = ("shaspec", "unet3d")
#: Where a tumour patch is centred: a region drawn among ET, TC and WT, or the whole tumour.
FG_REGIONS = ("wt", "regions")
#: How modalities are dropped: keep k ~ U{1..4}, or a subset drawn uniformly among the 15.
MODALITY_DROPS = ("k", "subsets")
#: Training augmentation strengths (``medmodels.seg.augment``).
AUGMENTATIONS = ("none", "light", "nnunet")


@dataclass(kw_only=True)
class TrainConfig(LoopConfig):
    """Options of ``train-seg``: the loop's (``medmodels.loop_config.LoopConfig``) and these.

    Each field's meaning is its ``help`` (the text of its flag in ``--help``); the
    sampling options are ``medmodels.seg.sampling.PatchRecipe``'s, which documents each.
    """

    data: str = option("", "folder of BraTS case folders (with labels)", positional=True)
    split: str | None = option(
        None, "JSON split file with 'training' and 'validation' case lists (default: all cases train)", type=str
    )
    arch: str = option("shaspec", "shaspec, or unet3d: the baseline (zero-filled missing inputs)", choices=ARCHS)
    width: int = option(8, "channels of the first level (doubling per level)")
    depth: int = option(4, "resolution levels")
    weight_std: bool = option(False, "weight-standardised convolutions (the official ShaSpec code's)")
    skip_fusion: str = option(
        "mean",
        "ShaSpec's skip connections: mean of the modalities' shared features (the bundled weights'), or concat: "
        "the four side by side, reduced by a 1x1x1 convolution (the official code's); --init from a mean "
        "checkpoint grows into concat exactly",
        choices=("mean", "concat"),
    )
    spacing: tuple = option((2.5, 2.5, 2.5), "working spacing in mm: S or SXxSYxSZ", type=spacing3)
    patch_size: tuple = option(
        (40, 40, 40),
        "training patch (z, y, x) in working voxels, also the inference window",
        flag="--patch",
        type=size3,
    )
    dao_weight: float = option(0.1, "weight of the DAO (L1 alignment) loss")
    dco_weight: float = option(0.02, "weight of the DCO (domain classification) loss")
    fg_prob: float = option(0.5, "probability that a patch is centred on tumour")
    fg_regions: str = option(
        "regions",
        "tumour patches centred on a voxel of ET, TC or WT drawn in turn (regions, official) or of WT (wt)",
        choices=FG_REGIONS,
    )
    modality_drop: str = option(
        "k",
        "k: keep k ~ U{1..4} modalities (official code); subsets: uniform over the 15 subsets",
        choices=MODALITY_DROPS,
    )
    full_modality_fraction: float = option(
        0.44,
        "first fraction of the iterations with all four modalities (0.44: the official 80k of 180k; use 0 when "
        "continuing from trained weights)",
    )
    augment: str = option(
        "nnunet",
        "nnunet: rotation, scaling, noise, blur, brightness, contrast, low resolution, gamma, mirroring; light: "
        "flips and intensity scale/shift (the first weights' recipe); none",
        choices=AUGMENTATIONS,
    )
    bias_field: float = option(
        0.0,
        "probability that a patch also gets a smooth multiplicative intensity field (an uncorrected coil's bias; "
        "MONAI RandBiasField, degree 3, coefficients +-0.1) on the raw intensities its z-scores stand for "
        "(default 0: none)",
    )
    tumour_mix: float = option(
        0.0,
        "probability that a patch gets another training case's tumour, with 0-2 voxels of its surrounding "
        "tissue, pasted in at its centre (CarveMix/TumorCP-style; default 0: none)",
    )
    subset: str | None = option(
        None,
        "fixed modality subset for a dedicated model, e.g. flair,t1c or 1010 (default: random dropping)",
        type=str,
    )
    validate: bool = option(
        True, "skip the Dice on the split's validation cases at every --val-every (default: scored)"
    )
    max_cases: int | None = option(
        None, "use only the first cases of each list (tests, quick runs)", type=int, hidden=True
    )
