"""Static checks of the Slicer module's source: they read its files (and import its Qt-free
logic), need no slicer-core and run in every environment (the checks against slicer-core's
classes are in test_slicer_static.py).

- every widget the code names exists in the .ui, and every class in the .ui
  is a real Qt, CTK or qMRML class with the properties it is given;
- the parameter node's fields and the .ui's SlicerParameterName bindings agree;
- the CMake lists match the files on disk, and the catalog entry matches CMake;
- the logic package stays Qt-free and torch-free;
- the module file's logic is the Lib's one logic with no state of its own,
  built once by the panel; the widget does no numerics and no file work; the
  input checks import neither the run nor the worker; no function in the
  module is over 80 lines;
- the icon is a 128 x 128 RGBA PNG.
"""

from __future__ import annotations

import ast
import json
import re
import struct
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from module_paths import LIB_DIR, MODULE_DIR, ROOT, run_fresh_python

UI = MODULE_DIR / "Resources" / "UI" / "MissingModalityTools.ui"
MODULE_PY = MODULE_DIR / "MissingModalityTools.py"

# Slicer's and CTK's widget classes are not in any installable package, so
# their properties are listed here from their headers: CTK
# Libs/Widgets/ctkCollapsibleButton.h (a QAbstractButton), Slicer
# Libs/MRML/Widgets/qMRMLWidget.h and qMRMLNodeComboBox.h (Q_PROPERTY lines).
# Qt's own classes are checked against Qt itself (PyQt5, the Qt 5 that
# Slicer 5 uses).
CUSTOM_CLASSES = {
    "ctkCollapsibleButton": (
        "QAbstractButton",
        {
            "collapsed",
            "collapsedHeight",
            "contentsFrameShape",
            "contentsLineWidth",
            "contentsMidLineWidth",
            "buttonTextAlignment",
            "indicatorAlignment",
            "flat",
        },
    ),
    "qMRMLWidget": ("QWidget", set()),
    # Modules/Loadable/Segmentations/Widgets/qMRMLSegmentationShow3DButton.h: a ctkMenuButton (a
    # QPushButton) with no Q_PROPERTY of its own; setSegmentationNode is a slot.
    "qMRMLSegmentationShow3DButton": ("QPushButton", set()),
    "qMRMLNodeComboBox": (
        "QWidget",
        {
            "currentNodeID",
            "nodeTypes",
            "showHidden",
            "showChildNodeTypes",
            "hideChildNodeTypes",
            "baseName",
            "noneEnabled",
            "addEnabled",
            "removeEnabled",
            "editEnabled",
            "renameEnabled",
            "interactionNodeSingletonTag",
            "selectNodeUponCreation",
            "noneDisplay",
            "sizeAdjustPolicy",
        },
    ),
}


@pytest.fixture(scope="module")
def qt_widgets():
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    QtWidgets = pytest.importorskip("PyQt5.QtWidgets", reason="PyQt5 (the test extra) is not installed")

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    yield QtWidgets
    del app


def _qt_property_names(QtWidgets, cls_name: str) -> set[str]:
    cls = getattr(QtWidgets, cls_name, None)
    assert cls is not None, f"{cls_name} is not a Qt class"
    mo = cls.staticMetaObject
    return {str(mo.property(i).name()) for i in range(mo.propertyCount())}


def _ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def _module_ast() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"))


def test_every_widget_the_code_names_exists_in_the_ui():
    named = {
        node.attr
        for node in ast.walk(_module_ast())
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }
    assert named, "the widget names no ui widget: the check would be empty"
    missing = sorted(named - set(_ui_widgets()))
    assert not missing, f"the code uses self.ui.{missing} but the .ui has no such widget"


