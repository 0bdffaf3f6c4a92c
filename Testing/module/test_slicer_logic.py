"""The Slicer module's logic against slicer-core's real MRML scene.

These tests drive the logic with the contract stand-in worker
(slicer_contract_worker.py), so every path (success, progress, cancel in
mid-run, crash, failure, grids, oblique geometry) is exercised in seconds and
without model weights. test_slicer_end_to_end.py runs the real medmodels.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import SimpleITK as sitk
from medmodels.errors import InputError
from MissingModalityToolsLib.inputs import (
    assign_by_name,
    assign_slots,
    availability,
    describe_availability,
    input_problems,
)
from MissingModalityToolsLib.nodes import NodeError, read_scalar_volume, write_volume
from MissingModalityToolsLib.options import PanelOptions
from MissingModalityToolsLib.segments import SEGMENTS
from MissingModalityToolsLib.worker import RunCancelled, WorkerError
from slicer_fixtures import (
    add_study,
    add_volume,
    contract_logic,
    export_labels,
    ijk_to_ras,
    matrix,
    scene,  # noqa: F401  (pytest fixture)
    slicer,
    snapshot,
)

pytestmark = [pytest.mark.slicer]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _brain(shape=(10, 12, 14), seed=0) -> np.ndarray:
    """A blob with a bright centre, so the stand-in's intensity bands give all three labels."""
    z, y, x = np.indices(shape)
    c = [(s - 1) / 2 for s in shape]
    r = np.sqrt(((z - c[0]) / shape[0]) ** 2 + ((y - c[1]) / shape[1]) ** 2 + ((x - c[2]) / shape[2]) ** 2)
    noise = np.random.default_rng(seed).random(shape) * 5
    return (np.clip(1.0 - 2 * r, 0, None) * 1000 + noise).astype(np.float32)


def _case(scene, keys=("flair", "t1", "t2"), m=None, names=None):
    study = add_study(scene)
    m = matrix((1.2, 1.0, 2.0), (10.0, -20.0, 5.0)) if m is None else m
    names = names or {k: f"Case7_{k}" for k in keys}
    return {k: add_volume(scene, names[k], _brain(seed=i), m, study) for i, k in enumerate(keys)}, study


def _temp_dirs(tmp_path):
    return [p for p in os.listdir(tmp_path) if p.startswith("MissingModalityTools-")]


def test_case_without_t1c_gains_synthesised_t1c_and_three_segments(scene, tmp_path):
    inputs, study = _case(scene)
    before = {k: (n.GetMTime(), slicer.util.arrayFromVolume(n).copy()) for k, n in inputs.items()}
    n_before = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    progress = []
    result = contract_logic(scene, tmp_path).run_blocking(
        inputs, PanelOptions(), on_progress=lambda f, m: progress.append(f)
    )
    t1c = result.synthesized["t1c"]
    assert list(result.synthesized) == ["t1c"] and result.reference_key == "flair"
    assert t1c.GetName() == "T1c (synthesised)"
    assert t1c.GetImageData().GetDimensions() == inputs["flair"].GetImageData().GetDimensions()
    assert np.allclose(ijk_to_ras(t1c), ijk_to_ras(inputs["flair"]), atol=1e-5)
    # The stand-in's synthesis is flair * 0.5 + 7: the voxels came through in order.
    assert np.allclose(slicer.util.arrayFromVolume(t1c), slicer.util.arrayFromVolume(inputs["flair"]) * 0.5 + 7)
    assert t1c.GetStorageNode() is None  # saved with the scene, not pointing at a deleted temp file
    seg = result.segmentation
    segmentation = seg.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["Necrotic tumour core", "Peritumoral edema", "Enhancing tumour"]
    for spec in SEGMENTS:
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(spec.name))
        assert np.allclose(segment.GetColor(), spec.color)
        assert f"SCT^{spec.code[0]}^{spec.code[2]}" in segment.GetTerminology()
    # Reference geometry of the segmentation is the reference input's.
    geometry = seg.GetNodeReferenceID(seg.GetReferenceImageGeometryReferenceRole())
    assert geometry == inputs["flair"].GetID()
    # New nodes sit in the inputs' study.
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for node in result.nodes():
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study
    # Inputs never modified; exactly two new volumes (the default 4 samples add the uncertainty of T1c);
    # temp folder gone; progress reported in order.
    for k, n in inputs.items():
        assert n.GetMTime() == before[k][0]
        assert np.array_equal(slicer.util.arrayFromVolume(n), before[k][1])
    assert list(result.uncertainty) == ["t1c"] and result.uncertainty["t1c"].GetName() == "T1c (synthesis uncertainty)"
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == n_before + 2
    assert _temp_dirs(tmp_path) == []
    assert progress and progress == sorted(progress) and progress[-1] == 1.0


