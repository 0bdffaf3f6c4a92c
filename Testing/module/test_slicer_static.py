"""Static checks of the Slicer module against slicer-core's own classes (the checks that
read only the module's source are in test_module_static.py, which runs without slicer-core):

- the node types the selectors filter on are real MRML classes;
- ``slicer.util`` functions are never called as ``slicer.X``.
"""

from __future__ import annotations

import ast
import types
import xml.etree.ElementTree as ET

import pytest
from slicer_fixtures import slicer
from test_module_static import UI, _python_files, _ui_widgets

pytestmark = [pytest.mark.slicer]


def test_selector_node_types_are_real_mrml_classes():
    widgets = _ui_widgets()
    selectors = [w for w in widgets.values() if w.get("class") == "qMRMLNodeComboBox"]
    kinds = {}
    for w in selectors:
        types_ = [s.text for s in w.iter("string") if s.text and s.text.startswith("vtkMRML")]
        kinds[w.get("name")] = types_
        assert all(hasattr(slicer, t) for t in types_)
    # Four modality selectors and the output segmentation (reused run after run).
    assert kinds == {
        **{f"{k}Selector": ["vtkMRMLScalarVolumeNode"] for k in ("flair", "t1", "t1c", "t2")},
        "outputSegmentationSelector": ["vtkMRMLSegmentationNode"],
    }
    # Every selector gets the scene from the top-level qMRMLWidget.
    root = ET.parse(UI).getroot()
    connected = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    assert connected == {w.get("name") for w in selectors}


def test_util_functions_are_called_through_slicer_util():
    util_functions = {
        name
        for name, obj in vars(slicer.util).items()
        if isinstance(obj, types.FunctionType) and obj.__module__ == "slicer.util"
    }
    assert {"arrayFromVolume", "loadUI", "getNodesByClass"} <= util_functions
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "slicer":
                assert node.attr not in util_functions, f"{path.name}:{node.lineno} writes slicer.{node.attr}"