def test_every_class_in_the_ui_is_real_and_given_real_properties(qt_widgets):
    root = ET.parse(UI).getroot()
    for widget in root.iter("widget"):
        cls = widget.get("class")
        if cls in CUSTOM_CLASSES:
            base, own = CUSTOM_CLASSES[cls]
            allowed = own | _qt_property_names(qt_widgets, base)
        else:
            assert cls.startswith("Q"), f"widget '{widget.get('name')}' has class {cls}: not Qt, CTK or qMRML"
            allowed = _qt_property_names(qt_widgets, cls)
        for prop in widget.findall("property"):
            if prop.get("stdset") == "0":
                continue  # a dynamic property (SlicerParameterName)
            assert prop.get("name") in allowed, f"{cls} '{widget.get('name')}' has no property '{prop.get('name')}'"
    for layout in root.iter("layout"):
        assert layout.get("class") in {"QVBoxLayout", "QHBoxLayout", "QGridLayout", "QFormLayout"}
        assert hasattr(qt_widgets, layout.get("class"))
    declared = {}
    for custom in root.iter("customwidget"):
        cls, base, header = custom.findtext("class"), custom.findtext("extends"), custom.findtext("header")
        assert cls in CUSTOM_CLASSES and header == f"{cls}.h", (cls, header)
        assert hasattr(qt_widgets, base), f"{cls} extends {base}, not a Qt class"
        declared[cls] = base
    used_custom = {w.get("class") for w in root.iter("widget") if w.get("class") in CUSTOM_CLASSES}
    assert used_custom <= set(declared), f"custom widgets used but not declared: {used_custom - set(declared)}"


def test_qt_uic_compiles_the_ui(qt_widgets):
    """Qt's own .ui compiler (PyQt5's port of uic) reads the file without error."""
    import io

    uic = pytest.importorskip("PyQt5.uic", reason="PyQt5 (the test extra) is not installed")

    out = io.StringIO()
    uic.compileUi(str(UI), out)
    code = out.getvalue()
    for name in ("applyButton", "flairSelector", "progressBar", "logTextEdit"):
        assert f"self.{name} =" in code


def test_parameter_node_fields_match_the_ui_bindings_and_the_run_defaults():
    tree = _module_ast()
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MissingModalityToolsParameterNode")
    fields = {s.target.id for s in cls.body if isinstance(s, ast.AnnAssign)}
    bound = {
        p.findtext("string")
        for w in _ui_widgets().values()
        for p in w.findall("property")
        if p.get("name") == "SlicerParameterName"
    }
    assert fields == bound, f"unbound fields {fields - bound}, bindings without a field {bound - fields}"
    # The Choice lists come from the logic's own constants.
    src = MODULE_PY.read_text(encoding="utf-8")
    assert "Choice(list(SEGMENT_ON))" in src and "Choice(list(DEVICES))" in src and "Choice(list(PREPARE_MODES))" in src
    # ... spelled in the module file (Slicer's start imports no medmodels) and equal to the library's.
    import medmodels.options

    module_constants = {
        t.id: ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name) and t.id in ("DEVICES", "SEGMENT_ON", "PREPARE_MODES", "PARAMETER_WIDGETS")
    }
    assert module_constants["DEVICES"] == medmodels.options.DEVICES
    assert module_constants["SEGMENT_ON"] == medmodels.options.SEGMENT_ON
    assert module_constants["PREPARE_MODES"] == medmodels.options.PREPARE_MODES
    # The panel starts with the command line's defaults (a run from either gives the same output).
    defaults = {s.target.id: ast.literal_eval(s.value) for s in cls.body if isinstance(s, ast.AnnAssign) and s.value}
    options = medmodels.options.RunOptions()
    same = {"segmentOn": "segment_on", **{k: k for k in ("synthesize", "segment", "prepare", "device", "steps")}}
    same.update({k: k for k in ("samples", "cleanup", "seed")}, regionMap="region_map")
    assert {k: defaults[k] for k in same} == {k: getattr(options, v) for k, v in same.items()}
    # connectParametersToGui's mapping names the same widgets as the .ui's bindings.
    bound_widgets = {
        p.findtext("string"): name
        for name, w in _ui_widgets().items()
        for p in w.findall("property")
        if p.get("name") == "SlicerParameterName"
    }
    assert module_constants["PARAMETER_WIDGETS"] == bound_widgets


