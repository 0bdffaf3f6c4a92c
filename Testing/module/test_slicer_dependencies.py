"""The dependency step keeps the user's torch: the pip command lines it would run, recorded.

The pip runner, the confirmation dialog, PyTorchUtils and the installed
versions are injected, so every path runs without Slicer and without pip.
"""

from __future__ import annotations

import types

import pytest
from MissingModalityToolsLib.dependencies import (
    DependencyInstaller,
    missing_requirements,
    monai_requirement,
    pip_ensure_module,
    torch_requirement,
    worker_package_versions,
)
from slicer_fixtures import MODULE_DIR

pytestmark = [pytest.mark.slicer]
REQUIREMENTS = MODULE_DIR / "Resources" / "requirements.txt"


class Recorder:
    """Records pip command lines, dialogs and PyTorchUtils calls; the constraints file's text too."""

    def __init__(self, answer=True, torch_after=None):
        self.pip, self.questions, self.torch_calls, self.constraints = [], [], [], []
        self.answer, self.torch_after = answer, torch_after

    def run_pip(self, args):
        self.pip.append(list(args))
        path = args[args.index("--constraint") + 1]
        self.constraints.append(open(path, encoding="utf-8").read())

    def confirm(self, text):
        self.questions.append(text)
        return self.answer

    def installTorch(self, **kwargs):
        self.torch_calls.append(kwargs)
        return None if self.torch_after is None else object()


def _installer(versions, recorder, slicer_module=None, testing=False, python=(3, 12)):
    return DependencyInstaller(
        REQUIREMENTS,
        slicer_module or types.SimpleNamespace(),
        pip_runner=recorder.run_pip,
        confirm=recorder.confirm,
        torch_logic=recorder,
        version_of=lambda name: versions.get(name),
        testing=testing,
        python_version=python,
    )


def test_installed_torch_is_pinned_and_monai_capped():
    rec = Recorder()
    versions = {"torch": "2.4.1+cu121", "scipy": "1.13.0", "tqdm": "4.66.0"}
    assert _installer(versions, rec).ensure() is False  # pip "ran" but monai is still absent here
    assert rec.torch_calls == []  # torch satisfies the requirement: PyTorchUtils is not asked
    assert rec.pip == [["install", "monai>=1.5.1,<1.6", "--constraint", rec.pip[0][-1]]]
    assert rec.constraints == ["torch==2.4.1+cu121\nscipy==1.13.0\n"]
    assert "torch" not in " ".join(rec.pip[0][:-2])  # torch is never a requirement of the command


def test_slicers_own_numpy_simpleitk_scipy_are_pinned_at_their_installed_versions():
    """Issue 21, defect 1: Slicer 5.10+'s numpy 2 must not be replaced (MONAI 1.4 would take numpy 1)."""
    rec = Recorder()
    versions = {"torch": "2.8.0", "numpy": "2.2.6", "SimpleITK": "2.5.0", "scipy": "1.15.2", "tqdm": "4.66.0"}
    assert _installer(versions, rec).ensure() is False
    assert rec.constraints == ["torch==2.8.0\nnumpy==2.2.6\nSimpleITK==2.5.0\nscipy==1.15.2\n"]
    assert rec.pip[0][1] == "monai>=1.5.1,<1.7"


def test_a_slicer_package_below_a_requirement_is_left_free_to_upgrade():
    rec = Recorder()
    versions = {"torch": "2.4.1", "numpy": "1.26.4", "scipy": "1.9.0", "tqdm": "4.66.0"}
    assert _installer(versions, rec, python=(3, 9)).ensure() is False
    assert rec.constraints == ["torch==2.4.1\nnumpy==1.26.4\n"]  # scipy 1.9 is upgraded, numpy is kept
    assert rec.pip[0][1:3] == ["monai>=1.5.1,<1.6", "scipy>=1.10"]


def test_monai_range_follows_torch_python_and_numpy():
    assert monai_requirement((3, 12), "2.8.0", "2.2.6") == "monai>=1.5.1,<1.7"
    assert monai_requirement((3, 9), "2.8.0", "1.26.4") == "monai>=1.5.1,<1.6"  # 1.6 needs Python 3.10
    assert monai_requirement((3, 9), "2.3.1", "1.26.4") == "monai>=1.4,<1.5"  # 1.5.1 needs torch 2.4.1
    with pytest.raises(RuntimeError, match="PyTorch Utils"):
        monai_requirement((3, 12), "2.3.1", "2.2.6")  # no MONAI takes torch 2.3 with numpy 2
    assert torch_requirement("2.2.6") == ">=2.4.1" and torch_requirement("1.26.4") == ">=2.3"


