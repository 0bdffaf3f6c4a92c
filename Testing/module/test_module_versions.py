"""Every Slicer API the module calls exists in the oldest supported Slicer (5.6).

The table below gives, for each Slicer, CTK/Qt or VTK API the module's
sources call, the oldest of the Slicer tags read (v5.6.2, v5.8.1, v5.10.0,
v5.12.0, main; ../shared/docs/slicer.md, issue 11) that has it: "5.6" means
present in v5.6.2, the oldest supported. The test parses the module file and
MissingModalityToolsLib with ``ast`` and fails when a call is newer than 5.6
(unless it is guarded, i.e. only taken after checking that it exists), or when
a Slicer/VTK-style call is not in the table at all, so a new API cannot slip
in unread.
"""

from __future__ import annotations

import ast

import pytest
from module_paths import MODULE_DIR

# Reads the module's source and metadata only: no slicer marker, it runs without slicer-core too.

OLDEST_SUPPORTED = (5, 6)

#: Dotted names rooted at slicer/qt/vtk -> the Slicer version that has them.
DOTTED = {
    "qt.QApplication.setOverrideCursor": "5.6",
    "qt.QApplication.restoreOverrideCursor": "5.6",
    "qt.Qt.WaitCursor": "5.6",
    "qt.QTimer": "5.6",
    "slicer.app.temporaryPath": "5.6",
    # Settings kept across scenes (MONAIAuto3DSeg, TotalSegmentator do the same) and the Sample Data
    # registration once Slicer has started (the scripted-module template's startupCompleted hook).
    "slicer.app.userSettings": "5.6",
    "slicer.app.connect": "5.6",
    "slicer.vtkMRMLSubjectHierarchyNode": "5.6",
    "slicer.mrmlScene": "5.6",
    "slicer.mrmlScene.Clear": "5.6",
    "slicer.mrmlScene.StartCloseEvent": "5.6",
    "slicer.mrmlScene.EndCloseEvent": "5.6",
    "slicer.util.arrayFromVolume": "5.6",
    "slicer.util.childWidgetVariables": "5.6",
    "slicer.util.getNodesByClass": "5.6",
    "slicer.util.loadUI": "5.6",
    "slicer.util.setSliceViewerLayers": "5.6",
    "slicer.util.startupEnvironment": "5.6",
    "slicer.util.tryWithErrorDisplay": "5.6",
    "slicer.vtkMRMLLabelMapVolumeNode": "5.6",
    "slicer.vtkMRMLNRRDStorageNode": "5.6",
    "slicer.vtkMRMLScalarVolumeNode": "5.6",
    "slicer.vtkMRMLScene": "5.6",
    "slicer.vtkMRMLSegmentationNode": "5.6",
    "slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode": "5.6",
    "slicer.vtkMRMLVolumeArchetypeStorageNode": "5.6",
    "slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY": "5.6",
    "slicer.vtkSlicerApplicationLogic": "5.6",
    "slicer.vtkSlicerColorLogic": "5.6",
    "slicer.vtkSlicerSegmentationsModuleLogic": "5.6",
    "slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode": "5.6",
    "slicer.vtkSlicerSubjectHierarchyModuleLogic": "5.6",
    "slicer.vtkSlicerTerminologiesModuleLogic": "5.6",
    "slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry": "5.6",
    "slicer.vtkSlicerVolumesLogic": "5.6",
    "vtk.vtkCommand.ModifiedEvent": "5.6",
    # Brain extraction through an installed extension (brain.py): the CLI runner and the module registry.
    "slicer.cli.runSync": "5.6",
    "slicer.modules.swissskullstripper": "5.6",
    "vtk.vtkMatrix4x4": "5.6",
    "vtk.vtkStringArray": "5.6",
}