def _cmake_list(text: str, name: str) -> list[str]:
    m = re.search(rf"set\({name}\s+(.*?)\)", text, re.S)
    assert m, name
    return [
        line.strip().replace("${MODULE_NAME}", "MissingModalityTools")
        for line in m.group(1).splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_module_cmake_lists_match_the_files_on_disk():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    scripts = _cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    resources = _cmake_list(text, "MODULE_PYTHON_RESOURCES")
    # Python files under Resources (the self-test's stand-in worker) are resources, not scripts.
    on_disk_py = sorted(
        str(p.relative_to(MODULE_DIR))
        for p in MODULE_DIR.rglob("*.py")
        if "__pycache__" not in p.parts and p.relative_to(MODULE_DIR).parts[0] != "Resources"
    )
    assert sorted(scripts) == on_disk_py
    on_disk_res = sorted(
        str(p.relative_to(MODULE_DIR))
        for p in (MODULE_DIR / "Resources").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert sorted(resources) == on_disk_res
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    # medmodels is installed next to the module, from ../Lib.
    assert "ctkMacroCompilePythonScript" in text and "${CMAKE_CURRENT_SOURCE_DIR}/../Lib" in text
    assert (LIB_DIR / "medmodels" / "__init__.py").exists()


def _cmake_vars(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r'set\((EXTENSION_\w+)\s+"?([^")]*)"?\)', text)}


def test_top_level_cmake_and_catalog_entry_agree():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    values = _cmake_vars(text)
    for key in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ):
        assert values.get(key), f"{key} is not set"
    for snippet in (
        "project(MissingModalityTools)",
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        "add_subdirectory(MissingModalityTools)",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ):
        assert snippet in text
    entry = json.loads((ROOT / "MissingModalityTools.json").read_text(encoding="utf-8"))
    allowed = {
        "$schema",
        "build_dependencies",
        "build_subdirectory",
        "category",
        "scm_revision",
        "scm_type",
        "scm_url",
        "tier",
        "enabled",
    }  # the schema has additionalProperties: false
    assert set(entry) <= allowed and {"$schema", "category", "scm_url"} <= set(entry)
    assert "slicer-extension-catalog-entry-schema" in entry["$schema"]
    assert entry["category"] == values["EXTENSION_CATEGORY"]
    assert entry["build_dependencies"] == values["EXTENSION_DEPENDS"].split()
    assert entry["scm_url"].removesuffix(".git") == values["EXTENSION_HOMEPAGE"]
    assert entry["build_subdirectory"] == values["EXTENSION_BUILD_SUBDIRECTORY"]
    # The icon and screenshot URLs point at files this repository holds.
    for url in (values["EXTENSION_ICONURL"], values["EXTENSION_SCREENSHOTURLS"]):
        assert (ROOT / url.split("/main/", 1)[1]).exists(), url
    license_text = (ROOT / "LICENSE.txt").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "MissingModalityTools contributors" in license_text


def test_icon_is_a_128_px_rgba_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "MissingModalityTools.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour) == (128, 128, 8, 6)


def _python_files() -> list[Path]:
    return [MODULE_PY, *sorted((MODULE_DIR / "MissingModalityToolsLib").glob("*.py"))]


def test_logic_package_is_qt_free_and_does_not_import_torch():
    forbidden = {"qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "torch"}
    for path in (MODULE_DIR / "MissingModalityToolsLib").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module
                else []
            )
            for name in names:
                assert name not in forbidden, f"{path.name} imports {name}"
    # Importing the logic must not pull torch into Slicer's process (it may not be installed yet).
    code = (
        "import sys; import MissingModalityToolsLib.logic, MissingModalityToolsLib.dependencies; "
        "print('torch' in sys.modules, 'qt' in sys.modules)"
    )
    stdout = run_fresh_python(code)
    assert stdout.split() == ["False", "False"], stdout


def _enclosing_functions(tree: ast.AST) -> dict[ast.AST, str]:
    """Every node -> the name of the function it is in ("" at module or class level)."""
    owner = {}

    def visit(node, name):
        for child in ast.iter_child_nodes(node):
            owner[child] = name
            visit(child, child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else name)

    visit(tree, "")
    return owner


def test_the_module_logic_is_the_one_lib_logic_and_built_once():
    """The module file's MissingModalityToolsLogic is the Qt-free Lib logic plus
    ScriptedLoadableModuleLogic, with no state of its own; the panel builds it
    once (setup), the self-test once, and nothing builds a logic per call."""
    tree = _module_ast()
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MissingModalityToolsLogic")
    assert [ast.unparse(b) for b in cls.bases] == ["logic.MissingModalityToolsLogic", "ScriptedLoadableModuleLogic"]
    own_state = [
        ast.unparse(t)
        for n in ast.walk(cls)
        if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign))
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
    ]
    assert own_state == [], f"the module's logic keeps state of its own: {own_state}"
    owner = _enclosing_functions(tree)
    builders = sorted(
        owner[n]
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and ast.unparse(n.func).endswith("Logic")
        and ast.unparse(n.func) != "ScriptedLoadableModuleLogic"
    )
    # loadSampleCase: the Sample Data module's button, pressed where no panel (and so no logic) may exist.
    assert builders == ["loadSampleCase", "setup", "test_PhantomWithoutT1c"], builders
    src = MODULE_PY.read_text(encoding="utf-8")
    assert "coreLogic" not in src and "MissingModalityLogic" not in src
    # Nothing of the Lib logic shadows what ScriptedLoadableModuleLogic gives the module.
    from MissingModalityToolsLib.logic import MissingModalityToolsLogic

    base_names = {
        "getParameterNode",
        "getAllParameterNodes",
        "createParameterNode",
        "moduleName",
        "isSingletonParameterNode",
        "delayDisplay",
    }
    assert not base_names & set(dir(MissingModalityToolsLogic))


