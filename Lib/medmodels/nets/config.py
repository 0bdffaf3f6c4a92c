"""The model config a checkpoint stores, one nested shape for both families, and
``config_from_record``, the one reader of stored configs.

A checkpoint's ``"config"`` (inside the ``.pt`` and copied into its JSON
record) says how to rebuild and run its network::

    {
      "kind": ...,            the network: "shaspec" or "unet3d" (segmentation);
                              "m2dn", "regression" or "pmrf" (synthesis)
      "modalities": [...],    the input channels, in the canonical order (medmodels.modalities)
      "spacing": [x, y, z],   the working spacing in mm
      "preprocessing": "...", how the inputs are prepared, in words
      "net": {...},           the builder's arguments (nets/segmentation.py, nets/synthesis.py)
      ...                     the family's entries below
    }

The rule that splits them: ``"net"`` holds what the network's parameters
depend on, and nothing else; how the data are prepared, cut and scored is
beside it. Segmentation (``medmodels.seg.train.model_config``):

- ``net``: ``width``, ``depth``; where not the default, ``weight_std`` (True),
  ``skip_fusion`` ("concat", ShaSpec only) and ``specific_width`` (ShaSpec).
  Defaults are left out, so that a config keeps comparing equal to those of
  weights trained before the option existed.
- ``patch_size`` ``[z, y, x]``: the training patch and the inference window
  (the networks are fully convolutional: it is not theirs), ``regions``
  (``["ET", "TC", "WT"]``, the output channels' meaning), ``subset``
  ("random", or the bits of a dedicated model's fixed modalities) and, once
  ``evaluate-seg --calibrate`` has chosen one on validation cases, ``threshold`` (the
  probability a region needs; 0.5 where absent).

Synthesis (``medmodels.syn.train.model_config``): ``net`` holds ``M2DNet``'s
arguments; beside it ``diffusion``, ``flow`` (a flow only),
``intensity_reference`` (measured on the training cases) and, where set,
``default_steps``.

Segmentation configs were flat before: ``{"arch", "width", "depth",
"weight_std"?, "skip_fusion"?, ..., "patch_size", "spacing", ...}``, as in the
bundled segmentation weights, which keep that shape (``evaluate-seg --calibrate
--write`` only adds ``threshold``; their SHA-256 is recorded). ``config_from_record`` reads both shapes and gives the
nested one; ``medmodels.weights`` applies it to every checkpoint it loads, so
the loader, ``--init``, ``--resume`` and ``export`` see nested configs only.

Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The probability threshold of a segmentation checkpoint whose config records none (``"threshold"``).
DEFAULT_THRESHOLD = 0.5
#: The entries of a flat (older) segmentation config that are the network's.
LEGACY_NET_KEYS = ("width", "depth", "weight_std", "skip_fusion", "specific_width")


def config_from_record(config: Mapping) -> dict:
    """A stored model config in the nested shape (see the module docstring).

    Args:
        config: the ``"config"`` of a checkpoint or of its record: nested (both
            families now), or a flat segmentation config (``"arch"`` and no
            ``"net"``), written before the two families shared one shape.

    Returns:
        A new dict: a nested config as it is; a flat one with ``arch`` as
        ``kind`` and its network's entries under ``net``. Any other config
        (one without either, e.g. a test's) is returned as it is, copied.
    """
    config = dict(config)
    if "arch" not in config or "net" in config:
        return config
    nested = {"kind": config.pop("arch")}
    nested["net"] = {k: config.pop(k) for k in LEGACY_NET_KEYS if k in config}
    return {**nested, **config}
