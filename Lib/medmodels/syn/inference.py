"""Whole-volume synthesis of missing modalities with a trained M2DN (or the regression baseline).

    from medmodels.region_condition import load_conditioned_synthesizer
    syn = load_conditioned_synthesizer()          # bundled M2DN, its region map from the default segmenter
    out = syn.synthesize(images, mask)            # the mean of 4 samples (DEFAULT_SAMPLES), seed 0
    mean, std = out["t1c"]                        # Images on the input grid, input intensity scale

Steps: the case goes to the working grid (``medmodels.syn.data.to_working_case``,
through ``medmodels.working_grid.WorkingGrid``: brain mask, z-score per
modality, resampling to the checkpoint's spacing, crop to the brain); every
axial slice with brain goes through the sampler in batches (DDIM with
``steps`` steps; available modalities held at their inputs at every step);
with several samples, their mean and per-voxel standard deviation; back to
the grid of the given images (``GridChain.inverse``, "intensity"), 0 outside the brain, and
from z-scores to an intensity scale estimated from the case's available
modalities (a missing modality has no intensities of its own to copy; see
``medmodels.syn.train.intensity_reference``). A network conditioned on the tumour
regions (the bundled M2DN since stage 6) also reads their map, which the
synthesizer's ``regions`` source gives on the input grid (a segmenter's
probabilities, ``medmodels.region_condition``) and which goes to the working
grid like an image (``syn.conditioning``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from medmodels.device import resolve_device
from medmodels.errors import InputError
from medmodels.grid_chain import GridChain
from medmodels.image import Image
from medmodels.modalities import MODALITY_KEYS, AvailabilityMask, resolve_mask
from medmodels.nets.synthesis import BLEND_KIND, SamplerAndMean, build_synthesis_net
from medmodels.normalisation import Normalizer
from medmodels.options import DEFAULT_SAMPLES, samples_problem
from medmodels.progress import progress
from medmodels.syn import diffusion as D
from medmodels.syn.conditioning import RegionSource, bind, condition_channels
from medmodels.syn.data import WorkingCase, slice_context, to_preparation_grid, to_working_case
from medmodels.syn.variants import variant
from medmodels.weights import load_network, resolve_checkpoint

BUNDLED_NAME = "m2dn_brats18"
BASELINE_NAME = "m2dn_regression_brats18"
#: The bundled blend of the two (``medmodels.syn.blend``): the word "ensemble", as for segmentation.
ENSEMBLE_NAME = "m2dn_blend_brats18"
#: What ``run``, ``synthesize`` and the Slicer module synthesise with when no checkpoint is given: the blend,
#: ahead of M2DN alone at the input grid on the validation cases (docs/synthesis.md, "M2DN averaged with the
#: regression"). ``load_synthesizer``'s None stays the bundled M2DN (training, ``evaluate-syn``).
DEFAULT_SYNTHESIZER = "ensemble"
#: DDIM steps used when ``steps=None``. Chosen with ``medmodels bench-syn`` and ``evaluate-syn``
#: (docs/synthesis.md): with the bundled weights, 2 steps scored higher PSNR and SSIM than 10 on all
#: 14 patterns and higher mean SSIM than the full-length DDPM sampler in the sweep, at a fifth of the time.
DEFAULT_STEPS = 2
#: What a conditioned synthesizer without a region source says before it synthesises without a map.
NO_REGIONS_WARNING = (
    "This synthesis model reads a map of the tumour regions from a segmenter, and none was given: it "
    "synthesises without one, with less enhancement. Load it with "
    "medmodels.region_condition.load_conditioned_synthesizer (the commands and the Slicer module do), "
    "or pass regions= to Synthesizer."
)
#: Slices per network call; bounds memory (a BraTS slice is about 96 x 80 at 2 mm, 1.6 times that per side at 1.25 mm).
SLICE_BATCH = 96


def estimate_normalizer(key: str, normalizers: Mapping[str, Normalizer], reference: Mapping) -> Normalizer:
    """The intensity scale of a missing modality from the available ones' (see module docstring)."""
    m = MODALITY_KEYS.index(key)
    avail = [(MODALITY_KEYS.index(k), n) for k, n in normalizers.items()]
    if not avail:
        raise InputError("No available modality to take an intensity scale from.")
    if reference:
        log_mean = np.mean([np.log(max(n.mean, 1e-6)) + reference["d_log_mean"][m][a] for a, n in avail])
        log_std = np.mean([np.log(max(n.std, 1e-6)) + reference["d_log_std"][m][a] for a, n in avail])
        mean, std = float(np.exp(log_mean)), float(np.exp(log_std))
        return Normalizer(mean + reference["z_low"][m] * std, mean + reference["z_high"][m] * std, mean, std)
    n = [n for _, n in avail]  # no reference in the checkpoint: the available modalities' average scale
    return Normalizer(*(float(np.mean([getattr(x, f) for x in n])) for f in ("low", "high", "mean", "std")))


