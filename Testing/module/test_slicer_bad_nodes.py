"""Issue 23 (group 9 and a warning): what a script may hand the module's logic
that the panel's selectors never would, against slicer-core's real MRML scene.

A model, segmentation or transform node (or no node at all) given as a
modality is refused with the role and the node named, and an input volume
deleted from the scene while the worker runs is an error at ``finish`` that
leaves the scene as it was.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from medmodels.errors import InputError
from MissingModalityToolsLib.inputs import input_problems
from MissingModalityToolsLib.options import PanelOptions
from MissingModalityToolsLib.worker import WorkerError
from slicer_fixtures import (
    add_volume,
    contract_logic,
    matrix,
    scene,  # noqa: F401  (pytest fixture)
    snapshot,
)

pytestmark = [pytest.mark.slicer]


def _volume(scene, name: str):
    z, y, x = np.indices((8, 9, 10))
    return add_volume(scene, name, (1000.0 - (z - 4) ** 2 - (y - 4) ** 2 - (x - 5) ** 2).astype(np.float32), matrix())


@pytest.mark.parametrize(
    "node_class,what",
    [
        ("vtkMRMLModelNode", "a model"),
        ("vtkMRMLSegmentationNode", "a segmentation"),
        ("vtkMRMLLinearTransformNode", "a transform"),
        ("vtkMRMLMarkupsFiducialNode", "a markups"),
    ],
)
def test_a_node_that_is_not_a_volume_is_refused_with_its_role_and_name(scene, tmp_path, node_class, what):
    flair = _volume(scene, "Case_flair")
    other = scene.AddNewNodeByClass(node_class, "Thing")
    expected = rf"T1 input 'Thing' is {what} node \({node_class}\), not a scalar volume: choose a scalar volume"
    [problem] = input_problems({"flair": flair, "t1": other}, PanelOptions())
    assert problem.startswith(expected.replace("\\", "")), problem
    before = snapshot(scene)
    with pytest.raises(InputError, match=expected):
        contract_logic(scene, tmp_path).start({"flair": flair, "t1": other}, PanelOptions())
    assert snapshot(scene) == before
    assert [p for p in os.listdir(tmp_path) if p.startswith("MissingModalityTools-")] == []


def test_something_that_is_not_a_node_is_refused(scene):
    flair = _volume(scene, "Case_flair")
    [problem] = input_problems({"flair": flair, "t2": "/data/t2.nii.gz"}, PanelOptions())
    assert problem.startswith("T2 input '/data/t2.nii.gz' is a str, not a volume node of the scene"), problem


def test_an_input_deleted_from_the_scene_during_the_run_is_an_error_at_finish(scene, tmp_path):
    inputs = {"flair": _volume(scene, "Case_flair"), "t1": _volume(scene, "Case_t1")}
    logic = contract_logic(scene, tmp_path)
    run = logic.start(inputs, PanelOptions())
    scene.RemoveNode(inputs["flair"])  # the reference, deleted by the user while the worker runs
    before = snapshot(scene)
    deadline = time.monotonic() + 30
    while run.poll() and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(WorkerError, match=r"FLAIR volume 'Case_flair' was removed from the scene during the run"):
        logic.finish(run)
    assert snapshot(scene) == before
    assert [p for p in os.listdir(tmp_path) if p.startswith("MissingModalityTools-")] == []
