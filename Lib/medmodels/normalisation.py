"""Intensity normalisation that can be undone (``Normalizer``), for segmentation and synthesis alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medmodels.errors import InputError


@dataclass(frozen=True)
class Normalizer:
    """Percentile clip, then z-score inside the brain; ``invert`` undoes it.

    Fitted per image. ``invert`` maps network output back to the input's
    intensity scale, so a synthesised volume looks like the inputs.

    Attributes:
        low, high: intensity percentiles (inside the brain) used as clip bounds.
        mean, std: mean and standard deviation of the clipped brain voxels.
    """

    low: float
    high: float
    mean: float
    std: float

    @classmethod
    def fit(cls, array: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> Normalizer:
        values = np.asarray(array, dtype=np.float64)[mask]
        if values.size == 0:
            raise InputError("Cannot normalise: the brain mask is empty.")
        low, high = np.percentile(values, percentiles)
        clipped = np.clip(values, low, high)
        std = float(clipped.std())
        return cls(float(low), float(high), float(clipped.mean()), std if std > 1e-6 else 1.0)

    def apply(self, array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """float32 z-scores; 0 outside ``mask`` when given."""
        z = ((np.clip(array.astype(np.float32), self.low, self.high) - self.mean) / self.std).astype(np.float32)
        if mask is not None:
            z = np.where(mask, z, 0.0).astype(np.float32)
        return z

    def invert(self, z: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Back to the input's intensity scale, clipped to the fitted range;
        0 outside ``mask`` when given (as in skull-stripped input)."""
        x = np.clip(z.astype(np.float32) * self.std + self.mean, self.low, self.high).astype(np.float32)
        if mask is not None:
            x = np.where(mask, x, 0.0).astype(np.float32)
        return x
