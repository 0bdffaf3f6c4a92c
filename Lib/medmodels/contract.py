"""The contract of a run's output folder, spelled once: file names, the manifest, the folder rules.

``medmodels run`` (``medmodels.pipeline``) writes, and the Slicer module (and the
stand-in worker its self-test runs) reads, an output folder holding:

- ``<key>.nii.gz`` for every synthesised modality (``OutputFile(SYNTHESISED, key)``),
- ``<key>_std.nii.gz``, its voxel-wise standard deviation when ``samples > 1``
  (``OutputFile(UNCERTAINTY, key)``),
- ``segmentation.nii.gz`` when segmenting (``OutputFile(SEGMENTATION)``),
- ``manifest.json`` last (``Manifest``): a folder without one is an unfinished run.

A new output or manifest field is one edit here: the writer (``Manifest.write``),
the reader (``Manifest.read``) and every user go through this file.

This file imports neither torch nor numpy: the Slicer module imports it in
Slicer's own process, where torch may not be installed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from medmodels.atomic import MANIFEST, write_json
from medmodels.errors import InputError
from medmodels.modalities import MODALITY_KEYS

#: The manifest's file name; written last, so its absence marks an unfinished run.
#: The manifest's file name. The literal lives in atomic.py, whose output-folder rule
#: (every writing command's) needs it too; the contract names it for the worker's readers.
MANIFEST_NAME = MANIFEST
#: The kinds of output file; each is also the manifest field that lists the files of that kind.
SYNTHESISED = "synthesised"
UNCERTAINTY = "uncertainty"
SEGMENTATION = "segmentation"
OUTPUT_KINDS = (SYNTHESISED, UNCERTAINTY, SEGMENTATION)
#: The fix of a manifest that is not ours, for the end of its error message.
_FIX = ": another program wrote it, or another version of medmodels; rerun into a new output folder."


class ContractError(InputError):
    """An output folder or manifest that breaks the contract: missing, unreadable, or not a medmodels manifest."""


@dataclass(frozen=True)
class OutputFile:
    """One file a run writes besides its manifest.

    Attributes:
        kind: one of ``OUTPUT_KINDS``.
        key: the modality key of a synthesised or uncertainty volume; "" for the segmentation.
    """

    kind: str
    key: str = ""

    def __post_init__(self):
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"Unknown output kind '{self.kind}': one of {', '.join(OUTPUT_KINDS)}.")

    @property
    def name(self) -> str:
        """The file's name in the output folder."""
        if self.kind == SEGMENTATION:
            return "segmentation.nii.gz"
        return f"{self.key}_std.nii.gz" if self.kind == UNCERTAINTY else f"{self.key}.nii.gz"


def planned_files(keys: Iterable[str], options) -> list[OutputFile]:
    """The files a run of a case with modalities ``keys`` writes, in the order it lists them.

    Args:
        keys: the acquired modality keys of the case.
        options: the run's ``medmodels.options.RunOptions`` (its ``synthesize``,
            ``samples`` and ``segment``).
    """
    given = set(keys)
    missing = [k for k in MODALITY_KEYS if k not in given] if options.synthesize else []
    files = [OutputFile(SYNTHESISED, k) for k in missing]
    files += [OutputFile(UNCERTAINTY, k) for k in missing if options.samples > 1]
    return files + ([OutputFile(SEGMENTATION)] if options.segment else [])


def planned_outputs(keys: Iterable[str], options) -> list[str]:
    """The file names a run of a case with modalities ``keys`` will write, ``manifest.json`` last.

    Args:
        keys: the acquired modality keys of the case.
        options: the run's ``RunOptions``.
    """
    return [f.name for f in planned_files(keys, options)] + [MANIFEST_NAME]


