"""Which torch device a command runs on: the one place that turns the
``--device`` word (auto, cpu, cuda, cuda:N) into a ``torch.device``.

Inference (``seg/inference.py``, ``syn/inference.py``) and training
(``distributed.py``) both choose their device here; inference has no business
importing the torchrun set-up.
"""

from __future__ import annotations

import torch

from medmodels.errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> the GPU when there is one, else the CPU; 'cuda'/'gpu' insists on a GPU.

    Raises:
        InputError: a GPU asked for where PyTorch sees none, or an unknown name.
    """
    name = name.lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise InputError(
                "A GPU was asked for but PyTorch sees none: choose device 'cpu' or 'auto', "
                "or install a CUDA build of PyTorch."
            )
        return torch.device("cuda")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda:"):
        return torch.device(name)
    raise InputError(f"Unknown device '{name}': use auto, cpu or cuda.")