#: Methods called on Slicer/VTK objects and Slicer Python helpers -> version.
METHODS = {
    # MRML, segmentation and VTK methods
    **dict.fromkeys(
        "AddEmptySegment AddNewNodeByClass AddNode AutoWindowLevelOn Clear CreateDefaultDisplayNodes CreateItem "
        "ExportSegmentsToLabelmapNode GetClassName GetDimensions GetDisplayNode GetElement GetHideFromEditors "
        "GetID GetIJKToRASMatrix GetImageData GetItemByDataNode GetItemParent GetLabelValue GetName "
        "GetNodeReferenceID GetNthDisplayNode GetNthNode GetNthSegment GetNthSegmentID GetNumberOfDisplayNodes "
        "GetNumberOfNodes GetNumberOfPoints GetNumberOfScalarComponents GetNumberOfSegments GetParentTransformNode "
        "GetRASBounds GetReferenceImageGeometryReferenceRole GetScene GetSceneItemID GetSegment GetSegmentation "
        "GetSubjectHierarchyNode ImportLabelmapToSegmentationNode InsertNextValue IsA ReadData RemoveNode "
        "SetColor SetFileName SetItemParent SetMRMLApplicationLogic SetMRMLScene SetModuleLogic SetName "
        "SetElement SetMatrixTransformToParent SetReferenceImageGeometryParameterFromVolumeNode SetSegmentIndex SetSingleFile SetTag "
        "SetUseCompression SetVisibility WriteData".split(),
        "5.6",
    ),
    # The terminology tag's name: what MONAIAuto3DSeg sets on 5.6 and 5.8.
    "GetTerminologyEntryTagName": "5.6",
    # vtkMRMLScriptedModuleNode.GetParameter; vtkSegmentation.DeepCopy (reusing the output node);
    # qMRMLSegmentationShow3DButton.setSegmentationNode (the Show 3D button, in Slicer since 4.11);
    # SampleData.SampleDataLogic.registerCustomSampleDataSource (customDownloader: 5.6 and main alike).
    "GetParameter": "5.6",
    "DeepCopy": "5.6",
    "setSegmentationNode": "5.6",
    "registerCustomSampleDataSource": "5.6",
    "onReload": "5.6",
    # vtkSegment.SetTerminology came with the terminology rework.
    "SetTerminology": "5.10",
    # parameterNodeWrapper: connectParametersToGui returns the tag on every version;
    # connectGui returns one only from 5.10 (without it disconnectGui does nothing).
    "connectParametersToGui": "5.6",
    "disconnectGui": "5.6",
    "connectGui": "5.10",
    # slicer.util / module helpers, PyTorchUtils, and Slicer's pip_ensure: slicer.packaging, added by
    # Slicer/Slicer#9010 (opened 2026-01-29, reviewed in March 2026 under the working name
    # "slicer.pydeps", merged as slicer.packaging): absent from v5.10.0, first released in v5.12.0.
    "pip_install": "5.6",
    "installTorch": "5.6",
    "pip_ensure": "5.12",
    "testingEnabled": "5.6",
    "delayDisplay": "5.6",
    "resourcePath": "5.6",
    "addObserver": "5.6",
    "removeObserver": "5.6",
    "removeObservers": "5.6",
}

#: APIs newer than the oldest supported Slicer that the module may call only
#: after checking they exist -> the check that must be in the same file.
GUARDED = {"pip_ensure": 'hasattr(found, "pip_ensure")'}

#: Capitalised calls that are Python classes, not Slicer/VTK methods.
PYTHON_CLASSES = {
    "QTimer",
    "Popen",
    "Process",
    "Queue",
    "Thread",
    "SimpleNamespace",
    "TemporaryDirectory",
    "PyTorchUtilsLogic",
}  # QTimer: in DOTTED
DOTTED_ROOTS = ("slicer", "qt", "vtk")


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def _sources():
    files = [MODULE_DIR / "MissingModalityTools.py", *sorted((MODULE_DIR / "MissingModalityToolsLib").glob("*.py"))]
    return {path: ast.parse(path.read_text(encoding="utf-8")) for path in files}


