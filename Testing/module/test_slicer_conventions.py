"""What users of MONAIAuto3DSeg and TotalSegmentator expect, at the logic level (issue 21).

Against slicer-core's real scene where a scene is involved: the output
segmentation node reused run after run, the device the worker ran on, the
worker's package versions, the sample-data source, settings kept across
scenes, a missing or broken medmodels reported at Apply (not while the panel
is built), and Reload forgetting the Lib's old code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from MissingModalityToolsLib import library, sampledata
from MissingModalityToolsLib import settings as user_settings
from MissingModalityToolsLib.options import PanelOptions
from slicer_fixtures import (
    LIB_DIR,
    MODULE_DIR,
    contract_logic,
    medmodels_logic,
    scene,  # noqa: F401  (pytest fixture)
)
from test_slicer_logic import _case

pytestmark = [pytest.mark.slicer]


def _run_into(logic, inputs, segmentation_node, log):
    run = logic.start(inputs, PanelOptions(), on_log=log.append)
    while run.poll():
        time.sleep(0.05)
    return logic.finish(run, segmentation_node)


def test_the_output_segmentation_node_is_reused_run_after_run(scene, tmp_path):
    inputs, _ = _case(scene)
    target = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "My tumour")
    logic = contract_logic(scene, tmp_path)
    log = []
    for _ in range(2):
        result = _run_into(logic, inputs, target, log)
        assert result.segmentation is target
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    segmentation = target.GetSegmentation()
    assert target.GetName() == "My tumour" and segmentation.GetNumberOfSegments() == 3
    assert target.GetNodeReferenceID(target.GetReferenceImageGeometryReferenceRole()) == inputs["flair"].GetID()
    # Without a node, each run adds its own, as before.
    _run_into(logic, inputs, None, log)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2


def test_the_device_that_ran_is_logged_first_and_recorded(scene, tmp_path):
    inputs, _ = _case(scene)
    log = []
    result = _run_into(contract_logic(scene, tmp_path), inputs, None, log)
    assert result.device == "cpu"
    started = next(i for i, line in enumerate(log) if line.startswith("Running:"))
    assert log[started + 1].startswith("Device: cpu")  # the worker's first line


def test_package_versions_are_the_workers(scene, tmp_path):
    import importlib.metadata

    import medmodels

    versions = medmodels_logic(scene, tmp_path).package_versions()
    assert versions["medmodels"] == medmodels.__version__
    assert versions["torch"] == importlib.metadata.version("torch")
    assert versions["monai"] == importlib.metadata.version("monai")


def test_sample_data_source_loads_the_phantom_without_network(scene, tmp_path):
    """The customDownloader makes the demo phantom offline; the arguments are those Slicer 5.6 to main take."""
    calls = []
    kwargs = sampledata.sample_source_arguments("icon.png", calls.append)
    assert set(kwargs) <= {
        "category",
        "sampleName",
        "uris",
        "fileNames",
        "nodeNames",
        "customDownloader",
        "thumbnailFileName",
    }
    assert all(isinstance(kwargs[k], str) for k in ("uris", "fileNames", "nodeNames"))  # wrapped alike by SampleData
    chosen = sampledata.load_sample(medmodels_logic(scene, tmp_path))
    assert sorted(chosen) == ["flair", "t1", "t2"]
    assert [chosen[k].GetName() for k in ("flair", "t1", "t2")] == list(sampledata.NODE_NAMES)
    assert chosen["flair"].GetScene() is scene


class DictSettings:
    """QSettings' two calls over a dict, with values stored as QSettings' INI backend returns them: text."""

    def __init__(self):
        self.values = {}

    def value(self, key, default=None):
        return self.values.get(key, default)

    def setValue(self, key, value):
        self.values[key] = str(value).lower() if isinstance(value, bool) else str(value)


def test_device_steps_preparation_cleanup_and_region_map_are_kept_across_scenes():
    from types import SimpleNamespace

    choices = {"device": ("auto", "cuda", "cpu"), "prepare": ("auto", "on", "off")}
    store = DictSettings()
    used = SimpleNamespace(device="cpu", steps=20, prepare="off", cleanup=False, regionMap=False, seed=5)
    user_settings.save_user_settings(used, store)
    fresh = SimpleNamespace(device="auto", steps=0, prepare="auto", cleanup=True, regionMap=True, seed=0)
    found = user_settings.apply_user_settings(fresh, store, choices)
    assert found == {"device": "cpu", "steps": 20, "prepare": "off", "cleanup": False, "regionMap": False}
    assert (fresh.device, fresh.steps, fresh.prepare, fresh.cleanup, fresh.regionMap, fresh.seed) == (
        "cpu",
        20,
        "off",
        False,
        False,
        0,
    )
    # A value no longer valid (hand-edited, or from another version) leaves the default.
    store.values.update({"MissingModalityTools/device": "tpu", "MissingModalityTools/steps": "5000"})
    assert set(user_settings.read_user_settings(store, choices)) == {"prepare", "cleanup", "regionMap"}


def test_missing_medmodels_is_reported_at_apply_not_while_the_panel_is_built(tmp_path):
    """Issue 21, defect 6: finding the library never raises; loading it raises one ImportError with the fix."""
    module_dir = tmp_path / "MissingModalityTools"
    module_dir.mkdir()
    assert library.medmodels_folder(str(module_dir)) is None
    with pytest.raises(ImportError, match="missing next to the module. Reinstall the extension"):
        library.load_libraries(str(module_dir))


def test_a_broken_medmodels_is_one_import_error_with_the_fix(tmp_path):
    module_dir = tmp_path / "MissingModalityTools"
    (module_dir / "medmodels").mkdir(parents=True)
    (module_dir / "medmodels" / "__init__.py").write_text("raise RuntimeError('half-installed')\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]); from MissingModalityToolsLib import library\n"
        "try:\n    library.load_libraries(sys.argv[1])\nexcept ImportError as e:\n    print('ImportError:', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(module_dir), str(MODULE_DIR)],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "")},
        check=True,
    ).stdout
    assert "ImportError:" in out and "half-installed" in out and "Reinstall the extension" in out


def test_the_module_logic_is_built_without_looking_for_medmodels():
    """The module file's logic takes medmodels' folder from library.medmodels_folder (never raises)."""
    import ast

    tree = ast.parse((MODULE_DIR / "MissingModalityTools.py").read_text(encoding="utf-8"))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert "medmodelsLocation" not in names
    logic_cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MissingModalityToolsLogic")
    init = next(n for n in logic_cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    assert "medmodels_folder" in ast.unparse(init) and not any(isinstance(n, ast.Raise) for n in ast.walk(init))


def test_reload_forgets_the_lib_so_its_files_are_read_again():
    code = (
        "import sys\n"
        "import MissingModalityToolsLib.inputs as before\n"
        "from MissingModalityToolsLib import library\n"
        "dropped = library.forget_package()\n"
        "import MissingModalityToolsLib.inputs as after\n"
        "print('inputs' in ' '.join(dropped), before is not after)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{MODULE_DIR}{os.pathsep}{LIB_DIR}", "PATH": os.environ.get("PATH", "")},
        check=True,
    ).stdout
    assert out.split() == ["True", "True"]


def test_assign_by_name_is_what_the_panel_calls():
    """The panel's 'Assign by name' goes through inputs.assign_slots (defect 4), which keeps hand picks."""
    source = (MODULE_DIR / "MissingModalityTools.py").read_text(encoding="utf-8")
    assert "assign_slots(" in source and "assign_by_name(" not in source
