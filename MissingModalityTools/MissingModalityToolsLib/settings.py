"""The user's choices kept across scenes and sessions (Slicer's user settings).

Device, sampling steps, input preparation, clean-up and whether the segmenter's
tumour regions guide the synthesis are the user's preferences, not facts of one case: a new scene's
parameter node starts from the last values used, as MONAIAuto3DSeg and
TotalSegmentator do. ``settings`` is a QSettings (``slicer.app.userSettings()``)
or anything with ``value(key, default)`` and ``setValue(key, value)``; QSettings
may hand back strings ("true", "20"), so values are converted and checked here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

PREFIX = "MissingModalityTools/"
#: Parameter-node field -> its type; these are the fields kept.
KEPT = {"device": str, "steps": int, "prepare": str, "cleanup": bool, "regionMap": bool}
#: The sampling-step range of the parameter node (WithinRange(0, 1000)).
STEPS_RANGE = (0, 1000)


def _convert(kind: type, value: object) -> object:
    if kind is bool:
        return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")
    return kind(value)


def read_user_settings(settings, choices: Mapping[str, Sequence[str]]) -> dict:
    """The kept values found in ``settings`` that are still valid; field -> value.

    Args:
        settings: Slicer's user settings (QSettings-like).
        choices: field -> allowed words for the text fields ("device", "prepare").
    """
    found = {}
    for field, kind in KEPT.items():
        raw = settings.value(PREFIX + field, None)
        if raw is None or raw == "":
            continue
        try:
            value = _convert(kind, raw)
        except (TypeError, ValueError):
            continue  # a hand-edited or foreign value: the default stands
        if field in choices and value not in choices[field]:
            continue
        if field == "steps" and not STEPS_RANGE[0] <= value <= STEPS_RANGE[1]:
            continue
        found[field] = value
    return found


def apply_user_settings(parameter_node, settings, choices: Mapping[str, Sequence[str]]) -> dict:
    """Set a new parameter node's kept fields from the user's settings; returns what was set."""
    found = read_user_settings(settings, choices)
    for field, value in found.items():
        setattr(parameter_node, field, value)
    return found


def save_user_settings(parameter_node, settings) -> None:
    """Remember the kept fields of ``parameter_node`` (called when the user presses Apply)."""
    for field in KEPT:
        settings.setValue(PREFIX + field, getattr(parameter_node, field))
