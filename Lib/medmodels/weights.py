"""Checkpoints: saved with a JSON record beside them, loaded only after the
file's SHA-256 matches that record, and always with ``weights_only=True``.

A checkpoint is two files::

    name.pt     {"state_dict": ..., "config": {...}, ...}   (torch.save)
    name.json   {"file": "name.pt", "sha256": ..., "size_bytes": ..., "config": {...}, ...}

The config is nested (``medmodels.nets.config``); every checkpoint loaded here
is read through ``config_from_record``, so older flat segmentation configs come
out nested too. Bundled checkpoints live in ``medmodels/weights/``. A user's own file (a
model trained elsewhere, for an offline site) is brought in with
``import_checkpoint``, which records its hash once: nothing is ever
downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medmodels.atomic import write_atomically, write_json
from medmodels.errors import CheckpointError
from medmodels.nets.config import config_from_record

BUNDLED_DIR = Path(__file__).resolve().parent / "weights"


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_path(checkpoint: str | os.PathLike) -> Path:
    return Path(checkpoint).with_suffix(".json")


def save_checkpoint(
    path: str | os.PathLike, payload: dict[str, Any], record: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``payload`` (tensors, numbers, strings, lists, dicts) and its record.

    Both files are written to temporary names and renamed, the record last,
    so a checkpoint is either whole and recorded or absent.

    Returns:
        The record written (with ``sha256`` and ``size_bytes``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: torch.save(payload, tmp), ".pt")
    full_record = {"file": path.name, "sha256": sha256_of(path), "size_bytes": path.stat().st_size}
    if "config" in payload and "config" not in (record or {}):
        full_record["config"] = payload["config"]
    full_record.update(record or {})
    _write_json(record_path(path), full_record)
    return full_record


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON record beside the checkpoint ``path``: an object with the file's ``sha256``.

    Raises:
        CheckpointError: no record, or one that is not JSON, not an object, or
            holds no SHA-256 (64 hexadecimal digits), naming the record.
    """
    rec = record_path(path)
    fix = (
        "If you trust the file, record it with `medmodels import-weights FILE --sha256 HASH` "
        "(the hash published with the weights)."
    )
    if not rec.exists():
        raise CheckpointError(f"'{path}' has no record '{rec.name}' beside it, so its SHA-256 cannot be checked. {fix}")
    try:
        record = json.loads(rec.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"The record '{rec}' of '{path}' is not JSON ({err}): restore it. {fix}") from None
    digest = record.get("sha256") if isinstance(record, dict) else None
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
        what = "an object" if isinstance(record, dict) else f"a JSON {type(record).__name__}"
        raise CheckpointError(
            f"The record '{rec}' of '{path}' is {what} without a SHA-256 ('sha256': 64 hexadecimal digits), so "
            f"the checkpoint cannot be checked: restore the record. {fix}"
        )
    return record


def load_checkpoint(
    path: str | os.PathLike,
    expected_sha256: str | None = None,
    map_location: str | torch.device = "cpu",
    config_as_stored: bool = False,
) -> dict[str, Any]:
    """Load a checkpoint after checking its SHA-256.

    Args:
        path: the ``.pt`` file.
        expected_sha256: the hash to check against; by default the one in the
            record beside the file.
        config_as_stored: keep the config in the shape the file stores it (default: nested,
            ``config_from_record``), for a writer that changes one entry and must keep the rest
            (``seg.calibration.write_calibrated``).

    Raises:
        CheckpointError: missing file, missing record, hash mismatch, or a
            file that is not a weights-only checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Checkpoint '{path}' does not exist: check the path, or train one first.")
    expected = expected_sha256 or read_record(path)["sha256"]
    actual = sha256_of(path)
    if actual != expected:
        raise CheckpointError(
            f"Checkpoint '{path}' has SHA-256 {actual}, but {expected} was recorded: the file is damaged or "
            "is not the recorded one. Restore the original file (reinstall the extension for bundled weights)."
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for unsafe or broken pickles
        raise CheckpointError(f"Checkpoint '{path}' could not be loaded with weights_only=True: {err}") from None
    return _checked_payload(payload, path, nest_config=not config_as_stored)


def _checked_payload(payload: Any, path: Path, nest_config: bool = True) -> dict[str, Any]:
    """``payload`` if it is a medmodels checkpoint (a dict with ``state_dict``) whose weights are all
    finite, else a CheckpointError naming ``path``. With ``nest_config`` its config is read through
    ``medmodels.nets.config.config_from_record``: every loaded checkpoint's config is nested,
    older flat segmentation configs included (the file itself is untouched)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        what = type(payload).__name__ if not isinstance(payload, dict) else "a dict without 'state_dict'"
        raise CheckpointError(
            f"'{path}' holds {what}, not a medmodels checkpoint ({{'state_dict': ..., 'config': ...}}): give a "
            "checkpoint written by medmodels (train-seg/train-syn, export)."
        )
    # NaN or infinite weights give all-background segmentations and blank volumes, exit 0: refuse them here
    bad = [
        name
        for name, value in payload["state_dict"].items()
        if isinstance(value, torch.Tensor)
        and (value.is_floating_point() or value.is_complex())
        and not bool(torch.isfinite(value).all())
    ]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(
            f"Checkpoint '{path}' holds NaN or infinite weights ({shown}): it is damaged or comes from a "
            "training that diverged. Use another checkpoint (an earlier one, or the bundled weights), or retrain "
            "(e.g. with a lower --lr)."
        )
    if nest_config and isinstance(payload.get("config"), dict):
        payload["config"] = config_from_record(payload["config"])
    return payload


