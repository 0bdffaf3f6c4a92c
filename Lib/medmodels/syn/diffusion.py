"""Modality-masked diffusion: forward process, training losses, samplers.

Tensors are ``(B, M, H, W)`` slices. The variants (``Diffusion``,
``Regression``) take and give them in *data space*, brain z-scores
(``medmodels.normalisation.Normalizer``), and own the move to and from the
*diffusion space* the functions below work in: z-score times the checkpoint's
``data_scale`` (0.5 by default, so the brain's intensities have about the
spread of images in [-1, 1] for which the standard noise schedule was
designed). ``missing`` is ``(B, M)`` float, 1 = missing.

The noise schedule and the reverse steps are MONAI's ``DDPMScheduler`` and
``DDIMScheduler`` with ``prediction_type="sample"`` (the network predicts x0,
as in the paper). What this file adds is the paper's masking: only missing
modalities are noised, and available ones are put back to their clean values
after every reverse step.

Networks with slice context (2.5D) take the neighbouring slices as
``context``, ``(B, M, 2k, H, W)``: they are inputs, never noised, and pass
unchanged to every network call. ``weight``, ``(B, 1, H, W)``, weights the
loss per pixel (the tumour, say); None = the paper's plain mean; ``regions``
(tumour labels) with ``region_weight`` add the region-mean term of
``medmodels.syn.losses``.

The two synthesis variants, M2DN (``Diffusion``) and the regression baseline
(``Regression``), are objects with one interface, ``loss(net, x0, missing,
generator, context, weight)`` and ``sample(net, x_avail, missing, steps, generator, context)``;
``medmodels.syn.variants.variant(config)`` gives the one a checkpoint's
``config["kind"]`` names (the posterior-mean flow of ``medmodels.syn.flow``
too), so training and synthesis never branch on the kind, nor scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import nn

from medmodels.progress import progress
from medmodels.syn.losses import SSIM_RANGE_Z, synthesis_loss


@dataclass(frozen=True)
class DiffusionConfig:
    """Settings stored in every synthesis checkpoint (``config["diffusion"]``).

    Args:
        num_train_timesteps: T of the forward process.
        schedule: MONAI beta schedule name.
        data_scale: diffusion-space value = z-score * data_scale.
        clip: predicted x0 is clamped to [-clip, clip] during sampling.
    """

    num_train_timesteps: int = 1000
    schedule: str = "linear_beta"
    data_scale: float = 0.5
    clip: float = 3.0

    def to_dict(self) -> dict:
        return asdict(self)


def ddpm_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    """The full-length ancestral sampler (and the forward process' ``add_noise``)."""
    sched = DDPMScheduler(
        cfg.num_train_timesteps,
        cfg.schedule,
        prediction_type="sample",
        clip_sample=True,
        clip_sample_min=-cfg.clip,
        clip_sample_max=cfg.clip,
    )
    sched.set_timesteps(cfg.num_train_timesteps)
    return sched


def ddim_timesteps(num_train_timesteps: int, steps: int) -> torch.Tensor:
    """The DDIM timestep grid, ``(steps,)`` int64, first (noisiest) first.

    Built here, not by MONAI's ``DDIMScheduler.set_timesteps``, whose grid
    changed between MONAI 1.5 and 1.6 for step counts that do not divide T
    (3 steps: 998, 665, 332 in 1.5.1; 999, 666, 332 in 1.6.1), so the same
    weights, seed and steps would give other images on another Slicer. The
    grid is the one MONAI 1.6.1 makes (the bundled weights' figures were
    measured with it): it starts at T - 1 (pure noise) and ends at
    T // steps - 1, whose step (MONAI's ``step`` goes to ``t - T // steps``)
    lands on the clean image; the points between are evenly spaced and
    rounded half to even.
    """
    T = num_train_timesteps
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in 1..{T}, got {steps}")
    last = T // steps - 1
    return torch.linspace(T - 1 - last, 0, steps).round().long() + last


def ddim_scheduler(cfg: DiffusionConfig, steps: int) -> DDIMScheduler:
    """Deterministic DDIM with ``steps`` reverse steps on the grid of ``ddim_timesteps``.

    MONAI's scheduler gives the noise schedule and the update (``step``,
    the same in MONAI 1.4 to 1.6); its own grid is replaced by ours.
    """
    timesteps = ddim_timesteps(cfg.num_train_timesteps, steps)
    sched = DDIMScheduler(
        cfg.num_train_timesteps,
        cfg.schedule,
        prediction_type="sample",
        clip_sample=True,
        clip_sample_min=-cfg.clip,
        clip_sample_max=cfg.clip,
    )
    sched.set_timesteps(steps)  # sets num_inference_steps, which step() uses for the previous timestep
    sched.timesteps = timesteps
    return sched


def _broadcast(missing: torch.Tensor) -> torch.Tensor:
    return missing.bool()[:, :, None, None]


def forward_missing(
    x0: torch.Tensor, missing: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, scheduler: DDPMScheduler
) -> torch.Tensor:
    """q(x_t | x_0) applied to the missing modalities only; available ones stay clean."""
    noisy = scheduler.add_noise(x0, noise, t)
    return torch.where(_broadcast(missing), noisy, x0)


def diffusion_prediction(
    net: nn.Module,
    x0: torch.Tensor,
    missing: torch.Tensor,
    scheduler: DDPMScheduler,
    generator: torch.Generator | None = None,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """The x0 estimate f(M_t, t, v) the paper's joint loss scores: the missing modalities
    noised at a uniform timestep, ``(B, M, H, W)`` like ``x0``."""
    b = x0.shape[0]
    t = torch.randint(0, scheduler.num_train_timesteps, (b,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    xt = forward_missing(x0, missing, t, noise, scheduler)
    return net(xt, t, missing, context)


def to_diffusion_space(x: torch.Tensor | None, cfg: DiffusionConfig) -> torch.Tensor | None:
    """Data-space (z-score) slices or context as the network sees them; None stays None."""
    return None if x is None else x * cfg.data_scale


def to_data_space(x: torch.Tensor, cfg: DiffusionConfig) -> torch.Tensor:
    """Diffusion-space slices back to z-scores."""
    return x / cfg.data_scale


#: The regression baseline calls the same network at this fixed timestep.
REGRESSION_TIMESTEP = 0


def regression_input(x: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """Missing modalities zero-filled (z-score 0 = the brain mean): the baseline's input."""
    return torch.where(_broadcast(missing), torch.zeros_like(x), x)


def regression_prediction(
    net: nn.Module, x0: torch.Tensor, missing: torch.Tensor, context: torch.Tensor | None = None
) -> torch.Tensor:
    """What the baseline's loss scores: the same network, no diffusion, one pass from zero-filled inputs."""
    t = torch.full((x0.shape[0],), REGRESSION_TIMESTEP, device=x0.device, dtype=torch.long)
    return net(regression_input(x0, missing), t, missing, context)


@torch.no_grad()
def reverse_process(
    net: nn.Module,
    scheduler: DDPMScheduler | DDIMScheduler,
    x_avail: torch.Tensor,
    missing: torch.Tensor,
    generator: torch.Generator | None = None,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the reverse chain on the missing modalities, available ones held at their inputs.

    Args:
        x_avail: ``(B, M, H, W)`` clean inputs (values of missing channels are ignored).
        generator: on the same device as ``x_avail``; makes the result reproducible.
        context: neighbouring slices for a 2.5D network (see the module docstring).

    Returns:
        ``(B, M, H, W)``: synthesised missing channels, available channels equal to ``x_avail``.
    """
    m = _broadcast(missing)
    noise = torch.randn(x_avail.shape, generator=generator, device=x_avail.device, dtype=x_avail.dtype)
    x = torch.where(m, noise, x_avail)
    # long chains (the full-length sampler) get their own progress bar; short ones run inside a caller's
    for t in progress(scheduler.timesteps, desc="Sampling", disable=len(scheduler.timesteps) < 100):
        tt = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        x0_pred = net(x, tt, missing, context)
        x, _ = scheduler.step(x0_pred, int(t), x, generator=generator)
        x = torch.where(m, x, x_avail)
    return x


def sample_ddim(
    net: nn.Module,
    cfg: DiffusionConfig,
    x_avail: torch.Tensor,
    missing: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fast deterministic sampler (DDIM, eta = 0) with ``steps`` network calls."""
    return reverse_process(net, ddim_scheduler(cfg, steps), x_avail, missing, generator, context)


def sample_ddpm(
    net: nn.Module,
    cfg: DiffusionConfig,
    x_avail: torch.Tensor,
    missing: torch.Tensor,
    generator: torch.Generator | None = None,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """Full-length ancestral DDPM sampler (T network calls)."""
    return reverse_process(net, ddpm_scheduler(cfg), x_avail, missing, generator, context)


@torch.no_grad()
def predict_regression(
    net: nn.Module, x_avail: torch.Tensor, missing: torch.Tensor, context: torch.Tensor | None = None
) -> torch.Tensor:
    """The regression baseline's output, available channels held at their inputs."""
    t = torch.full((x_avail.shape[0],), REGRESSION_TIMESTEP, device=x_avail.device, dtype=torch.long)
    out = net(regression_input(x_avail, missing), t, missing, context)
    return torch.where(_broadcast(missing), out, x_avail)


class Variant:
    """What every synthesis variant is: a loss for training and a sampler, in data space.

    The public ``loss`` and ``sample`` take and give z-scores and move them to and
    from diffusion space (``cfg.data_scale``), so no caller scales; a variant
    implements ``space_prediction`` (the x0 estimate the loss scores) and
    ``space_sample``, which work in diffusion space.

    Args:
        cfg: the checkpoint's diffusion settings.
    """

    kind = ""
    #: Whether two samples of the same input differ (then averaging samples and the std map mean something).
    stochastic = True

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg

    def loss(
        self,
        net: nn.Module,
        x0: torch.Tensor,
        missing: torch.Tensor,
        generator: torch.Generator | None = None,
        context: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        regions: torch.Tensor | None = None,
        region_weight: float = 0.0,
        ssim_weight: float = 0.0,
    ) -> torch.Tensor:
        """The training loss (``medmodels.syn.losses``), computed in diffusion space (the scale the network learns in).

        Args:
            net: the variant's network (or its DDP wrapper).
            x0: ``(B, M, H, W)`` clean slices, z-scores.
            missing: ``(B, M)`` float, 1 = missing.
            generator: a CPU ``torch.Generator`` for the variant's randomness (timesteps, noise).
            context: ``(B, M, 2k, H, W)`` neighbouring slices, z-scores (2.5D networks only).
            weight: ``(B, 1, H, W)`` per-pixel loss weight (None = plain mean).
            regions: ``(B, H, W)`` tumour labels, for the region-mean term.
            region_weight: weight of the region-mean term (0 = none).
            ssim_weight: weight of the SSIM term (0 = none).
        """
        pred, x0 = self.training_prediction(net, x0, missing, generator, context)
        return synthesis_loss(pred, x0, missing, weight, regions, region_weight, ssim_weight, self.ssim_range)

    @property
    def ssim_range(self) -> float:
        """``losses.SSIM_RANGE_Z`` in diffusion space (z-scores times ``data_scale``)."""
        return SSIM_RANGE_Z * self.cfg.data_scale

    def training_prediction(
        self,
        net: nn.Module,
        x0: torch.Tensor,
        missing: torch.Tensor,
        generator: torch.Generator | None = None,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's estimate of the clean slices that ``loss`` scores, and the truth, both in
        diffusion space (every variant's network predicts x0), for terms beyond ``loss``'s own
        (the adversarial term of ``train-syn --adversarial-weight``).

        Args:
            net: the variant's network (or its DDP wrapper).
            x0: ``(B, M, H, W)`` clean slices, z-scores.
            missing: ``(B, M)`` float, 1 = missing.
            generator: a CPU ``torch.Generator`` for the variant's randomness (timesteps, noise),
                drawn from exactly as ``loss`` draws.
            context: ``(B, M, 2k, H, W)`` neighbouring slices, z-scores (2.5D networks only).

        Returns:
            ``(pred, x0)``, each ``(B, M, H, W)`` in diffusion space; ``pred`` carries the gradient.
        """
        x0, context = to_diffusion_space(x0, self.cfg), to_diffusion_space(context, self.cfg)
        return self.space_prediction(net, x0, missing, generator, context), x0

    def sample(
        self,
        net: nn.Module,
        x_avail: torch.Tensor,
        missing: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Synthesise the missing channels.

        Args:
            net: the variant's network.
            x_avail: ``(B, M, H, W)`` clean inputs, z-scores (missing channels ignored).
            missing: ``(B, M)`` float, 1 = missing.
            steps: sampler steps (the variant says what None means).
            generator: on the device of ``x_avail``.
            context: ``(B, M, 2k, H, W)`` neighbouring slices, z-scores (2.5D networks only).

        Returns:
            ``(B, M, H, W)`` z-scores; available channels equal to ``x_avail``.
        """
        x, context = to_diffusion_space(x_avail, self.cfg), to_diffusion_space(context, self.cfg)
        return to_data_space(self.space_sample(net, x, missing, steps, generator, context), self.cfg)

    def space_prediction(self, net, x0, missing, generator, context) -> torch.Tensor:
        """``training_prediction``'s estimate in diffusion space (arguments already scaled)."""
        raise NotImplementedError

    def space_sample(self, net, x, missing, steps, generator, context) -> torch.Tensor:
        """``sample`` in diffusion space (arguments already scaled; result in diffusion space)."""
        raise NotImplementedError


class Diffusion(Variant):
    """M2DN: the missing modalities are noised at a random timestep and the
    network predicts x0 (joint MSE over all modalities); synthesis runs the
    reverse chain: DDIM with ``steps`` steps, or the full-length ancestral
    DDPM sampler (T steps) for ``steps=None``.

    Args:
        cfg: the checkpoint's diffusion settings.
    """

    kind = "m2dn"

    def __init__(self, cfg: DiffusionConfig) -> None:
        super().__init__(cfg)
        # the forward process (add_noise) only; samplers build their own schedulers
        self.scheduler = ddpm_scheduler(cfg)

    def space_prediction(self, net, x0, missing, generator, context) -> torch.Tensor:
        return diffusion_prediction(net, x0, missing, self.scheduler, generator, context)

    def space_sample(self, net, x, missing, steps, generator, context) -> torch.Tensor:
        if steps is None:
            return sample_ddpm(net, self.cfg, x, missing, generator, context)
        return sample_ddim(net, self.cfg, x, missing, steps, generator, context)


class Regression(Variant):
    """The regression baseline: the same network called once at a fixed
    timestep on zero-filled inputs; no noise, so ``generator`` and ``steps``
    are accepted for the common interface and not used.

    Args:
        cfg: the checkpoint's diffusion settings (its ``data_scale``: the
            network works in the same space as M2DN's).
    """

    kind = "regression"
    stochastic = False

    def __init__(self, cfg: DiffusionConfig | None = None) -> None:
        super().__init__(cfg or DiffusionConfig())

    def space_prediction(self, net, x0, missing, generator, context) -> torch.Tensor:
        return regression_prediction(net, x0, missing, context)

    def space_sample(self, net, x, missing, steps, generator, context) -> torch.Tensor:
        return predict_regression(net, x, missing, context)
