"""The worker contract (``medmodels.contract``): one home for the output names and the manifest.

Every manifest field, enumerated from the ``Manifest`` dataclass, goes through
the writer and the reader unchanged; a missing, corrupt or foreign manifest is
a ``ContractError``; the pipeline writes what the contract plans; and the
pipeline, the module's logic and preparation and the stand-in worker spell no
manifest key or output name of their own (a static check of their source).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from medmodels.contract import (
    MANIFEST_NAME,
    OUTPUT_KINDS,
    SEGMENTATION,
    SYNTHESISED,
    UNCERTAINTY,
    ContractError,
    Manifest,
    OutputFile,
    planned_files,
    planned_outputs,
)
from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.modalities import MODALITY_KEYS
from medmodels.options import RunOptions

ROOT = Path(__file__).resolve().parents[2]
MODULE_LIB = ROOT / "MissingModalityTools" / "MissingModalityToolsLib"
STANDIN = ROOT / "MissingModalityTools" / "Resources" / "Testing" / "slicer_contract_worker.py"
#: The files that write or read the contract and must spell none of its keys or names themselves.
CONTRACT_USERS = [
    ROOT / "Lib" / "medmodels" / "pipeline.py",
    MODULE_LIB / "logic.py",
    MODULE_LIB / "preparation.py",
    STANDIN,
]
#: Keys of the preparation record that readers reach only through Manifest's methods.
PREPARATION_RECORD_KEYS = {"mode", "steps", "inspection", "findings", "message", "registration", "matrix"}


def _non_default(spec: dataclasses.Field):
    """A value of the field's JSON type that differs from its default and names the field."""
    default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
    if default is None or isinstance(default, str):
        return f"value-of-{spec.name}"
    if isinstance(default, dict):
        return {"t1c": f"value-of-{spec.name}", "t2": "second"}
    if isinstance(default, list):
        return [f"value-of-{spec.name}", "second"]
    raise AssertionError(f"Manifest.{spec.name} has a default of a type this test does not know: {default!r}")


def test_every_manifest_field_round_trips_through_writer_and_reader(tmp_path):
    specs = dataclasses.fields(Manifest)
    assert len(specs) >= 10  # reference ... device: the test enumerates, it does not list them
    values = {spec.name: _non_default(spec) for spec in specs}
    written = Manifest(**values)
    for spec in specs:
        assert getattr(written, spec.name) != getattr(Manifest(), spec.name), spec.name
    path = written.write(tmp_path / MANIFEST_NAME)
    assert path == tmp_path / MANIFEST_NAME
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert list(raw) == [spec.name for spec in specs]  # every field, in the declared order, nothing else
    read = Manifest.read(tmp_path)
    for spec in specs:
        assert getattr(read, spec.name) == values[spec.name], spec.name
    assert read == written
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]  # written atomically: no temporary left


def test_a_manifest_of_an_older_worker_reads_with_defaults(tmp_path):
    older = {"notes": ["Only a note."], "preparation": None, "extra": 1}  # null: not given; extra: a newer field
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(older), encoding="utf-8")
    manifest = Manifest.read(tmp_path)
    assert manifest.notes == ["Only a note."]
    assert manifest.label_convention == "2018" and manifest.segmentation is None and manifest.listed_files() == {}
    assert manifest.preparation == {} and not hasattr(manifest, "extra")
    assert manifest.preparation_mode() == "auto" and manifest.preparation_steps() == [] and manifest.findings() == []


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "without writing manifest.json"),
        ('{"reference": "flair", "synthesised": {', "cannot be read as a manifest"),
        ("[1, 2]", "not a JSON object"),
        ('{"weights": "model.pt"}', "has none of the fields"),
        ('{"synthesised": ["t1c.nii.gz"]}', "'synthesised' is list, not dict"),
        ('{"segmentation": 3}', "'segmentation' is int, not str"),
        ('{"synthesised": {"t1c": 7}}', "file entries for synthesised t1c are not file names"),
    ],
)
def test_a_missing_corrupt_or_foreign_manifest_is_a_contract_error(tmp_path, content, match):
    if content is not None:
        (tmp_path / MANIFEST_NAME).write_text(content, encoding="utf-8")
    with pytest.raises(ContractError, match=match) as caught:
        Manifest.read(tmp_path)
    assert isinstance(caught.value, InputError)  # the command line prints it as one ERROR: line


