"""medmodels: synthesis of missing MRI contrasts (M2DN) and tumour segmentation
from any subset of contrasts (ShaSpec), for brain-tumour MRI.

The library never imports Slicer. Data flows one way: files -> ``Image``
(array with geometry) -> model -> arrays -> ``Image`` -> files.
"""

from medmodels.errors import CheckpointError, InputError
from medmodels.image import Image
from medmodels.modalities import MODALITY_KEYS, AvailabilityMask, assign_modalities

__version__ = "0.1.0"

__all__ = [
    "MODALITY_KEYS",
    "AvailabilityMask",
    "CheckpointError",
    "Image",
    "InputError",
    "assign_modalities",
    "__version__",
]