def test_command_line_follows_the_contract(scene, tmp_path):
    inputs, _ = _case(scene, keys=("t1", "t2"))
    record = tmp_path / "record"
    options = PanelOptions(segment_on="all", device="cpu", steps=7, samples=3, cleanup=False, seed=5)
    result = contract_logic(scene, tmp_path, record=record).run_blocking(inputs, options)
    sent = json.loads((record / "argv.json").read_text(encoding="utf-8"))
    argv = sent["argv"]
    assert sent["MEDMODELS_PROGRESS"] == "lines"
    assert argv[0] == "run"
    assert argv[argv.index("--t1") + 1].endswith("t1.nrrd") and "--flair" not in argv and "--t1c" not in argv
    for flag, value in (
        ("--segment-on", "all"),
        ("--device", "cpu"),
        ("--steps", "7"),
        ("--samples", "3"),
        ("--seed", "5"),
    ):
        assert argv[argv.index(flag) + 1] == value
    assert "--synthesize" in argv and "--segment" in argv and "--no-cleanup" in argv and "--cleanup" not in argv
    logic = contract_logic(scene, tmp_path, record=record)
    logic.extra_arguments = ["--seg-checkpoint", "/weights/own.pt"]  # e.g. an offline site's own weights
    default = logic.run_blocking(inputs, PanelOptions(segment=False))
    argv = json.loads((record / "argv.json").read_text(encoding="utf-8"))["argv"]
    assert "--steps" not in argv and "--cleanup" in argv and "--segment" not in argv  # the model's own steps
    assert argv[-2:] == ["--seg-checkpoint", "/weights/own.pt"]
    assert default.segmentation is None
    # samples > 1: one uncertainty volume per synthesised modality.
    assert sorted(result.synthesized) == sorted(result.uncertainty) == ["flair", "t1c"]
    assert result.uncertainty["flair"].GetName() == "FLAIR (synthesis uncertainty)"


def test_segment_only_and_synthesise_only(scene, tmp_path):
    inputs, _ = _case(scene, keys=("flair", "t1c"))
    logic = contract_logic(scene, tmp_path)
    only_seg = logic.run_blocking(inputs, PanelOptions(synthesize=False, name_prefix="P1 "))
    assert only_seg.synthesized == {} and only_seg.segmentation.GetName() == "P1 Tumour segmentation"
    only_syn = logic.run_blocking(inputs, PanelOptions(segment=False))
    assert only_syn.segmentation is None and sorted(only_syn.synthesized) == ["t1", "t2"]


def test_cancel_in_mid_run_kills_the_tree_and_leaves_the_scene(scene, tmp_path):
    inputs, _ = _case(scene)
    record = tmp_path / "record"
    before = snapshot(scene)
    seen = []
    logic = contract_logic(scene, tmp_path, mode="slow", record=record)
    t0 = time.monotonic()
    with pytest.raises(RunCancelled, match="nothing was added"):
        logic.run_blocking(
            inputs,
            PanelOptions(),
            on_progress=lambda f, m: seen.append(f),
            should_cancel=lambda: len(seen) >= 5 and (record / "child.pid").exists(),
        )
    assert time.monotonic() - t0 < 30
    assert 0 < max(seen) < 0.5  # it was cancelled in mid-run, not after
    child = int((record / "child.pid").read_text(encoding="utf-8"))
    for _ in range(50):  # the grandchild is reaped by init shortly after the kill
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the worker's child process {child} survived cancel")
    assert snapshot(scene) == before
    assert _temp_dirs(tmp_path) == []  # partial outputs removed