def test_output_files_and_the_run_plan():
    assert [OutputFile(SYNTHESISED, "t1c").name, OutputFile(UNCERTAINTY, "t1c").name] == [
        "t1c.nii.gz",
        "t1c_std.nii.gz",
    ]
    assert OutputFile(SEGMENTATION).name == "segmentation.nii.gz"
    with pytest.raises(ValueError, match="Unknown output kind"):
        OutputFile("weights")
    options = RunOptions(samples=3)
    assert planned_files(["flair", "t1"], options) == [
        OutputFile(SYNTHESISED, "t1c"),
        OutputFile(SYNTHESISED, "t2"),
        OutputFile(UNCERTAINTY, "t1c"),
        OutputFile(UNCERTAINTY, "t2"),
        OutputFile(SEGMENTATION),
    ]
    assert planned_outputs(["flair", "t1", "t1c", "t2"], RunOptions(segment=False)) == [MANIFEST_NAME]
    manifest = Manifest()
    for output in planned_files(["flair"], options):
        assert manifest.listed(output) is None
        manifest.list_file(output, output.name)
        assert manifest.listed(output) == output.name
    assert {f.kind for f in manifest.listed_files()} == set(OUTPUT_KINDS)


def test_the_pipeline_writes_the_manifest_the_contract_reads(tmp_path):
    from medmodels.pipeline import PipelineResult, write_outputs

    image = Image(np.ones((4, 5, 6), np.float32))
    result = PipelineResult("flair", {"t2": image}, {"t2": image}, Image(np.zeros((4, 5, 6), np.uint8)), ["a note"])
    options = RunOptions(samples=2, device="cpu")
    path = write_outputs(result, tmp_path / "out", options, {"flair": "f.nii.gz", "t1": "t1.nii.gz", "t1c": "c.nrrd"})
    manifest = Manifest.read(path.parent)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(planned_outputs(["flair", "t1", "t1c"], options))
    assert manifest.listed_files() == {f: f.name for f in planned_files(["flair", "t1", "t1c"], options)}
    assert manifest.reference == "flair" and manifest.notes == ["a note"] and manifest.device == "cpu"
    assert manifest.options == dataclasses.asdict(options) and manifest.inputs["t1c"] == "c.nrrd"


def _keys_spelled(path: Path, skip_function: str = "") -> set[str]:
    """The string constants a file uses as keys: ``x["k"]``, ``x.get("k")``, ``{"k": ...}``,
    ``getattr(x, "k")`` and ``... == "k"``, outside the function ``skip_function``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == skip_function
        for inner in ast.walk(node)
    }
    keys = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Subscript):
            keys.append(node.slice)
        elif isinstance(node, ast.Dict):
            keys += [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Compare):
            keys += [node.left, *node.comparators]
        elif isinstance(node, ast.Call) and node.args:
            name = ast.unparse(node.func)
            if name.endswith((".get", ".pop", ".setdefault")):
                keys.append(node.args[0])
            elif name in ("getattr", "hasattr", "setattr") and len(node.args) > 1:
                keys.append(node.args[1])
    return {k.value for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}


def _string_constants(path: Path) -> set[str]:
    """Every string constant of a file (f-string parts included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


@pytest.mark.parametrize("path", CONTRACT_USERS, ids=lambda p: p.name)
def test_contract_users_spell_no_manifest_key_or_output_name(path):
    banned = {spec.name for spec in dataclasses.fields(Manifest)} | set(OUTPUT_KINDS)
    # The stand-in writes a preparation record as medmodels.preparation does (its own function);
    # the readers reach that record only through Manifest's methods.
    keys = _keys_spelled(path, skip_function="preparation_record" if path == STANDIN else "")
    if path != STANDIN:
        banned |= PREPARATION_RECORD_KEYS
    assert not keys & banned, f"{path.name} spells the manifest keys {sorted(keys & banned)}: use medmodels.contract"
    contract_names = {OutputFile(kind, key).name for kind in OUTPUT_KINDS for key in MODALITY_KEYS} | {MANIFEST_NAME}
    # An f-string of a name, f"{key}.nii.gz", holds its suffix as a constant.
    names = [s for s in _string_constants(path) if s in contract_names | {".nii.gz", "_std.nii.gz"}]
    assert not names, f"{path.name} spells the output file names {names}: use medmodels.contract"


def test_the_module_reads_the_manifest_only_through_the_contract():
    for path in (MODULE_LIB / "logic.py", MODULE_LIB / "preparation.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "json" not in imported, f"{path.name} parses JSON itself"
        assert "medmodels.contract" in imported, f"{path.name} does not read through medmodels.contract"


def test_the_stand_in_worker_takes_the_librarys_defaults():
    spec = importlib.util.spec_from_file_location("slicer_contract_worker", STANDIN)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    parsed = worker.parse_arguments(["run", "--flair", "f.nrrd", "--out", "out"])
    library = RunOptions()
    assert parsed.steps == library.steps == 0  # 0: the model's own number of sampling steps
    assert (parsed.samples, parsed.seed, parsed.segment_on, parsed.labels, parsed.prepare) == (
        library.samples,
        library.seed,
        library.segment_on,
        library.label_convention,
        library.prepare,
    )
