"""The preparation step in the Slicer module (issues 13, 19): the ``prepare`` option,
the log of what the worker's preparation found and did, registration
transforms as transform nodes, and brain extraction, which runs in the
worker (never on Slicer's main thread), with its progress and Cancel.

Transform nodes and rollback are tested against slicer-core's real scene with
the contract stand-in worker; the brain extraction with the real worker on the
phantom with a head.
"""

from __future__ import annotations

import ast
import json
import types

import numpy as np
import pytest
from MissingModalityToolsLib.brain import extraction_line
from MissingModalityToolsLib.options import PanelOptions, options_from_parameter_node
from MissingModalityToolsLib.preparation import LPS_RAS, moving_to_reference_ras, preparation_lines
from MissingModalityToolsLib.worker import RunCancelled, WorkerError
from slicer_fixtures import (
    MODULE_DIR,
    add_study,
    add_volume,
    contract_logic,
    matrix,
    medmodels_logic,
    scene,  # noqa: F401  (pytest fixture)
    slicer,
    snapshot,
    vtk,
)


def _head(shape=(12, 14, 16), seed=0) -> np.ndarray:
    """A bright ball in noise that is non-zero everywhere: an unstripped head, as far as the checks go."""
    z, y, x = np.indices(shape)
    c = [(s - 1) / 2 for s in shape]
    r = np.sqrt(sum(((a - ca) / s) ** 2 for a, ca, s in zip((z, y, x), c, shape)))
    noise = np.random.default_rng(seed).random(shape) * 5 + 1
    return (np.clip(1.0 - 2 * r, 0, None) * 1000 + noise).astype(np.float32)


def _case(scene, keys=("flair", "t1", "t2")):
    study = add_study(scene)
    m = matrix((1.2, 1.0, 2.0), (10.0, -20.0, 5.0))
    return {k: add_volume(scene, f"Case3_{k}", _head(seed=i), m, study) for i, k in enumerate(keys)}, study


def _argv(record) -> list[str]:
    return json.loads((record / "argv.json").read_text(encoding="utf-8"))["argv"]


def _transform_nodes(scene) -> list:
    return [n for n in slicer.util.getNodesByClass("vtkMRMLLinearTransformNode") if n.GetScene() is scene]


# --- where the brain is extracted (pure) ---


def test_log_says_the_brain_is_extracted_in_the_worker_on_the_chosen_device():
    assert "off" in extraction_line("off", "cpu") and "deepbet" not in extraction_line("off", "cpu")
    line = extraction_line("auto", "cuda")
    assert "in the worker" in line and "device 'cuda'" in line and "not skull-stripped" in line
    assert "every run" in extraction_line("on", "cpu")


def test_no_module_code_runs_an_extractor_or_installs_anything_in_slicer():
    # HD-BET's first use downloaded code and weights without asking, on Slicer's main thread (issue 19).
    forbidden = ("HDBrainExtractionTool", "SwissSkullStripper", "setupPythonRequirements", "runSync", "extract_brains")
    for path in [
        MODULE_DIR / "MissingModalityTools.py",
        *sorted((MODULE_DIR / "MissingModalityToolsLib").glob("*.py")),
    ]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        assert not names & set(forbidden), path.name


def test_parameter_node_prepare_and_region_map_reach_the_worker_flags():
    node = types.SimpleNamespace(
        synthesize=True,
        segment=True,
        segmentOn="acquired",
        device="cpu",
        steps=0,
        samples=1,
        cleanup=True,
        regionMap=False,
        seed=0,
        prepare="off",
        namePrefix="",
    )
    options = options_from_parameter_node(node)
    assert options.prepare == "off" and not options.region_map
    argv = options.to_argv()
    assert argv[argv.index("--prepare") + 1] == "off"
    assert "--no-region-map" in argv and "--region-map" not in argv
    default = PanelOptions().to_argv()
    assert default[default.index("--prepare") + 1] == "auto"  # always written: the worker ships with the module
    assert "--region-map" in default and "--no-region-map" not in default