def test_cancel_through_start_poll_finish(scene, tmp_path):
    """The panel's way: start, poll from a timer, cancel, finish."""
    inputs, _ = _case(scene)
    before = snapshot(scene)
    logic = contract_logic(scene, tmp_path, mode="slow")
    run = logic.start(inputs, PanelOptions())
    deadline = time.monotonic() + 20
    while run.poll() and run.last_fraction == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.worker.running
    run.cancel()
    assert not run.worker.running
    with pytest.raises(RunCancelled):
        logic.finish(run)
    assert snapshot(scene) == before and _temp_dirs(tmp_path) == []


def test_crashing_worker_gives_a_clear_error_and_leaves_the_scene(scene, tmp_path):
    inputs, _ = _case(scene)
    before = snapshot(scene)
    with pytest.raises(WorkerError) as err:
        contract_logic(scene, tmp_path, mode="crash").run_blocking(inputs, PanelOptions())
    message = str(err.value)
    assert "killed by signal 11" in message and "Nothing was added to the scene" in message
    assert "simulated segfault" in message  # the last stderr lines are quoted
    assert snapshot(scene) == before and _temp_dirs(tmp_path) == []


def test_worker_error_line_is_passed_on(scene, tmp_path):
    inputs, _ = _case(scene)
    before = snapshot(scene)
    with pytest.raises(WorkerError, match="The T2 volume is all zeros: choose the T2 series"):
        contract_logic(scene, tmp_path, mode="error").run_blocking(inputs, PanelOptions())
    assert snapshot(scene) == before


def test_run_without_manifest_is_not_loaded(scene, tmp_path):
    inputs, _ = _case(scene)
    before = snapshot(scene)
    with pytest.raises(WorkerError, match="manifest.json"):
        contract_logic(scene, tmp_path, mode="nomanifest").run_blocking(inputs, PanelOptions())
    assert snapshot(scene) == before and _temp_dirs(tmp_path) == []


def test_failure_while_loading_removes_what_was_added(scene, tmp_path):
    """The synthesised volume loads, then the segmentation has a label the module
    does not know: the volume must go again."""
    inputs, _ = _case(scene)
    before = snapshot(scene)
    with pytest.raises(WorkerError, match=r"labels \[3\]") as err:
        contract_logic(scene, tmp_path, mode="badlabel").run_blocking(inputs, PanelOptions())
    assert snapshot(scene) == before
    assert isinstance(err.value.__cause__, NodeError)  # nodes.py's own error, reported as a failed run


def test_node_errors_name_the_node_and_the_fix(scene, tmp_path):
    """nodes.py raises NodeError, naming the node or file and what to do, and adds nothing."""
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty T2")
    with pytest.raises(NodeError, match="Volume 'empty T2' has no voxels: load the image again"):
        write_volume(empty, str(tmp_path / "empty.nrrd"))
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Tumour")
    with pytest.raises(NodeError, match="'Tumour' is a vtkMRMLSegmentationNode, not a volume: choose a volume"):
        write_volume(segmentation, str(tmp_path / "tumour.nrrd"))
    with pytest.raises(NodeError, match="No volume node was given"):
        write_volume(None, str(tmp_path / "none.nrrd"))
    assert sorted(os.listdir(tmp_path)) == []
    before = snapshot(scene)
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    for name in ("broken.nii.gz", "absent.nii.gz"):
        with pytest.raises(NodeError, match=rf"could not read the image .*{name}.*rerun"):
            read_scalar_volume(scene, str(tmp_path / name), "result")
    assert snapshot(scene) == before
    # The run refuses the same bad node before it writes anything.
    with pytest.raises(InputError, match="'empty T2' has no voxels"):
        contract_logic(scene, tmp_path).start({"t2": empty}, PanelOptions())
    assert _temp_dirs(tmp_path) == []