def bundled_checkpoint(name: str) -> Path:
    """Path of a bundled checkpoint (``medmodels/weights/<name>.pt``)."""
    path = BUNDLED_DIR / f"{name}.pt"
    if not path.exists():
        available = sorted(p.stem for p in BUNDLED_DIR.glob("*.pt"))
        raise CheckpointError(
            f"No bundled checkpoint '{name}' in {BUNDLED_DIR} (bundled: {', '.join(available) or 'none'}). "
            "Reinstall the package, or pass a checkpoint file of your own."
        )
    return path


def resolve_checkpoint(
    checkpoint: str | os.PathLike | None, bundled: str, baseline: str | None = None, ensemble: str | None = None
) -> Path:
    """The file a checkpoint reference (``medmodels.checkpoint_ref.CheckpointRef``) means: ``None``
    or ``"bundled"`` = the bundled model ``bundled``, ``"baseline"`` = the bundled model
    ``baseline``, ``"ensemble"`` = the bundled model ``ensemble``, anything else a path. The one
    resolver of these words.

    Args:
        checkpoint: the reference (a ``CheckpointRef``, its text, a path, or None).
        bundled, baseline, ensemble: names of the model family's bundled checkpoints (``baseline``
            or ``ensemble`` None: the family has none here, and the word is an error).
    """
    from medmodels.checkpoint_ref import BASELINE, BUNDLED, ENSEMBLE, CheckpointRef

    ref = CheckpointRef(BUNDLED if checkpoint is None else checkpoint)
    if ref.kind == BUNDLED:
        return bundled_checkpoint(bundled)
    if ref.kind == ENSEMBLE:
        if ensemble is None:
            raise CheckpointError(
                "'ensemble' names no bundled model here (--init and the flow's mean take single "
                "networks): give 'bundled', 'baseline' or a checkpoint file."
            )
        return bundled_checkpoint(ensemble)
    if ref.kind == BASELINE:
        if baseline is None:
            raise CheckpointError(
                "'baseline' names no bundled model here: give 'bundled' (the bundled model of the architecture "
                "chosen, a baseline's too) or a checkpoint file."
            )
        return bundled_checkpoint(baseline)
    return Path(ref)


def import_checkpoint(source: str | os.PathLike, destination_dir: str | os.PathLike, sha256: str) -> Path:
    """Copy a checkpoint file a user obtained elsewhere and record its hash.

    The hash is the one published with the weights; the copy is refused if
    the file does not match it.

    Args:
        source: the checkpoint file.
        destination_dir: the folder to copy it into (created if missing).
        sha256: the hash published with the weights.

    Raises:
        CheckpointError: a missing source, a folder given as the source, a
            destination that is a file or the source itself, a file already
            there, a hash mismatch, or a file that is no checkpoint.
    """
    source, destination_dir = Path(source), Path(destination_dir)
    dest = _import_destination(source, destination_dir)
    actual = sha256_of(source)
    if actual != sha256.lower():
        raise CheckpointError(
            f"'{source}' has SHA-256 {actual}, not the {sha256} you gave: the download is damaged or is another file."
        )
    payload = load_checkpoint_unrecorded(source)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(dest, lambda tmp: shutil.copyfile(source, tmp), ".pt")
    except OSError as err:
        raise CheckpointError(f"Could not copy '{source}' into '{dest.parent}' ({err.strerror or err}).") from None
    _write_json(
        record_path(dest),
        {
            "file": dest.name,
            "sha256": actual,
            "size_bytes": dest.stat().st_size,
            "config": payload.get("config", {}),
            "imported_from": str(source),
        },
    )
    return dest


