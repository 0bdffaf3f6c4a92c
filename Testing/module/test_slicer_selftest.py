"""The self-test without torch (the extension factory's case), the demo case, auto-assign's filter,
the terminology tag, and lazy imports: against slicer-core's real scene."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from slicer_fixtures import (
    LIB_DIR,
    add_volume,
    contract_logic,
    medmodels_logic,
    run_fresh_python,
    scene,  # noqa: F401  (pytest fixture)
    slicer,
)

pytestmark = [pytest.mark.slicer]


def _node_classes(scene):
    return sorted(scene.GetNthNode(i).GetClassName() for i in range(scene.GetNumberOfNodes()))


def test_self_test_without_torch_uses_the_stand_in_and_says_why(scene, tmp_path):
    from MissingModalityToolsLib.logic import MissingModalityToolsLogic
    from MissingModalityToolsLib.selftest import run_self_test

    # A worker Python without torch: one whose 'import torch' fails (a sitecustomize that blocks it).
    block = tmp_path / "block"
    block.mkdir()
    (block / "torch.py").write_text("raise ImportError('No module named torch (blocked for the test)')\n")
    env = dict(os.environ, PYTHONPATH=str(block))
    logic = MissingModalityToolsLogic(
        scene,
        worker_command=[sys.executable, "-m", "medmodels"],
        pythonpath=[str(LIB_DIR)],
        base_env=env,
        temp_root=str(tmp_path),
    )
    lines = []
    figures = run_self_test(scene, logic, log=lines.append)
    assert figures["model"] is False and "import torch, monai" in figures["skipped"]
    assert any(line.startswith("Model test skipped:") and "blocked for the test" in line for line in lines)
    assert any("stopped after 60 s" in line for line in lines)  # the bound is said in the log
    assert os.listdir(tmp_path) == ["block"]  # work folder and run folders removed
    names = {scene.GetNthNode(i).GetName() for i in range(scene.GetNumberOfNodes())}
    assert {"Phantom_011_flair", "T1c (synthesised)", "Tumour segmentation"} <= names


def test_label_export_leaves_nothing_behind(scene, tmp_path):
    """The Dice export adds a label map, its display node and a colour table: all removed."""
    from MissingModalityToolsLib.options import PanelOptions
    from MissingModalityToolsLib.selftest import _labels_on

    z, y, x = np.indices((8, 10, 12))
    volume = (1000 * np.exp(-((z - 4) ** 2 + (y - 5) ** 2 + (x - 6) ** 2) / 20)).astype(np.float32)
    inputs = {"flair": add_volume(scene, "c_flair", volume), "t1": add_volume(scene, "c_t1", volume)}
    result = contract_logic(scene, tmp_path).run_blocking(inputs, PanelOptions())
    before = _node_classes(scene)
    labels = _labels_on(result.segmentation, inputs["flair"])
    assert set(np.unique(labels)) <= {0, 1, 2, 4} and labels.any()
    assert _node_classes(scene) == before
    assert "vtkMRMLLabelMapVolumeDisplayNode" not in before


def test_self_test_failure_message_holds_the_worker_lines(scene, tmp_path):
    from MissingModalityToolsLib.selftest import run_self_test, standin_logic

    logic = medmodels_logic(scene, tmp_path)
    logic.base_env = dict(logic.base_env, MMT_WORKER_MODE="error")  # the stand-in prints an ERROR line
    with pytest.raises(AssertionError) as failure:
        run_self_test(scene, logic, log=lambda line: None, use_model=False)
    assert "Last worker lines" in str(failure.value) and "T2 volume is all zeros" in str(failure.value)
    assert (
        standin_logic(logic)
        .worker_command[1]
        .endswith(os.path.join("Resources", "Testing", "slicer_contract_worker.py"))
    )


def test_demo_case_loads_offline_and_fills_the_slots(scene, tmp_path):
    from MissingModalityToolsLib.demo import DEMO_MODALITIES, load_demo_case

    logic = medmodels_logic(scene, tmp_path)
    logic.base_env = dict(
        logic.base_env, no_proxy="*", http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9"
    )
    chosen = load_demo_case(logic, size="48x48x32")
    assert sorted(chosen) == sorted(DEMO_MODALITIES)
    for key, node in chosen.items():
        assert node.GetScene() is scene and node.GetName().endswith(f"_{key}")
        assert node.GetImageData().GetDimensions() == (48, 48, 32)
        assert node.GetStorageNode() is None  # the temporary files are gone; the scene holds the voxels
    assert os.listdir(tmp_path) == []


def test_auto_assign_takes_only_what_the_selectors_show(scene):
    from MissingModalityToolsLib.inputs import SELECTOR_CLASS, assign_by_name, assignable_volumes

    array = np.ones((4, 5, 6), np.float32)
    flair = add_volume(scene, "case_flair", array)
    hidden = add_volume(scene, "case_t1", array)
    hidden.SetHideFromEditors(True)
    for cls, name in (
        ("vtkMRMLVectorVolumeNode", "case_t1ce"),
        ("vtkMRMLDiffusionWeightedVolumeNode", "case_t2"),
        ("vtkMRMLDiffusionTensorVolumeNode", "case_t2_dti"),
        ("vtkMRMLLabelMapVolumeNode", "case_seg_t1"),
    ):
        node = scene.AddNewNodeByClass(cls, name)
        assert node.IsA(SELECTOR_CLASS)  # they all subclass the scalar volume node
    candidates = slicer.util.getNodesByClass(SELECTOR_CLASS)
    assert len(candidates) == 6
    chosen, _ = assign_by_name(assignable_volumes(candidates))
    assert chosen == {"flair": flair}


def test_segments_carry_the_terminology_tag(scene, tmp_path):
    from MissingModalityToolsLib.options import PanelOptions

    volume = np.random.default_rng(0).random((6, 8, 10)).astype(np.float32) * 1000
    inputs = {"flair": add_volume(scene, "d_flair", volume)}
    seg = contract_logic(scene, tmp_path).run_blocking(inputs, PanelOptions(synthesize=False)).segmentation
    segment = seg.GetSegmentation().GetNthSegment(0)
    tag = segment.GetTerminologyEntryTagName()
    assert tag == "TerminologyEntry"
    import vtk

    value = vtk.mutable("") if hasattr(vtk, "mutable") else None
    if value is not None:
        assert segment.GetTag(tag, value) and "SCT^6574001" in str(value)


def test_importing_the_module_logic_loads_no_medmodels():
    """What the module file imports at Slicer's start: the logic and the worker, no medmodels."""
    code = (
        "import sys; import MissingModalityToolsLib.logic, MissingModalityToolsLib.worker; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('medmodels', 'SimpleITK', 'numpy')))"
    )
    stdout = run_fresh_python(code)
    assert stdout.strip() == "[]", stdout