def test_one_logic_serves_every_run(scene, tmp_path):
    """The panel makes one logic and keeps it: set up once, it serves blocking and
    start/poll/finish runs, before and after a refused one, and no run leaves
    state on it (each run's state is its own Run)."""
    record = tmp_path / "record"
    logic = contract_logic(scene, tmp_path, record=record)
    logic.extra_arguments = ["--seg-checkpoint", "/weights/own.pt"]
    configuration = {
        k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v) for k, v in vars(logic).items()
    }
    inputs, _ = _case(scene)
    first = logic.run_blocking(inputs, PanelOptions(segment=False))
    with pytest.raises(InputError, match="No volume selected"):
        logic.start({}, PanelOptions())
    run = logic.start(inputs, PanelOptions(synthesize=False, name_prefix="P2 "))
    while run.poll():
        time.sleep(0.05)
    second = logic.finish(run)
    assert first.synthesized["t1c"].GetName() == "T1c (synthesised)" and first.segmentation is None
    assert second.segmentation.GetName() == "P2 Tumour segmentation" and second.synthesized == {}
    assert json.loads((record / "argv.json").read_text(encoding="utf-8"))["argv"][-2:] == [
        "--seg-checkpoint",
        "/weights/own.pt",
    ]  # the second run used the configuration set once
    assert vars(logic) == configuration
    assert _temp_dirs(tmp_path) == []


def test_input_checks_are_a_unit_of_their_own(scene):
    """inputs.py decides, without a logic, a worker or a file, what the Apply tooltip lists."""
    from MissingModalityToolsLib import inputs as checks
    from MissingModalityToolsLib.headless import make_scene

    case, _ = _case(scene, keys=("flair", "t1"))
    flair, t1 = case["flair"], case["t1"]
    assert checks.selected_inputs({"t1": t1, "t2": None, "flair": flair}) == {"flair": flair, "t1": t1}
    assert checks.volume_problem("flair", flair) is None
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    t1.SetAndObserveTransformNodeID(transform.GetID())
    assert checks.volume_problem("t1", t1).startswith("T1 volume 'Case7_t1' is under transform 'moved': harden")
    t1.SetAndObserveTransformNodeID(None)
    far = add_volume(scene, "far_t2", _brain(), matrix(origin=(500.0, 0.0, 0.0)))
    assert checks.overlap_problems({"flair": flair, "t1": t1}) == []
    [problem] = checks.overlap_problems({"flair": flair, "t2": far})
    assert problem.startswith("T2 volume 'far_t2' does not overlap the reference FLAIR volume 'Case7_flair'")
    [problem] = checks.duplicate_problems({"flair": flair, "t1c": flair})
    assert "'Case7_flair'" in problem and flair.GetID() not in problem
    assert checks.input_problems({"pd": flair}, PanelOptions())[0].startswith("Unknown modality slot(s) ['pd']")
    other = make_scene()
    stranger = add_volume(other, "other_flair", _brain(), matrix())
    assert checks.input_problems({"flair": stranger}, PanelOptions()) == []
    assert checks.scene_problems({"flair": stranger, "t1": t1}, scene) == [
        "Volume 'other_flair' is not in this scene: choose a volume from the scene."
    ]
    other.Clear(1)


@pytest.mark.slow
def test_a_child_holding_the_output_open_does_not_hang_the_run(scene, tmp_path):
    inputs, _ = _case(scene)
    record = tmp_path / "record"
    t0 = time.monotonic()
    try:
        result = contract_logic(scene, tmp_path, mode="orphan", record=record).run_blocking(inputs, PanelOptions())
        assert result.synthesized["t1c"].GetName() == "T1c (synthesised)"
        assert time.monotonic() - t0 < 30
    finally:
        os.kill(int((record / "child.pid").read_text(encoding="utf-8")), 9)  # the stand-in's own child, by its ID


def test_problems_name_the_fix(scene):
    inputs, _ = _case(scene, keys=("flair", "t1"))
    ok = PanelOptions()
    assert input_problems(inputs, ok) == []
    assert input_problems({}, ok) == ["No volume selected: choose at least one of FLAIR, T1, T1c or T2."]
    dup = input_problems({"flair": inputs["flair"], "t2": inputs["flair"]}, ok)
    assert len(dup) == 1 and "'Case7_flair' is chosen for both FLAIR and T2" in dup[0]
    far = add_volume(scene, "far_t2", _brain(), matrix(origin=(500.0, 0.0, 0.0)))
    grid = input_problems({"flair": inputs["flair"], "t2": far}, ok)
    assert len(grid) == 1 and "cannot be brought together" in grid[0] and "register them" in grid[0]
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    inputs["t1"].SetAndObserveTransformNodeID(transform.GetID())
    assert "harden the transform" in input_problems(inputs, ok)[0]
    inputs["t1"].SetAndObserveTransformNodeID(None)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    assert "has no voxels" in input_problems({"t2": empty}, ok)[0]
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(labelmap, np.zeros((2, 2, 2), np.uint8))
    assert "not a scalar MR volume" in input_problems({"t2": labelmap}, ok)[0]
    assert "Nothing to run" in input_problems(inputs, PanelOptions(synthesize=False, segment=False))[0]
    assert "needs synthesis" in input_problems(inputs, PanelOptions(synthesize=False, segment_on="all"))[0]
    all_four, _ = _case(scene, keys=("flair", "t1", "t1c", "t2"))
    assert "nothing to synthesise" in input_problems(all_four, PanelOptions(segment=False))[0]
    assert input_problems(all_four, PanelOptions()) == []