def _import_destination(source: Path, destination_dir: Path) -> Path:
    """Where ``import_checkpoint`` copies ``source``, after the path checks that need no reading."""
    if not source.exists():
        raise CheckpointError(f"'{source}' does not exist: give the checkpoint file you downloaded.")
    if not source.is_file():
        raise CheckpointError(f"'{source}' is a folder: give the checkpoint file (.pt) itself.")
    if destination_dir.exists() and not destination_dir.is_dir():
        raise CheckpointError(f"'{destination_dir}' is a file: --out is the folder the checkpoint is copied into.")
    dest = destination_dir / source.name
    if dest.exists() and dest.resolve() == source.resolve():
        raise CheckpointError(
            f"'{source}' is already in '{destination_dir}': import it into another folder (--out), or, if it "
            "is recorded already, use it as it is."
        )
    if dest.exists() or record_path(dest).exists():
        raise CheckpointError(
            f"'{dest}' (or its record) exists already: remove it, or import into another folder (--out)."
        )
    return dest


def load_checkpoint_unrecorded(path: Path) -> dict[str, Any]:
    """Only for checking a file whose hash was just verified by the caller."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"'{path}' is not a weights-only PyTorch checkpoint: {err}") from None
    return _checked_payload(payload, path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_json(path, data, sort_keys=True)


@dataclass(frozen=True)
class OpenedCheckpoint:
    """A checkpoint found, checked and loaded (``open_checkpoint``).

    Args:
        path: the ``.pt`` file the reference named.
        payload: its contents (``state_dict``, ``config`` in the nested shape, ...), weights-only.
        record: the JSON record beside it (its ``sha256``, training facts).
    """

    path: Path
    payload: dict[str, Any]
    record: dict[str, Any]


def open_checkpoint(checkpoint: str | os.PathLike | None, bundled: str, baseline: str | None) -> OpenedCheckpoint:
    """The steps every reader of trained weights takes first: resolve the reference
    (``resolve_checkpoint``), check the SHA-256 and load weights-only (``load_checkpoint``),
    and read the record. ``load_network``, ``--init`` (``medmodels.training``) and a flow's
    ``--mean-checkpoint`` (``medmodels.syn.train.load_mean``) go through it.

    Args:
        checkpoint: None/"bundled", "baseline" or a path (a ``CheckpointRef``'s words; segmentation's
            "ensemble" becomes a path first, in ``seg.inference.segmenter_file``).
        bundled, baseline: the family's bundled checkpoint names (``baseline`` None: none).

    Raises:
        CheckpointError: see ``resolve_checkpoint`` and ``load_checkpoint``.
    """
    path = resolve_checkpoint(checkpoint, bundled, baseline)
    payload = load_checkpoint(path)
    return OpenedCheckpoint(path, payload, read_record(path))


def load_network(
    checkpoint: str | os.PathLike | None,
    bundled: str,
    baseline: str | None,
    family: str,
    required: Sequence[str],
    build: Callable[[dict], torch.nn.Module],
) -> tuple[torch.nn.Module, dict]:
    """The one loader of trained networks, for segmentation and synthesis alike.

    Opens the checkpoint (``open_checkpoint``: resolved, SHA-256 checked, loaded
    weights-only, its config nested), checks that the config is the family's,
    builds the network it names and loads its weights.

    Args:
        checkpoint: None/"bundled", "baseline" or a path (a ``CheckpointRef``'s words).
        bundled, baseline: the family's bundled checkpoint names.
        family: "segmentation" or "synthesis", for the messages.
        required: config entries every checkpoint of the family has.
        build: the family's builder (``medmodels.nets.segmentation.build_segmentation_net``,
            ``medmodels.nets.synthesis.build_synthesis_net``).

    Returns:
        ``(network, config)``: the network on the CPU with the weights (float16 storage is
        cast by ``load_state_dict``), and the checkpoint's config (nested: ``medmodels.nets.config``).

    Raises:
        CheckpointError: not a checkpoint of the family, or weights that do not fit its network.
    """
    opened = open_checkpoint(checkpoint, bundled, baseline)
    path, config = opened.path, opened.payload.get("config")
    if not isinstance(config, dict) or not set(required) <= set(config):
        raise CheckpointError(
            f"'{path}' is not a medmodels {family} checkpoint (no {'/'.join(required)} in its config)."
        )
    net = build(config)
    try:
        net.load_state_dict(opened.payload["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"'{path}' does not fit the network its config names: {err}") from None
    return net, config
