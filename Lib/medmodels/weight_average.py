"""Stochastic weight averaging for the training loop (``--average-from``).

SWA (Izmailov et al., 2018, "Averaging weights leads to wider optima and
better generalization"): from an iteration on, keep the equal average of the
weights after every optimiser step, and use that average as the trained
model. Why here: with 11 training cases the held-out Dice of the last iterate
swings by several points from one validation to the next, and the end of a
cosine cycle lands on one noisy draw (``docs/segmentation.md``); the average
of the late iterates is one model that does not depend on where the run
stopped.

PyTorch's ``torch.optim.swa_utils.AveragedModel`` keeps the average. The
networks here normalise with InstanceNorm (no running statistics) or
GroupNorm, so the average needs no ``update_bn`` pass over the data.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel


def averaging_start(fraction: float, iterations: int) -> int:
    """The iteration after which the weights are averaged.

    Args:
        fraction: ``--average-from``, in [0, 1): 0 averages every iterate.
        iterations: the run's ``--iterations`` (a resumed run's, counting on).

    Returns:
        The iteration count after which each step's weights join the average
        (iterates ``start + 1 .. iterations``; at least the last one).
    """
    return min(int(round(fraction * iterations)), iterations - 1)


class WeightAverage:
    """The equal average of a model's weights over the iterations after ``start``.

    Args:
        model: the trained network (not its DDP wrapper); copied once, so the
            average lives on the model's device and has its parameter shapes.
        start: iterations after which the average begins (``averaging_start``).
    """

    def __init__(self, model: nn.Module, start: int) -> None:
        self.start = start
        # use_buffers: buffers (none in these networks) follow the average too, never stale copies
        self.averaged = AveragedModel(model, use_buffers=True)

    @property
    def count(self) -> int:
        """How many iterates the average holds (0 before ``start``)."""
        return int(self.averaged.n_averaged)

    def update(self, model: nn.Module, iteration: int) -> None:
        """Add the weights after step ``iteration`` (1-based) when it is past ``start``.

        Args:
            model: the trained network, as after that step.
            iteration: the number of optimiser steps taken so far.
        """
        if iteration > self.start:
            self.averaged.update_parameters(model)

    def weights_of(self, model: nn.Module) -> nn.Module:
        """The module whose weights are the run's result: the average once it holds an iterate, else ``model``."""
        return self.averaged.module if self.count else model

    def state_dict(self) -> dict:
        """The average and its count, for ``last.pt`` (an exact ``--resume``)."""
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` saved."""
        self.averaged.load_state_dict(state)