def test_start_refuses_bad_input_before_writing_anything(scene, tmp_path):
    inputs, _ = _case(scene, keys=("flair",))
    with pytest.raises(InputError, match="chosen for both"):
        contract_logic(scene, tmp_path).start({"flair": inputs["flair"], "t1": inputs["flair"]}, PanelOptions())
    assert _temp_dirs(tmp_path) == []


def test_inputs_on_different_grids(scene, tmp_path):
    """Different spacing, size and orientation are fine (medmodels resamples onto
    the reference); the outputs are on the reference (first acquired) grid."""
    study = add_study(scene)
    flair = add_volume(scene, "A_flair", _brain((10, 12, 14)), matrix((1.2, 1.0, 2.0), (10.0, -20.0, 5.0)), study)
    t2 = add_volume(scene, "A_t2", _brain((6, 8, 9)), matrix((2.0, 1.6, 3.0), (12.0, -18.0, 6.0), (0, 0, 0.2)), study)
    inputs = {"flair": flair, "t2": t2}
    assert input_problems(inputs, PanelOptions()) == []
    record = tmp_path / "record"
    result = contract_logic(scene, tmp_path, record=record).run_blocking(inputs, PanelOptions())
    for node in result.synthesized.values():
        assert node.GetImageData().GetDimensions() == flair.GetImageData().GetDimensions()
        assert np.allclose(ijk_to_ras(node), ijk_to_ras(flair), atol=1e-5)
    # Each input reached the worker on its own grid, unresampled.
    t2_file = sitk.ReadImage(str(record / "input_t2.nrrd"))
    assert t2_file.GetSize() == (9, 8, 6)


def _ras_matrix_of(image: sitk.Image) -> np.ndarray:
    d = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    m = np.eye(4)
    m[:3, :3] = LPS_TO_RAS @ d
    m[:3, 3] = LPS_TO_RAS @ np.array(image.GetOrigin())
    return m


def test_oblique_geometry_round_trips(scene, tmp_path):
    """Scene -> file for the worker -> worker's outputs -> new nodes, on an oblique grid."""
    oblique = matrix((0.9, 1.1, 2.5), (-31.5, 12.25, 40.0), (0.35, -0.2, 0.6))
    inputs, _ = _case(scene, keys=("flair", "t1c"), m=oblique)
    record = tmp_path / "record"
    result = contract_logic(scene, tmp_path, record=record).run_blocking(inputs, PanelOptions())
    written = sitk.ReadImage(str(record / "input_flair.nrrd"))
    assert np.allclose(_ras_matrix_of(written), oblique, atol=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(written), slicer.util.arrayFromVolume(inputs["flair"]))
    for node in result.synthesized.values():
        assert np.allclose(ijk_to_ras(node), oblique, atol=1e-5)
    worker_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(record / "segmentation.nii.gz")))
    assert set(np.unique(worker_labels)) == {0, 1, 2, 4}
    exported = export_labels(result.segmentation, inputs["flair"])
    assert np.array_equal(exported, worker_labels)