def test_the_widget_is_thin():
    """The module file does no numerics and no file work: those live in the Lib and medmodels."""
    tree = _module_ast()
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"numpy", "SimpleITK", "medmodels", "json", "shutil", "tempfile", "subprocess", "pathlib"}
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert not {c for c in calls if c in ("open", "os.remove", "os.makedirs") or c.startswith("slicer.util.array")}


def test_input_checks_import_neither_the_run_nor_the_worker():
    """inputs.py (the Apply tooltip's checks) is a unit of its own: importing it starts
    no worker machinery, and the run logic imports the checks, not the other way round."""
    code = (
        "import sys; import MissingModalityToolsLib.inputs; "
        "print(sorted(m for m in sys.modules if m.startswith('MissingModalityToolsLib.')))"
    )
    stdout = run_fresh_python(code)
    loaded = set(ast.literal_eval(stdout.strip()))
    assert "MissingModalityToolsLib.inputs" in loaded
    assert not loaded & {
        "MissingModalityToolsLib.logic",
        "MissingModalityToolsLib.worker",
        "MissingModalityToolsLib.options",
    }, loaded


def test_no_function_in_the_module_is_over_80_lines():
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{path.name}: {node.name} is {length} lines long"


def test_requirements_and_installer_choice(tmp_path):
    from MissingModalityToolsLib.dependencies import (
        distribution_name,
        installer_name,
        missing_requirements,
        read_requirements,
    )

    reqs = read_requirements(MODULE_DIR / "Resources" / "requirements.txt")
    names = {distribution_name(r).lower() for r in reqs}
    assert "monai" in names
    assert not names & {"numpy", "simpleitk", "torch"}, (
        "never replace Slicer's numpy/SimpleITK; torch comes from PyTorch"
    )
    assert missing_requirements(["monai>=1.0"]) == []
    assert missing_requirements(["surely-not-installed-mmt>=1"]) == ["surely-not-installed-mmt>=1"]
    new = types.SimpleNamespace(packaging=types.SimpleNamespace(pip_ensure=lambda *a, **k: True))
    assert installer_name(new) == "packaging" and installer_name(types.SimpleNamespace()) == "util"
    # Nothing installs at import time: the module file calls the installer only from the Apply handler.
    src = MODULE_PY.read_text(encoding="utf-8")
    tree = ast.parse(src)
    top_level_calls = [n for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]
    assert [ast.unparse(c) for c in top_level_calls] == []  # not even the path lookup: medmodels loads lazily
    assert "pip_install" not in src and "pip_ensure" not in src


def _method(cls_name: str, name: str) -> ast.FunctionDef:
    cls = next(n for n in _module_ast().body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    return next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name)


def test_a_failed_start_shows_one_dialog_and_puts_the_progress_bar_back():
    """Issue 21, defect 2: tryWithErrorDisplay re-raises, so wrapping both onApplyButton and startRun
    showed the same error twice; startRun now has no dialog of its own, and on failure hides the
    progress bar and replaces "Starting..." before re-raising to onApplyButton's one dialog."""
    widget = "MissingModalityToolsWidget"
    apply_source = ast.unparse(_method(widget, "onApplyButton"))
    start = _method(widget, "startRun")
    assert apply_source.count("tryWithErrorDisplay") == 1 and "self.startRun(" in apply_source
    assert "tryWithErrorDisplay" not in ast.unparse(start)
    handlers = [h for n in ast.walk(start) if isinstance(n, ast.Try) for h in n.handlers]
    assert handlers, "startRun does not handle a failing logic.start"
    handler_source = "\n".join(ast.unparse(h) for h in handlers)
    assert "self.ui.progressBar.hide()" in handler_source and "statusLabel" in handler_source
    assert any(isinstance(n, ast.Raise) and n.exc is None for h in handlers for n in ast.walk(h))
    tried = next(n for n in ast.walk(start) if isinstance(n, ast.Try))
    assert "self.logic.start(" in ast.unparse(tried.body[0])