def test_upgrade_reinstalls_under_the_same_pins():
    rec = Recorder()
    versions = {"torch": "2.8.0", "numpy": "2.2.6", "monai": "1.5.1", "scipy": "1.15.2", "tqdm": "4.66.0"}
    assert _installer(versions, rec).ensure() is True  # nothing to do ...
    assert rec.pip == []
    assert _installer(versions, rec).ensure(upgrade=True) is True  # ... unless asked to upgrade
    assert rec.pip[0][:2] == ["install", "--upgrade"] and "monai>=1.5.1,<1.7" in rec.pip[0]
    assert rec.constraints == ["torch==2.8.0\nnumpy==2.2.6\nscipy==1.15.2\n"]


def test_worker_package_versions_are_those_of_the_workers_python():
    import importlib.metadata
    import os
    import sys

    from slicer_fixtures import LIB_DIR

    env = dict(os.environ, PYTHONPATH=str(LIB_DIR))
    found = worker_package_versions(sys.executable, env)
    import medmodels

    assert found["torch"] == importlib.metadata.version("torch")
    assert found["monai"] == importlib.metadata.version("monai")
    assert found["medmodels"] == medmodels.__version__
    assert found["python"] == sys.version.split()[0]


def test_nothing_runs_when_everything_is_there():
    rec = Recorder()
    versions = {"torch": "2.6.0", "monai": "1.5.2", "scipy": "1.13.0", "tqdm": "4.66.0"}
    assert _installer(versions, rec).ensure() is True
    assert rec.pip == [] and rec.questions == [] and rec.torch_calls == []


def test_version_ranges_are_honoured():
    versions = {"monai": "1.7.0", "scipy": "1.9.0", "tqdm": "4.66.0"}
    missing = missing_requirements(["monai>=1.4,<1.7", "scipy>=1.10", "tqdm>=4.64"], versions.get)
    assert missing == ["monai>=1.4,<1.7", "scipy>=1.10"]


def test_too_old_torch_is_upgraded_through_pytorchutils_first():
    rec = Recorder(torch_after="2.5.0")
    versions = {"torch": "2.1.0", "monai": "1.5.1", "scipy": "1.13.0", "tqdm": "4.66.0"}

    def version_of(name):
        if name == "torch" and rec.torch_calls:
            return "2.5.0"
        return versions.get(name)

    installer = _installer(versions, rec)
    installer.version_of = version_of
    assert installer.ensure() is True
    assert rec.torch_calls == [{"askConfirmation": True, "torchVersionRequirement": ">=2.3"}]
    assert rec.pip == []


def test_declined_torch_install_and_declined_packages_return_false():
    rec = Recorder(answer=False)
    assert _installer({}, rec).ensure() is False  # PyTorchUtils returned None: declined
    assert rec.pip == []
    assert _installer({"torch": "2.4.1"}, rec).ensure() is False  # the dialog said Cancel
    assert rec.pip == [] and len(rec.questions) == 1 and "kept" in rec.questions[0]


def test_nothing_installs_under_testing():
    rec = Recorder()
    with pytest.raises(RuntimeError, match="never installed under testing"):
        _installer({}, rec, testing=True).ensure()
    with pytest.raises(RuntimeError, match="never installed under testing"):
        _installer({"torch": "2.4.0"}, rec, testing=True).ensure()
    assert rec.pip == [] and rec.torch_calls == []


def test_pip_ensure_path_gets_the_constraints_and_a_decline_is_false():
    calls = []

    def pip_ensure(requirements, constraints=None, requester=None):
        calls.append(([str(r) for r in requirements], open(constraints, encoding="utf-8").read(), requester))
        raise RuntimeError("Installation aborted by user")  # what pip_ensure does when declined

    slicer_module = types.SimpleNamespace(packaging=types.SimpleNamespace(pip_ensure=pip_ensure))
    assert pip_ensure_module(slicer_module) is slicer_module.packaging
    # slicer.pydeps was only the working name in review (Slicer/Slicer#9010); no Slicer has it.
    assert pip_ensure_module(types.SimpleNamespace(pydeps=slicer_module.packaging)) is None
    rec = Recorder()
    assert _installer({"torch": "2.4.1"}, rec, slicer_module).ensure() is False
    assert calls == [(["monai<1.6,>=1.5.1", "scipy>=1.10", "tqdm>=4.64"], "torch==2.4.1\n", "MissingModalityTools")]
    assert rec.pip == [] and rec.questions == []  # pip_ensure asks itself


def test_pip_ensure_is_imported_explicitly():
    """``import slicer`` does not import slicer.packaging: the lookup imports it by name."""
    import sys

    fake = types.ModuleType("slicer.packaging")
    fake.pip_ensure = lambda *a, **k: True
    slicer = types.ModuleType("slicer")
    sys.modules["slicer.packaging"] = fake
    try:
        assert pip_ensure_module(slicer) is fake
    finally:
        del sys.modules["slicer.packaging"]
