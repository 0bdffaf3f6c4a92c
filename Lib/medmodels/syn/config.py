"""The options of ``train-syn``, spelled once: ``SynTrainConfig`` and the words its options take.

Every field is declared with ``medmodels.flags.option``: its flag, default and
help text are this file's (``SynTrainConfig.add_arguments`` /
``from_namespace``). The defaults of the architecture and the loss are the
bundled models' (``weights/m2dn_brats18.md``), with one exception:
``--condition`` is "none" (the paper's network, and the bundled regression's),
while the bundled M2DN reads the region map since its stage 6, so continuing it
takes ``--init bundled --condition regions`` (without it the trainer refuses
and names the difference).

Torch-free: ``medmodels --help`` builds ``train-syn``'s parser from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from medmodels.checkpoint_ref import CheckpointRef, checkpoint_argument
from medmodels.flags import floats, ints, option, override
from medmodels.loop_config import LoopConfig

#: Synthesis variants (the keys of ``medmodels.syn.variants.VARIANTS``): M2DN, the same
#: network trained as a regression without diffusion, or a flow refining that regression's
#: prediction (posterior-mean rectified flow).
MODELS = ("m2dn", "regression", "pmrf")
#: What a synthesis network is conditioned on besides the modalities (``medmodels.syn.conditioning``).
CONDITIONS = ("none", "regions")


@dataclass(kw_only=True)
class SynTrainConfig(LoopConfig):
    """Options of ``train-syn``: the loop's (``medmodels.loop_config.LoopConfig``) and these.

    Each field's meaning is its ``help`` (the text of its flag in ``--help``).
    """

    data: str = option("", "folder of BraTS case folders", positional=True)
    split: str | None = option(
        None, "split JSON with 'training' and 'validation' case lists (default: all cases train)", type=str
    )
    model: str = option(
        "m2dn",
        "m2dn; regression: the same network without diffusion (the baseline); or pmrf: a flow that refines "
        "the prediction of a trained regression (--mean-checkpoint); --init bundled then starts the flow from "
        "the bundled M2DN",
        choices=MODELS,
    )
    mean_checkpoint: CheckpointRef = option(
        CheckpointRef("baseline"),
        "pmrf only: the regression whose prediction the flow refines, frozen: 'baseline' (the bundled "
        "regression) or its .pt; its network options must be this run's",
        type=checkpoint_argument,
        metavar="baseline|PATH",
    )
    flow_noise: float = option(
        0.1, "pmrf only: std (diffusion space) of the noise added to the mean where the flow starts"
    )
    spacing: tuple = option((2.0, 2.0, 2.0), "working spacing in mm, e.g. 2 or 2,2,2", type=floats)
    encoder_channels: int = option(8, "channels of each modality's encoder")
    channels: tuple = option((24, 48, 96), "fusion U-Net widths, e.g. 24,48,96", type=ints)
    emb_dim: int = option(64, "width of the timestep and mask embedding")
    context: int = option(1, "neighbouring slices the network sees on each side (2.5D; 0 = the paper's 2D network)")
    refine_blocks: int = option(1, "full-resolution residual blocks before the output (M2DNet)")
    tumour_weight: float = option(
        4.0,
        "loss weight 1 + W on tumour pixels of the training labels (labels 1, 2, 4), 1 elsewhere; 0 = the "
        "paper's plain mean. A training option only: the network and its inference do not depend on it",
    )
    region_weight: float = option(
        0.0,
        "weight of the region-mean loss: the squared error of the mean intensity of each tumour region "
        "(labels 1, 2, 4 of the training labels) in each missing modality, which rewards putting the "
        "enhancement inside the enhancing tumour; 0 = none. A training option only",
    )
    ssim_weight: float = option(
        0.0,
        "weight of the SSIM loss: 1 - SSIM of each missing modality's slice (MONAI's, window 11, sigma 1.5, as "
        "evaluate-syn scores), which rewards the local contrast and structure the squared error's blur gives "
        "up; 0 = none. A training option only",
    )
    adversarial_weight: float = option(
        0.0,
        "weight of the adversarial loss: a 2D PatchGAN discriminator, trained in the same step, judges the "
        "synthesised missing modalities beside the available ones (least-squares GAN), which rewards sharp, "
        "real-looking detail (the enhancing rim) over the blur the squared error settles for; 0 = none. A "
        "training option only: the discriminator is kept in last.pt for --resume, never in model.pt",
    )
    segmenter_weight: float = option(
        0.0,
        "weight of the segmenter-in-the-loop loss: each step also synthesises a block of slices around the "
        "enhancing tumour with T1c missing, and a frozen segmenter (--segmenter) reads it with the acquired "
        "modalities; its Dice + BCE on the enhancing tumour and the core, against the labels, trains the "
        "network to put the enhancement where a segmenter finds it; 0 = none. A training option only",
    )
    segmenter: CheckpointRef = option(
        CheckpointRef("bundled"),
        "with --segmenter-weight: the frozen segmenter, 'bundled' (ShaSpec), 'baseline' (the U-Net) or a "
        ".pt; its working spacing must be a whole multiple of --spacing",
        type=checkpoint_argument,
        metavar="bundled|baseline|PATH",
    )
    segmenter_block: int = option(
        64,
        "with --segmenter-weight: edge of the block in working voxels (slices, and pixels in plane); a "
        "multiple of 8 segmenter voxels",
    )
    tumour_mix: float = option(
        0.0,
        "probability that a training slice gets another training case's tumour, in all four modalities with "
        "0-2 pixels of its tissue, pasted at a random place in its brain (tumour mixing, as train-seg's); "
        "0 = never. A training option only",
    )
    condition: str = option(
        "none",
        "regions: the network also reads a map of the tumour regions (ET, TC, WT), from the training labels "
        "softened to look like a segmenter's probabilities; at inference the segmenter's on the acquired "
        "modalities (medmodels.syn.conditioning). none: the paper's network. m2dn and regression only",
        choices=CONDITIONS,
    )
    condition_dropout: float = option(
        0.3, "with --condition regions: probability that a training slice's map is zeros (no segmenter)"
    )
    augment_degrees: float = option(
        0.0,
        "random in-plane rotation (+- degrees) of each training slice with its neighbours and labels; "
        "0 = none (validation is never augmented)",
    )
    augment_scale: float = option(
        0.0, "random in-plane scaling (1 +- scale) of each training slice with its neighbours and labels; 0 = none"
    )
    num_train_timesteps: int = option(1000, "T of the forward process", flag="--timesteps")
    data_scale: float = option(0.5, "diffusion-space value = z-score * data_scale")
    patch_size: tuple = option((96, 96), "training slice canvas H,W at the working spacing", flag="--patch", type=ints)
    batch_size: int = override(LoopConfig, "batch_size", 8)
    iterations: int = override(LoopConfig, "iterations", 2000)
    warmup: int = override(LoopConfig, "warmup", 50)
    max_cases: int | None = option(None, "use only the first cases of each list (tests, quick runs)", type=int)
    val_slices: int = option(32, "slices in the fixed validation batch")
