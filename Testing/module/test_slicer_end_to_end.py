"""The module's logic running the real ``medmodels`` worker with the bundled weights.

The done-criterion of the Slicer module: a scene holding a phantom case with
T1c left out, run through the logic, gains a synthesised T1c on the same grid
and a segmentation with three named segments: the module's self-test, run
headless (test_slicer_oblique_real.py runs an oblique grid through the real
worker). About
a minute on two CPU cores.
"""

from __future__ import annotations

import pytest
from slicer_fixtures import (
    medmodels_logic,
    scene,  # noqa: F401  (pytest fixture)
)

pytestmark = [pytest.mark.slicer, pytest.mark.slow]


def test_self_test_phantom_without_t1c(scene, tmp_path):
    from MissingModalityToolsLib.selftest import WHOLE_TUMOUR_DICE_FLOOR, run_self_test

    figures = run_self_test(scene, medmodels_logic(scene, tmp_path), str(tmp_path / "work"), log=print)
    assert figures["dice_wt"] >= WHOLE_TUMOUR_DICE_FLOOR
    names = sorted(
        scene.GetNthNode(i).GetName()
        for i in range(scene.GetNumberOfNodes())
        if scene.GetNthNode(i).IsA("vtkMRMLScalarVolumeNode")
    )
    assert "T1c (synthesised)" in names and not any(n.endswith("_t1ce") for n in names)
    print("self-test figures:", figures)
