"""Missing-modality patterns: the 14 training masks and tensor conversions.

M2DN trains on every mask except all-present and all-missing: with four
modalities, the 14 non-trivial subsets. Masks are the paper's condition
vector ``v`` (missing = 1) as float tensors ``(B, M)``.
"""

from __future__ import annotations

import torch

from medmodels.modalities import AvailabilityMask

#: The 14 patterns with at least one modality available and at least one missing.
PATTERNS: tuple[AvailabilityMask, ...] = tuple(AvailabilityMask.partial_subsets())


def missing_tensor(mask: AvailabilityMask, batch: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(batch, 4)`` float tensor, 1 = missing, for one availability mask."""
    v = torch.as_tensor(mask.missing_vector(), device=device)
    return v.unsqueeze(0).expand(batch, -1).contiguous()


def pattern_table(device: torch.device | str = "cpu") -> torch.Tensor:
    """``(14, 4)`` missing vectors of all training patterns."""
    return torch.stack([torch.as_tensor(m.missing_vector()) for m in PATTERNS]).to(device)


def sample_missing(
    batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Draw ``batch`` training masks uniformly from the 14 patterns.

    Returns:
        ``(batch, 4)`` float, 1 = missing; never all zeros nor all ones.
    """
    idx = torch.randint(len(PATTERNS), (batch,), generator=generator)
    return pattern_table()[idx].to(device)
