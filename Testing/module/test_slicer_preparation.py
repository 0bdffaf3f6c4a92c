"""The preparation step in the Slicer module (issue 13): the ``prepare`` option,
the log of what the worker's preparation found and did, registration
transforms as transform nodes, and brain extraction with an installed
extension.

The decision of which extractor runs is tested with injected availability
(neither HDBrainExtraction nor SwissSkullStripper exists in slicer-core);
transform nodes, rollback and the extraction's scene handling against
slicer-core's real scene with the contract stand-in worker.
"""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from MissingModalityToolsLib.brain import installed_extractors, plan_extraction
from MissingModalityToolsLib.options import RunOptions, options_from_parameter_node
from MissingModalityToolsLib.preparation import LPS_RAS, moving_to_reference_ras, preparation_lines
from MissingModalityToolsLib.worker import RunCancelled, WorkerError
from slicer_fixtures import (
    add_study,
    add_volume,
    contract_logic,
    matrix,
    scene,  # noqa: F401  (pytest fixture)
    slicer,
    snapshot,
    vtk,
)

BOTH = ("HDBrainExtraction", "SwissSkullStripper")


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


# --- which extractor, which flag (pure) ---


@pytest.mark.parametrize(
    ("mode", "installed", "stripped", "extractor", "worker"),
    [
        ("off", BOTH, False, None, "off"),  # off: nothing, whatever is installed
        ("auto", (), False, None, "auto"),  # nothing installed: the worker's offline fallback decides
        ("on", (), None, None, "on"),  # ... and "on" makes the worker strip
        ("auto", BOTH, False, "HDBrainExtraction", "auto"),  # HD-BET preferred
        ("auto", ("SwissSkullStripper",), False, "SwissSkullStripper", "auto"),
        ("on", ("SwissSkullStripper",), True, "SwissSkullStripper", "auto"),  # on: even when it looks stripped
        ("auto", BOTH, True, None, "auto"),  # already stripped: no extension run
    ],
)
def test_plan_chooses_the_extractor_and_the_worker_flag(mode, installed, stripped, extractor, worker):
    plan = plan_extraction(mode, installed, stripped)
    assert (plan.extractor, plan.worker_prepare) == (extractor, worker)
    assert plan.reason and (extractor is None or extractor in plan.reason)
    # The worker never strips again after an extension did: it gets "auto" (stripped inputs pass).
    assert extractor is None or worker == "auto"


def test_installed_extractors_come_from_the_module_registry():
    both = types.SimpleNamespace(swissskullstripper=object(), hdbrainextractiontool=object(), volumes=object())
    assert installed_extractors(both) == ["HDBrainExtraction", "SwissSkullStripper"]
    assert installed_extractors(types.SimpleNamespace(swissskullstripper=object())) == ["SwissSkullStripper"]
    assert installed_extractors(types.SimpleNamespace(volumes=object())) == []
    assert installed_extractors() == []  # slicer-core: no application, no extensions


def test_parameter_node_prepare_reaches_the_worker_flag():
    node = types.SimpleNamespace(
        synthesize=True,
        segment=True,
        segmentOn="acquired",
        device="cpu",
        steps=0,
        samples=1,
        cleanup=True,
        seed=0,
        prepare="off",
        namePrefix="",
    )
    options = options_from_parameter_node(node)
    assert options.prepare == "off"
    argv = options.to_argv()
    assert argv[argv.index("--prepare") + 1] == "off"
    default = RunOptions().to_argv()
    assert default[default.index("--prepare") + 1] == "auto"  # always written: the worker ships with the module


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
        RunOptions(segment=False, name_prefix="P3 "),
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
        inputs, RunOptions(segment=False, prepare="off"), on_log=log.append
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
            inputs, RunOptions(), on_progress=lambda f, m: seen.append(f), should_cancel=lambda: len(seen) > 8
        )
    assert _transform_nodes(scene) == [] and snapshot(scene) == before


def _strip_outside_the_ball(scene, input_node, output_node) -> None:
    """A stand-in extension: the input with everything below a tenth of its maximum set to 0."""
    array = slicer.util.arrayFromVolume(input_node)
    slicer.util.updateVolumeFromArray(output_node, np.where(array > 0.1 * array.max(), array, 0).astype(np.float32))
    m = vtk.vtkMatrix4x4()
    input_node.GetIJKToRASMatrix(m)
    output_node.SetIJKToRASMatrix(m)


@pytest.mark.slicer
def test_installed_extension_strips_copies_and_the_worker_does_not_strip_again(scene, tmp_path):
    inputs, _ = _case(scene, keys=("flair", "t1c"))
    before = {k: slicer.util.arrayFromVolume(n).copy() for k, n in inputs.items()}
    n_volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    given = []

    def runner(scene_, input_node, output_node):
        given.append(input_node)
        _strip_outside_the_ball(scene_, input_node, output_node)

    record, log = tmp_path / "record", []
    logic = contract_logic(scene, tmp_path, record=record)
    logic.extension_modules = types.SimpleNamespace(hdbrainextractiontool=object(), swissskullstripper=object())
    logic.extractor_runners = {"HDBrainExtraction": runner}
    logic.run_blocking(inputs, RunOptions(synthesize=False, prepare="on"), on_log=log.append)
    assert len(given) == 2 and not any(n in inputs.values() for n in given)  # copies, never the user's nodes
    assert _argv(record)[_argv(record).index("--prepare") + 1] == "auto"
    assert any("HDBrainExtraction extracted the brain of FLAIR, T1c" in line for line in log)
    manifest = json.loads((record / "manifest.json").read_text(encoding="utf-8"))
    assert "brain_extraction" not in manifest["preparation"]["steps"]  # the worker found the inputs stripped
    import SimpleITK as sitk

    sent = sitk.GetArrayFromImage(sitk.ReadImage(str(record / "input_flair.nrrd")))
    assert np.array_equal(sent, np.where(before["flair"] > 0.1 * before["flair"].max(), before["flair"], 0))
    for key, node in inputs.items():
        assert np.array_equal(slicer.util.arrayFromVolume(node), before[key])
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == n_volumes  # the copies are gone


@pytest.mark.slicer
def test_a_failing_extension_falls_back_to_the_worker(scene, tmp_path):
    inputs, _ = _case(scene, keys=("flair", "t1c"))

    def broken(scene_, input_node, output_node):
        raise RuntimeError("HD-BET weights could not be downloaded")

    record, log = tmp_path / "record", []
    logic = contract_logic(scene, tmp_path, record=record)
    logic.extension_modules = types.SimpleNamespace(hdbrainextractiontool=object())
    logic.extractor_runners = {"HDBrainExtraction": broken}
    result = logic.run_blocking(inputs, RunOptions(synthesize=False, prepare="on"), on_log=log.append)
    assert _argv(record)[_argv(record).index("--prepare") + 1] == "on"  # the worker strips instead
    assert any("HDBrainExtraction failed (HD-BET weights could not be downloaded)" in line for line in log)
    assert result.segmentation is not None and len(result.transforms) == 1
    # Nothing the extension was given or made stays behind.
    names = [scene.GetNthNode(i).GetName() or "" for i in range(scene.GetNumberOfNodes())]
    assert not [n for n in names if "temporary" in n]