# --- the matrix convention and the log lines (pure) ---


def test_registration_matrix_becomes_moving_to_reference_in_ras():
    angle = np.deg2rad(7.0)
    lps = np.eye(4)  # reference -> moving, LPS: a rotation about the superior axis and a shift
    lps[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    lps[:3, 3] = (4.0, -6.0, 2.5)
    reference_lps = np.array([12.0, -30.0, 44.0, 1.0])
    moving_lps = lps @ reference_lps
    ras = moving_to_reference_ras(lps.tolist())
    assert np.allclose(ras @ (LPS_RAS @ moving_lps), LPS_RAS @ reference_lps)
    with pytest.raises(ValueError, match="invertible 4x4"):
        moving_to_reference_ras(np.zeros((4, 4)))


def test_log_lines_show_findings_then_notes_once():
    manifest = {
        "notes": ["Warning: T1 does not line up.", "T1 was registered onto FLAIR."],
        "preparation": {
            "mode": "auto",
            "steps": ["registration", "brain_extraction"],
            "inspection": {
                "findings": [{"code": "not_coregistered", "keys": ["t1"], "message": "T1 does not line up."}]
            },
        },
    }
    lines = preparation_lines(manifest)
    assert lines == [
        "Preparation (auto): registration, brain extraction.",
        "  T1 does not line up.",
        "  T1 was registered onto FLAIR.",
    ]
    assert preparation_lines({"notes": ["Only a note."]}) == ["  Only a note."]  # an older worker's manifest


# --- against slicer-core's real scene ---


@pytest.mark.slicer
def test_registrations_come_back_as_transform_nodes_and_inputs_stay_untouched(scene, tmp_path):
    inputs, study = _case(scene)
    before = {k: (n.GetMTime(), slicer.util.arrayFromVolume(n).copy()) for k, n in inputs.items()}
    record, log, progress = tmp_path / "record", [], []
    result = contract_logic(scene, tmp_path, record=record).run_blocking(
        inputs,
        PanelOptions(segment=False, name_prefix="P3 "),
        on_log=log.append,
        on_progress=lambda f, m: progress.append(m),
    )
    assert _argv(record)[_argv(record).index("--prepare") + 1] == "auto"
    manifest = json.loads((record / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(result.transforms) == ["t1", "t2"] and result.preparation["steps"][0] == "registration"
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for key, display in (("t1", "T1"), ("t2", "T2")):
        node = result.transforms[key]
        assert node.GetName() == f"P3 {display} -> FLAIR (rigid)"
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study
        # A point of the moving volume (RAS) goes to the reference point it was registered onto.
        lps = np.asarray(manifest["preparation"]["registration"][key]["matrix"])
        reference_ras = np.array([15.0, -8.0, 12.0, 1.0])
        moving_ras = LPS_RAS @ lps @ LPS_RAS @ reference_ras
        m = vtk.vtkMatrix4x4()
        node.GetMatrixTransformToParent(m)
        assert np.allclose(slicer.util.arrayFromVTKMatrix(m) @ moving_ras, reference_ras, atol=1e-6)
        assert np.allclose(
            node.GetTransformToParent().TransformPoint(moving_ras[:3].tolist()), reference_ras[:3], atol=1e-6
        )
    for key, node in inputs.items():  # nothing applied to, or changed in, the inputs
        assert node.GetParentTransformNode() is None and node.GetMTime() == before[key][0]
        assert np.array_equal(slicer.util.arrayFromVolume(node), before[key][1])
    # The log has the findings and the notes; the progress bar saw each preparation step.
    finding = manifest["preparation"]["inspection"]["findings"][0]["message"]
    assert f"  {finding}" in log and any("registered onto flair" in line for line in log)
    assert any(m.startswith("Registering") for m in progress) and "Extracting the brain" in progress


@pytest.mark.slicer
def test_prepare_off_gives_no_transforms_and_warnings(scene, tmp_path):
    inputs, _ = _case(scene)
    record, log = tmp_path / "record", []
    result = contract_logic(scene, tmp_path, record=record).run_blocking(
        inputs, PanelOptions(segment=False, prepare="off"), on_log=log.append
    )
    assert _argv(record)[_argv(record).index("--prepare") + 1] == "off"
    assert result.transforms == {} and _transform_nodes(scene) == []
    assert any(line.startswith("  Warning:") for line in log) and "Preparation (off): nothing to do." in log


@pytest.mark.slicer
@pytest.mark.parametrize("mode", ["badlabel", "slow"])
def test_failed_or_cancelled_run_leaves_no_transform_nodes(scene, tmp_path, mode):
    inputs, _ = _case(scene)
    before = snapshot(scene)
    logic = contract_logic(scene, tmp_path, mode=mode)
    seen = []
    expected = WorkerError if mode == "badlabel" else RunCancelled
    with pytest.raises(expected):
        logic.run_blocking(
            inputs, PanelOptions(), on_progress=lambda f, m: seen.append(f), should_cancel=lambda: len(seen) > 8
        )
    assert _transform_nodes(scene) == [] and snapshot(scene) == before


# --- brain extraction in the real worker (issue 19) ---


def _phantom_head_inputs(scene, keys=("flair", "t1", "t2")):
    """The phantom with a head (not skull-stripped) as volume nodes: LPS images placed in RAS."""
    from medmodels.phantom import make_phantom

    head = make_phantom((64, 64, 42), seed=3, head=True)
    study = add_study(scene)
    out = {}
    for key in keys:
        image = head.images[key]
        m = np.diag([-1.0, -1.0, 1.0, 1.0]) @ matrix(image.spacing, image.origin)  # LPS -> RAS
        out[key] = add_volume(scene, f"Head_{key}", image.array.astype(np.float32), m, study)
    return out


@pytest.mark.slicer
@pytest.mark.slow
def test_brain_extraction_runs_in_the_worker_with_progress_and_cancel(scene, tmp_path):
    inputs = _phantom_head_inputs(scene)
    before = snapshot(scene)
    log, progress = [], []
    logic = medmodels_logic(scene, tmp_path)
    with pytest.raises(RunCancelled):
        logic.run_blocking(
            inputs,
            PanelOptions(synthesize=False, segment=True, device="cpu", prepare="auto"),
            on_log=log.append,
            on_progress=lambda f, m: progress.append(m),
            should_cancel=lambda: any(m.startswith("Extracting the brain") for m in progress),
            timeout=300,
        )
    # The worker said it was extracting (a PROGRESS line), the panel was live to cancel it, and the
    # extraction never finished: Cancel stopped the worker in the middle of it.
    assert any(m.startswith("Extracting the brain (deepbet)") for m in progress)
    assert not any("The brain was extracted" in line for line in log)
    running = next(line for line in log if line.startswith("Running: "))
    assert "--device cpu" in running and "--prepare auto" in running
    assert extraction_line("auto", "cpu") in log
    assert snapshot(scene) == before  # nothing added, nothing left behind


@pytest.mark.slicer
@pytest.mark.slow
def test_worker_extracts_the_brain_and_reports_it(scene, tmp_path):
    inputs = _phantom_head_inputs(scene, keys=("flair", "t1"))
    log = []
    result = medmodels_logic(scene, tmp_path).run_blocking(
        inputs, PanelOptions(synthesize=False, segment=True, device="cpu"), on_log=log.append, timeout=600
    )
    extraction = result.preparation["brain_extraction"]
    assert extraction["method"] == "deepbet" and extraction["used"] == ["t1"] and extraction["problems"] == []
    assert 800 <= extraction["volume_ml"] <= 2000
    assert any("The brain was extracted (deepbet, from T1;" in line for line in log)