@dataclass
class Manifest:
    """What a run wrote and how (``manifest.json``); every field has a default, so the
    manifest of an older worker that lacks a field reads as well.

    Attributes:
        reference: the modality whose grid the outputs are on.
        synthesised: modality key -> file name of its synthesised volume.
        uncertainty: modality key -> file name of its standard-deviation map.
        segmentation: file name of the segmentation, or None when not segmenting.
        label_convention: label values of the segmentation, "2018" (ET = 4) or "2023" (ET = 3).
        notes: what the run noted (resampling, registration, warnings), in order.
        preparation: the record of ``medmodels.preparation.prepare_case`` (its
            ``mode``, ``inspection``, ``steps``, ``registration``, ...).
        options: the run's options (``RunOptions`` as a dict).
        inputs: modality key -> the input file it read.
        device: the device that ran, e.g. "cpu" or "cuda (<GPU>)".
    """

    reference: str = ""
    synthesised: dict = field(default_factory=dict)
    uncertainty: dict = field(default_factory=dict)
    segmentation: str | None = None
    label_convention: str = "2018"
    notes: list = field(default_factory=list)
    preparation: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    device: str = ""

    # -- writing and reading -------------------------------------------------------------

    def to_dict(self) -> dict:
        """The manifest as JSON-ready data, fields in their declared order."""
        return asdict(self)

    def write(self, path: str | os.PathLike) -> Path:
        """Write the manifest to ``path`` atomically (whole or absent); returns ``path``.

        Args:
            path: the manifest's file (``<output folder>/manifest.json``).
        """
        write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def from_dict(cls, data, source: str = "The manifest") -> Manifest:
        """The manifest held in ``data`` (parsed JSON), checked.

        A field ``data`` lacks (or gives as null) keeps its default (an older
        worker); a key that is no field is ignored (a newer one).

        Args:
            data: the parsed JSON.
            source: what ``data`` came from, for the error message.

        Raises:
            ContractError: ``data`` is not a JSON object, has none of the
                manifest's fields, or a field of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise ContractError(f"{source} is not a medmodels manifest (it is not a JSON object){_FIX}")
        known = {f.name: f for f in fields(cls)}
        if not known.keys() & data.keys():
            raise ContractError(
                f"{source} is not a medmodels manifest (it has none of the fields {', '.join(known)}){_FIX}"
            )
        values = {}
        for name, value in data.items():
            if name in known and value is not None:  # JSON null: the field is not given
                _check_type(known[name], value, source)
                values[name] = value
        manifest = cls(**values)
        manifest.listed_files()  # a listed file name that is not a string breaks the contract too
        return manifest

    @classmethod
    def read(cls, folder: str | os.PathLike) -> Manifest:
        """The manifest of the run that wrote into ``folder``.

        Args:
            folder: the run's output folder.

        Raises:
            ContractError: the folder holds no manifest (an unfinished run),
                or one that cannot be read, is not JSON, or is not a medmodels manifest.
        """
        path = Path(folder) / MANIFEST_NAME
        if not path.exists():
            raise ContractError(
                f"The run exited without writing {MANIFEST_NAME} in '{folder}', so its outputs may be incomplete: "
                "rerun it."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ContractError(
                f"'{path}' cannot be read as a manifest ({err}): the run that wrote it did not finish cleanly; "
                "rerun into a new output folder."
            ) from None
        return cls.from_dict(data, f"'{path}'")

    # -- the output files it lists ---------------------------------------------------------

    def list_file(self, output: OutputFile, name: str) -> None:
        """Record that ``output`` was written as ``name``.

        Args:
            output: the output.
            name: its file name in the output folder.
        """
        if output.kind == SEGMENTATION:
            self.segmentation = name
        else:
            getattr(self, output.kind)[output.key] = name

    def listed(self, output: OutputFile) -> str | None:
        """The file name the manifest lists for ``output``, or None when it lists none.

        Args:
            output: the output asked about.
        """
        if output.kind == SEGMENTATION:
            return self.segmentation
        return getattr(self, output.kind).get(output.key)

    def listed_files(self) -> dict[OutputFile, str]:
        """Every output the manifest lists -> its file name.

        Raises:
            ContractError: a listed file name is not a string.
        """
        listed = {
            OutputFile(kind, key): name
            for kind in (SYNTHESISED, UNCERTAINTY)
            for key, name in getattr(self, kind).items()
        }
        if self.segmentation is not None:
            listed[OutputFile(SEGMENTATION)] = self.segmentation
        bad = [f"{f.kind} {f.key}".strip() for f, name in listed.items() if not isinstance(name, str)]
        if bad:
            raise ContractError(
                f"The manifest's file entries for {', '.join(bad)} are not file names: it was not written by "
                "medmodels; rerun into a new output folder."
            )
        return listed

    # -- the preparation record (written by medmodels.preparation), as readers need it ---------

    def preparation_mode(self) -> str:
        """The run's ``--prepare`` mode ("auto", "on", "off")."""
        return str(self.preparation.get("mode", "auto"))

    def preparation_steps(self) -> list[str]:
        """The preparation steps that ran, e.g. ["registration", "brain_extraction"]."""
        return [str(s) for s in self.preparation.get("steps") or []]

    def findings(self) -> list[str]:
        """The messages of what the inspection of the inputs found."""
        inspection = self.preparation.get("inspection") or {}
        return [str(f.get("message", "")) for f in inspection.get("findings") or []]

    def registration_matrices(self) -> dict[str, list]:
        """Modality key -> its 4x4 rigid registration matrix (LPS mm, reference point ->
        moving point; see ``medmodels.registration``), for each registered modality."""
        registration = self.preparation.get("registration") or {}
        return {key: entry["matrix"] for key, entry in registration.items()}


def _check_type(spec, value, source: str) -> None:
    """Raise ContractError unless ``value`` has the JSON type of the field's default
    (a field whose default is None takes a string).

    Args:
        spec: the dataclass field.
        value: its value in the parsed JSON (not None).
        source: what the JSON came from, for the message.
    """
    default = spec.default_factory() if spec.default is MISSING else spec.default
    allowed = (str,) if default is None else (type(default),)
    if not isinstance(value, allowed):
        raise ContractError(
            f"{source} is not a medmodels manifest: its '{spec.name}' is {type(value).__name__}, "
            f"not {' or '.join(t.__name__ for t in allowed)}{_FIX}"
        )