def _called(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(dotted slicer/qt/vtk names used, method names called) in one file."""
    dotted, methods = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = ast.unparse(node)
            if name.split(".")[0] in DOTTED_ROOTS and "(" not in name and "[" not in name:
                dotted.add(name)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            methods.add(node.func.attr)
    # Namespaces alone (slicer.util, slicer.app, qt.Qt) are not APIs; their members are.
    dotted -= {
        "slicer.util",
        "slicer.app",
        "slicer.cli",
        "slicer.modules",
        "qt.Qt",
        "qt.QApplication",
        "vtk.vtkCommand",
        "slicer.vtkSegmentation",
    }
    return dotted, methods


def _slicer_style(method: str) -> bool:
    return (method[:1].isupper() and method not in PYTHON_CLASSES and not method.startswith("vtk")) or (
        method in METHODS
    )


def test_every_called_slicer_api_is_in_the_table_and_not_newer_than_5_6():
    seen = set()
    for path, tree in _sources().items():
        dotted, methods = _called(tree)
        source = path.read_text(encoding="utf-8")
        for name in sorted(dotted):
            assert name in DOTTED, f"{path.name} uses {name}: add it to DOTTED with the Slicer version that has it"
            assert _version(DOTTED[name]) <= OLDEST_SUPPORTED, f"{path.name}: {name} needs Slicer {DOTTED[name]}"
        for name in sorted(m for m in methods if _slicer_style(m)):
            assert name in METHODS, f"{path.name} calls {name}: add it to METHODS with the Slicer version that has it"
            if _version(METHODS[name]) > OLDEST_SUPPORTED:
                guard = GUARDED.get(name)
                assert guard and guard in source, (
                    f"{path.name} calls {name}, which needs Slicer {METHODS[name]}; the oldest supported is "
                    f"{'.'.join(map(str, OLDEST_SUPPORTED))}"
                )
            seen.add(name)
    # The check is not empty, and the two 5.10 APIs of issue 11 are gone.
    assert {"SetTag", "GetTerminologyEntryTagName", "connectParametersToGui"} <= seen
    assert not {"SetTerminology", "connectGui"} & seen


def test_the_table_catches_a_newer_api():
    """The check itself: a source calling SetTerminology or connectGui fails it."""
    tree = ast.parse("segment.SetTerminology(entry)\ntag = node.connectGui(ui)\n")
    _, methods = _called(tree)
    newer = {m for m in methods if _slicer_style(m) and _version(METHODS[m]) > OLDEST_SUPPORTED}
    assert newer == {"SetTerminology", "connectGui"}


def test_module_code_parses_as_python_3_9():
    """Slicer 5.6 and 5.8 ship Python 3.9."""
    for path in _sources():
        ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))


def test_supported_versions_are_stated():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert 'MINIMUM_SLICER_VERSION "5.6"' in cmake and "VERSION_LESS" in cmake
    docs = (MODULE_DIR.parent / "docs" / "slicer_module.md").read_text(encoding="utf-8")
    assert "Slicer 5.6" in docs


#: The supported Slicers' Python and numpy (Slicer's SuperBuild/External_python.cmake and
#: External_python-numpy.cmake; Slicer/Slicer#8455: numpy stayed 1.x while Python was 3.9) and the
#: newest torch PyTorch publishes for that Python (torch 2.9 dropped Python 3.9). Only numpy's major
#: version decides which MONAI fits; the minor versions here are examples of each line.
SUPPORTED_SLICERS = {
    "5.6.2": {"python": (3, 9), "numpy": "1.26.4", "newest_torch": "2.8.0"},
    "5.8.1": {"python": (3, 9), "numpy": "1.26.4", "newest_torch": "2.8.0"},
    "5.10.0": {"python": (3, 12), "numpy": "2.2.6", "newest_torch": "2.13.0"},
    "5.12.0": {"python": (3, 12), "numpy": "2.3.4", "newest_torch": "2.13.0"},
}
#: MONAI releases' requirements, from their wheels' METADATA (Requires-Python, Requires-Dist).
MONAI_RELEASES = {
    "1.4.0": {"python": ">=3.9", "torch": ">=1.9", "numpy": ">=1.24,<2.0"},
    "1.5.1": {"python": ">=3.9", "torch": ">=2.4.1", "numpy": ">=1.24,<3.0"},
    "1.6.1": {"python": ">=3.10", "torch": ">=2.8.0", "numpy": ">=1.24,<3.0"},
}


def _resolvable(requirement: str, python, torch: str, numpy: str) -> list[str]:
    """The MONAI releases inside ``requirement`` that install beside this Python, torch and numpy unchanged."""
    from MissingModalityToolsLib.dependencies import satisfies

    spec = requirement[len("monai") :]
    py = ".".join(map(str, python))
    return [
        version
        for version, needs in MONAI_RELEASES.items()
        if satisfies(version, spec)
        and satisfies(py, needs["python"])
        and satisfies(torch, needs["torch"])
        and satisfies(numpy, needs["numpy"])
    ]


@pytest.mark.parametrize("slicer_version", sorted(SUPPORTED_SLICERS))
def test_monai_range_resolves_beside_each_slicers_numpy_and_the_torch_it_may_have(slicer_version):
    """Issue 21, defect 1: on every supported Slicer, for the oldest torch the installer accepts and
    the newest one there is, some MONAI release fits the range asked for without changing numpy."""
    from MissingModalityToolsLib.dependencies import monai_requirement, torch_requirement

    facts = SUPPORTED_SLICERS[slicer_version]
    oldest_torch = torch_requirement(facts["numpy"]).lstrip(">=")
    for torch in (oldest_torch, facts["newest_torch"]):
        requirement = monai_requirement(facts["python"], torch, facts["numpy"])
        assert _resolvable(requirement, facts["python"], torch, facts["numpy"]), (slicer_version, torch, requirement)


def test_requirements_file_names_no_slicer_package_and_no_torch():
    from MissingModalityToolsLib.dependencies import SLICER_PACKAGES, distribution_name, read_requirements

    names = {distribution_name(r).lower() for r in read_requirements(MODULE_DIR / "Resources" / "requirements.txt")}
    assert not names & {"torch", "numpy", "simpleitk"}
    assert {p.lower() for p in SLICER_PACKAGES} == {"numpy", "simpleitk", "scipy"}


def test_the_docs_say_which_slicers_the_extensions_manager_serves():
    """Issue 21, defect 5: "Extensions Manager, Slicer 5.6 to current" promised what the index cannot deliver."""
    readme = (MODULE_DIR.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Install in 3D Slicer", 1)[1].split("\n## ", 1)[0]
    flat = " ".join(section.split())
    assert "Extension Manager** (Slicer 5.6 to the current release)" not in flat
    assert "Slicer 5.6 cannot get it from the Extensions Manager" in flat
    assert "JSON entries exist from 5.8 on" in flat and "own pull request" in flat
    assert "From a build" in flat and "Without building** (any supported Slicer, 5.6 included)" in flat
    docs = " ".join((MODULE_DIR.parent / "docs" / "slicer_module.md").read_text(encoding="utf-8").split())
    # ExtensionsIndex: JSON catalog entries from 5.8 on (Slicer/Slicer#7709, ExtensionsIndex#2011); the
    # 5.6 branch reads .s4ext and is frozen; a release branch takes an entry only by its own pull request.
    assert "| 5.6 | no: its ExtensionsIndex branch reads `.s4ext` files" in docs
    assert "| 5.8, 5.10, 5.12 | only after the JSON entry is merged into that release's ExtensionsIndex branch" in docs