def test_results_survive_scene_save_and_reload(scene, tmp_path):
    """The new nodes have no storage node of their own, so saving the scene writes
    their data; a fresh scene read from the bundle has them back, geometry included."""
    from MissingModalityToolsLib.headless import make_scene

    oblique = matrix((0.9, 1.1, 2.5), (-31.5, 12.25, 40.0), (0.35, -0.2, 0.6))
    inputs, _ = _case(scene, m=oblique)
    result = contract_logic(scene, tmp_path).run_blocking(inputs, PanelOptions(samples=2))
    labels_before = export_labels(result.segmentation, inputs["flair"])
    bundle = str(tmp_path / "case.mrb")
    assert scene.WriteToMRB(bundle)
    reloaded = make_scene()
    cache = slicer.vtkCacheManager()  # what the application gives a scene for reading bundles
    cache.SetRemoteCacheDirectory(str(tmp_path / "cache"))
    io_manager = slicer.vtkDataIOManager()
    io_manager.SetCacheManager(cache)
    reloaded.SetDataIOManager(io_manager)
    reloaded.SetCacheManager(cache)
    assert reloaded.ReadFromMRB(bundle)
    t1c = reloaded.GetFirstNodeByName("T1c (synthesised)")
    std = reloaded.GetFirstNodeByName("T1c (synthesis uncertainty)")
    seg = reloaded.GetFirstNodeByName("Tumour segmentation")
    flair = reloaded.GetFirstNodeByName("Case7_flair")
    assert t1c is not None and std is not None and seg is not None
    assert np.allclose(ijk_to_ras(t1c), oblique, atol=1e-5)
    assert np.array_equal(slicer.util.arrayFromVolume(t1c), slicer.util.arrayFromVolume(result.synthesized["t1c"]))
    segmentation = seg.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(3)] == [s.name for s in SEGMENTS]
    assert "SCT^6574001^Necrosis" in segmentation.GetNthSegment(0).GetTerminology()
    assert np.array_equal(export_labels(seg, flair), labels_before)
    reloaded.Clear(1)


def test_assign_by_name_brats_2018_and_2023(scene):
    s18 = {
        k: add_volume(scene, f"Brats18_CBICA_AAB_1_{suffix}", _brain(), matrix())
        for k, suffix in (("flair", "flair"), ("t1", "t1"), ("t1c", "t1ce"), ("t2", "t2"))
    }
    chosen, notes = assign_by_name(list(s18.values()))
    assert chosen == s18 and notes == []
    scene2 = scene  # 2023 names in the same scene would be ambiguous with 2018: check separately
    s23 = {
        k: add_volume(scene2, f"BraTS-GLI-00001-000-{suffix}", _brain(), matrix())
        for k, suffix in (("flair", "t2f"), ("t1", "t1n"), ("t1c", "t1c"), ("t2", "t2w"))
    }
    chosen23, _ = assign_by_name(list(s23.values()))
    assert chosen23 == s23
    both, notes = assign_by_name(list(s18.values()) + list(s23.values()))
    assert both == {} and len(notes) == 4 and "choose one for FLAIR" in notes[0]
    twins = [add_volume(scene, "T2_TSE", _brain(), matrix()), add_volume(scene, "T2_TSE", _brain(), matrix())]
    chosen, notes = assign_by_name(twins)
    assert chosen == {} and "2 volumes are named 'T2_TSE'" in notes[0]


def test_assign_by_name_keeps_volumes_picked_by_hand(scene):
    """Issue 21, defect 4: a slot no name matched keeps the user's pick; matched slots are filled."""
    flair = add_volume(scene, "Brats18_CBICA_AAB_1_flair", _brain(), matrix())
    picked_t1 = add_volume(scene, "series 7", _brain(), matrix())  # a name nothing matches
    picked_t2 = add_volume(scene, "Brats18_CBICA_AAB_1_t1ce", _brain(), matrix())  # T1c by name, put in T2 by hand
    current = {"flair": None, "t1": picked_t1, "t1c": None, "t2": picked_t2}
    slots, notes = assign_slots(current, [flair, picked_t1, picked_t2])
    assert slots == {"flair": flair, "t1": picked_t1, "t1c": picked_t2, "t2": None} and notes == []
    # Nothing matches at all: every pick stays.
    slots, _ = assign_slots(current, [picked_t1])
    assert slots == current


def test_availability_mask_follows_the_selection(scene):
    inputs, _ = _case(scene, keys=("flair", "t2"))
    assert availability({}) is None
    mask = availability(inputs)
    assert mask.bits == "1001" and mask.missing_keys == ("t1", "t1c")
    text = describe_availability(inputs, PanelOptions())
    assert "\u2717 T1c" in text and "T1, T1c will be synthesised" in text
    assert "left out" in describe_availability(inputs, PanelOptions(synthesize=False))