class Synthesizer:
    """A loaded synthesis model.

    Args:
        net: the ``M2DNet`` (a ``MeanAndFlow`` for a posterior-mean flow).
        config: the checkpoint's config (``kind``, ``net``, ``diffusion``, ``spacing``, ``intensity_reference``).
        device: where the network runs.
        regions: for a network conditioned on the tumour regions (``syn.conditioning``), what gives
            their map for a case (a segmenter, from the layer above: ``medmodels.region_condition``);
            not used by other networks.
    """

    def __init__(
        self, net: torch.nn.Module, config: Mapping, device: torch.device, regions: RegionSource | None = None
    ) -> None:
        self.net = net.to(device).eval()
        self.regions = regions
        self.config = dict(config)
        self.device = device
        self.kind = config.get("kind", "m2dn")
        self.diffusion = D.DiffusionConfig(**config["diffusion"])
        self.variant = variant(self.config)
        self.spacing = tuple(float(s) for s in config["spacing"])

    @property
    def context(self) -> int:
        """Neighbouring slices the network sees on each side (0 = a 2D network)."""
        return int(self.config["net"].get("context", 0))

    def slices(self, volume: np.ndarray, zs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(4, Z, Y, X)`` z-scores -> the network's inputs for slices ``zs``:
        ``(n, 4, H, W)`` and their neighbours ``(n, 4, 2k, H, W)`` (None for a 2D network)."""
        x = torch.from_numpy(np.ascontiguousarray(volume[:, zs].transpose(1, 0, 2, 3)))
        return x, (torch.from_numpy(slice_context(volume, zs, self.context)) if self.context else None)

    @property
    def conditioned(self) -> bool:
        """Whether the network reads a map of the tumour regions (``syn.conditioning``)."""
        return condition_channels(self.config) > 0

    def case_condition(
        self, images: Mapping[str, Image], mask: AvailabilityMask, case: WorkingCase, chain: GridChain | None = None
    ) -> np.ndarray | None:
        """The region map of a case on its working crop, ``(3, Z, Y, X)`` float32; None for a network
        without a condition, or (with a warning) for a conditioned one without ``regions``, which then
        synthesises as it learned to without a map (condition dropout) and draws less enhancement.

        Args:
            images: the acquired modalities the case was made from (on one grid).
            mask: which of them are acquired.
            case: ``images`` on the working grid (``to_working_case``).
            chain: as for ``synthesize``.
        """
        if not self.conditioned:
            return None
        if self.regions is None:
            warnings.warn(NO_REGIONS_WARNING, stacklevel=2)
            return None
        probabilities = self.regions({k: images[k] for k in mask.keys}, mask, chain)
        if probabilities is None:  # the source's word for no map (``conditioning.no_regions``)
            return None
        return (case.grid.forward(probabilities, "linear") * case.brain[None]).astype(np.float32)

    @staticmethod
    def condition_slices(condition: np.ndarray | None, zs: np.ndarray) -> torch.Tensor | None:
        """``(3, Z, Y, X)`` region map -> ``(n, 3, H, W)`` for slices ``zs`` (None stays None)."""
        if condition is None:
            return None
        return torch.from_numpy(np.ascontiguousarray(condition[:, zs].transpose(1, 0, 2, 3)))

    @property
    def default_steps(self) -> int:
        return int(self.config.get("default_steps", DEFAULT_STEPS))

    def draws(self, samples: int) -> int:
        """How many of ``samples`` need running: all for a sampler, one for a deterministic model
        (the regression), whose draws would all be the same."""
        return samples if self.variant.stochastic else 1

    def _check_steps(self, steps: int | None) -> int:
        steps = self.default_steps if steps is None else int(steps)
        if not 1 <= steps <= self.diffusion.num_train_timesteps:
            raise InputError(f"steps must be between 1 and {self.diffusion.num_train_timesteps}, got {steps}.")
        return steps

    @torch.no_grad()
    def predict_slices(
        self,
        x: torch.Tensor,
        missing: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        sampler: str = "ddim",
        context: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Synthesise slices.

        Args:
            x: ``(B, 4, H, W)`` z-scores; missing channels are ignored.
            context: ``(B, 4, 2k, H, W)`` z-scores of the neighbouring slices (``slices``), for a 2.5D network.
            condition: ``(B, 3, H, W)`` the region map (``condition_slices``), for a conditioned network.
            missing: ``(B, 4)`` float, 1 = missing.
            steps: DDIM steps (None = default); ignored by the regression baseline and by ``sampler="ddpm"``.
            generator: a ``torch.Generator`` on ``self.device``.
            sampler: "ddim" or "ddpm" (full length, T steps).

        Returns:
            ``(B, 4, H, W)`` z-scores on the CPU; available channels equal to the input.
        """
        xs, ms = x.to(self.device), missing.to(self.device)
        cs = context.to(self.device) if context is not None else None
        net = bind(self.net, condition.to(self.device) if condition is not None else None)
        # steps None = the full-length DDPM chain; the regression baseline ignores steps
        steps = None if sampler == "ddpm" else self._check_steps(steps)
        return self.variant.sample(net, xs, ms, steps, generator, cs).float().cpu()

    def synthesize_case(
        self,
        case: WorkingCase,
        mask: AvailabilityMask,
        steps: int | None = None,
        samples: int = DEFAULT_SAMPLES,
        seed: int = 0,
        desc: str = "Synthesising",
        condition: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Sample every brain slice of a prepared case (``condition``: its region map on the working
        crop, ``case_condition``, for a conditioned network).

        Returns:
            ``mean (4, Z, Y, X)`` z-scores on the working crop (available
            channels = inputs, 0 outside the brain) and the per-voxel standard
            deviation over ``samples`` (None for one sample; zeros for a
            deterministic model, which is run once).
        """
        steps = self._check_steps(steps)
        if samples_problem(samples):
            raise InputError(samples_problem(samples))
        zs = case.brain_slices()
        x, context = self.slices(case.image, zs)  # (n, 4, H, W), neighbours (n, 4, 2k, H, W) or None
        cond = self.condition_slices(condition, zs)
        missing = torch.as_tensor(mask.missing_vector())[None].expand(len(zs), -1)
        draws = []
        runs = self.draws(samples)
        batches = [(k, i) for k in range(runs) for i in range(0, len(zs), SLICE_BATCH)]
        gens = [torch.Generator(device=self.device).manual_seed(seed * 1000 + k) for k in range(runs)]
        outs: list[list[torch.Tensor]] = [[] for _ in range(runs)]
        for k, i in progress(batches, desc=desc):
            part = slice(i, i + SLICE_BATCH)
            ctx = context[part] if context is not None else None
            cnd = cond[part] if cond is not None else None
            outs[k].append(self.predict_slices(x[part], missing[part], steps, gens[k], context=ctx, condition=cnd))
        for k in range(runs):
            draws.append(torch.cat(outs[k]).permute(1, 0, 2, 3).numpy())
        stack = np.stack(draws)  # (runs, 4, n, H, W)
        brain = case.brain[zs][None]
        mean = np.zeros_like(case.image)
        mean[:, zs] = stack.mean(0) * brain
        std = None
        if samples > 1:
            std = np.zeros_like(case.image)
            std[:, zs] = stack.std(0) * brain
        return mean, std

    def synthesize(
        self,
        images: Mapping[str, Image],
        mask: AvailabilityMask | None = None,
        steps: int | None = None,
        samples: int = DEFAULT_SAMPLES,
        seed: int = 0,
        chain: GridChain | None = None,
    ) -> dict[str, tuple[Image, Image | None]]:
        """Synthesise every modality ``mask`` marks missing.

        Args:
            images: ``{key: Image}`` of the acquired modalities, one grid, raw intensities.
            mask: availability (True = acquired); default: the keys of ``images``.
            steps: DDIM steps (None = the default).
            samples: samples per case, their mean the output (default ``DEFAULT_SAMPLES``, what ``medmodels
                run`` and the Slicer module use); with more than one, a std map is returned too.
            seed: makes the result reproducible.
            chain: the case's ``GridChain`` when ``images`` come from the
                preparation step (on its preparation grid); None: their own grid.

        Returns:
            ``{missing key: (mean Image, std Image or None)}``, float32 on the
            grid of ``images``, in the input case's intensity scale; 0 outside the brain.
        """
        mask = resolve_mask(images, mask)
        if mask.is_complete:
            return {}
        given = {k: images[k] for k in mask.keys}
        case = to_working_case(given, self.spacing)
        condition = self.case_condition(given, mask, case, chain)
        mean, std = self.synthesize_case(case, mask, steps, samples, seed, condition=condition)
        brain, reference = case.grid.input_brain, case.grid.reference
        result: dict[str, tuple[Image, Image | None]] = {}
        for key in mask.missing_keys:
            c = MODALITY_KEYS.index(key)
            norm = estimate_normalizer(key, case.normalizers, self.config.get("intensity_reference", {}))
            mean_img = reference.with_array(norm.invert(to_preparation_grid(case, mean[c], chain), brain))
            std_img = None
            if std is not None:
                std_img = reference.with_array(
                    (to_preparation_grid(case, std[c], chain) * norm.std).clip(min=0).astype(np.float32)
                )
            result[key] = (mean_img, std_img)
        return result


class BlendedSynthesizer(Synthesizer):
    """A loaded blend (``medmodels.syn.blend``): synthesises like ``Synthesizer``, its output ``w`` times
    the mean of M2DN's samples plus ``1 - w`` times the regression's prediction (z-scores), and its std map
    ``w`` times M2DN's (the regression is deterministic).

    Args:
        net: the ``SamplerAndMean`` of a blend checkpoint.
        config: its config (``kind: "blend"``; ``blend``: ``weight``, the parts' kinds and SHA-256).
        device, regions: as for ``Synthesizer``; the map is read once per case and given to both parts.
    """

    def __init__(
        self, net: SamplerAndMean, config: Mapping, device: torch.device, regions: RegionSource | None = None
    ) -> None:
        blend = config["blend"]
        parts = {k: v for k, v in config.items() if k != "blend"}
        super().__init__(net, {**parts, "kind": blend["sampler_kind"]}, device, regions)
        self.config, self.kind = dict(config), BLEND_KIND
        self.weight = float(blend["weight"])  # checked in [0, 1] when the blend was written (syn.blend)
        # the parts never call a region source: the blend gives both the map it read (``condition``)
        self.sampler_part = Synthesizer(net.sampler, {**parts, "kind": blend["sampler_kind"]}, device)
        self.mean_part = Synthesizer(net.mean, {**parts, "kind": blend["mean_kind"]}, device)

    def _mix(self, sampled, regression):
        return self.weight * sampled + (1.0 - self.weight) * regression  # available channels: equal in both

    @torch.no_grad()
    def predict_slices(
        self,
        x: torch.Tensor,
        missing: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        sampler: str = "ddim",
        context: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One blended draw of slices (``Synthesizer.predict_slices``); ``evaluate-syn``'s working grid
        scores these. Whole cases go through ``synthesize_case``, which runs the regression once."""
        sampled = self.sampler_part.predict_slices(x, missing, steps, generator, sampler, context, condition)
        regression = self.mean_part.predict_slices(x, missing, None, None, "ddim", context, condition)
        return self._mix(sampled, regression)

    def synthesize_case(
        self,
        case: WorkingCase,
        mask: AvailabilityMask,
        steps: int | None = None,
        samples: int = DEFAULT_SAMPLES,
        seed: int = 0,
        desc: str = "Synthesising",
        condition: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``Synthesizer.synthesize_case`` of the blend: M2DN's ``samples`` and one regression pass."""
        mean, std = self.sampler_part.synthesize_case(case, mask, steps, samples, seed, desc, condition)
        regression, _ = self.mean_part.synthesize_case(case, mask, None, 1, seed, f"{desc} (regression)", condition)
        return self._mix(mean, regression), (None if std is None else self.weight * std)


def synthesizer_file(checkpoint: str | Path | None = None) -> Path:
    """The file a synthesis checkpoint reference stands for: None or "bundled" (the bundled M2DN),
    "baseline" (the bundled regression), "ensemble" (the bundled blend of the two) or a path."""
    return resolve_checkpoint(checkpoint, BUNDLED_NAME, BASELINE_NAME, ENSEMBLE_NAME)


def load_synthesizer(
    checkpoint: str | Path | None = None, device: str = "auto", regions: RegionSource | None = None
) -> Synthesizer:
    """Load a synthesizer: ``None`` = the bundled M2DN weights, ``"baseline"`` =
    the bundled regression baseline, ``"ensemble"`` = the bundled blend of the two (``run``'s default,
    ``DEFAULT_SYNTHESIZER``), else a path to a ``.pt`` with its ``.json``
    record beside it (its SHA-256 is checked before loading). ``regions``: as for
    ``Synthesizer`` (``medmodels.region_condition.load_conditioned_synthesizer`` gives one).
    A blend checkpoint (``medmodels.syn.blend``) gives a ``BlendedSynthesizer``."""
    net, config = load_network(
        synthesizer_file(checkpoint),
        BUNDLED_NAME,
        BASELINE_NAME,
        "synthesis",
        ("net", "diffusion", "spacing"),
        build_synthesis_net,
    )
    if config.get("kind") == BLEND_KIND:
        return BlendedSynthesizer(net, config, resolve_device(device), regions)
    return Synthesizer(net, config, resolve_device(device), regions)
