"""Python packages the worker needs, installed only when the user agrees, never replacing torch.

Nothing is installed at import time or while Slicer runs its tests: the panel
calls ``ensure_dependencies`` when the user presses Apply.

torch belongs to the PyTorch extension, whose installer picks the CUDA or CPU
build for the machine. Its version is read from the package metadata (torch
is not imported: on Windows an imported torch locks its DLLs); when it is
missing or older than ``TORCH_REQUIREMENT`` PyTorchUtils is asked to install
or upgrade it. The other requirements (MONAI capped to the range the project
tests) are installed with a constraints file that pins torch to the installed
version, so pip can never swap the user's CUDA torch for a CPU build from
PyPI: through ``pip_ensure`` (Slicer 5.11 on: ``slicer.pydeps``, first named
``slicer.packaging``; neither is imported by ``import slicer``) or, on older
Slicer, ``slicer.util.pip_install`` after asking here.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import tempfile
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

#: torch the models need (pyproject's floor); older ones are upgraded through PyTorchUtils.
TORCH_REQUIREMENT = ">=2.3"
#: The modules in which Slicer's pip_ensure lives, newest name first.
PIP_ENSURE_MODULES = ("pydeps", "packaging")

PipRunner = Callable[[Sequence[str]], None]


def _packaging():
    """The ``packaging`` library (Slicer ships it; pip vendors a copy where it does not)."""
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError:  # pragma: no cover - only in a Python without packaging
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.version import Version
    return Requirement, Version


def read_requirements(path: str | Path) -> list[str]:
    """Requirement lines of a requirements.txt, comments and blanks dropped."""
    lines = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def distribution_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[\s]", requirement, maxsplit=1)[0].strip()


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, or None; nothing is imported."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def satisfies(version: str | None, specifier: str) -> bool:
    """True when ``version`` is installed and inside ``specifier`` (e.g. ">=1.4,<1.7")."""
    if version is None:
        return False
    Requirement, Version = _packaging()
    return Requirement(f"x{specifier}").specifier.contains(Version(version), prereleases=True)


def missing_requirements(
    requirements: Sequence[str], version_of: Callable[[str], str | None] = installed_version
) -> list[str]:
    """The requirements not satisfied: absent, or installed at a version outside their range.

    Args:
        requirements: requirement strings ("monai>=1.4,<1.7").
        version_of: distribution name -> installed version or None (injected by tests).
    """
    Requirement, _ = _packaging()
    missing = []
    for requirement in requirements:
        parsed = Requirement(requirement)
        if not satisfies(version_of(parsed.name), str(parsed.specifier)):
            missing.append(requirement)
    return missing


def pip_ensure_module(slicer_module):
    """Slicer's module that has ``pip_ensure`` (5.11 on), imported explicitly, or None."""
    for name in PIP_ENSURE_MODULES:
        found = getattr(slicer_module, name, None)
        if found is None and getattr(slicer_module, "__name__", None) == "slicer":
            try:
                found = importlib.import_module(f"slicer.{name}")
            except ImportError:
                found = None
        if found is not None and hasattr(found, "pip_ensure"):
            return found
    return None


def installer_name(slicer_module) -> str:
    """ "packaging" where Slicer's pip_ensure exists (Slicer 5.11 on), else "util"."""
    return "packaging" if pip_ensure_module(slicer_module) is not None else "util"


def write_constraints(torch_version: str, folder: str) -> str:
    """A pip constraints file pinning torch to the installed version; its path."""
    path = os.path.join(folder, "constraints.txt")
    with open(path, "w", encoding="utf-8") as f:
        # A constraint, not a requirement: it never installs torch, only forbids changing it.
        f.write(f"torch=={torch_version}\n")
    return path


class DependencyInstaller:
    """Makes torch and the requirements importable in Slicer's Python, asking first.

    Args:
        requirements_file: the module's Resources/requirements.txt.
        slicer_module: the ``slicer`` package (tests pass a stand-in).
        requester: the name shown in Slicer's confirmation dialog.
        pip_runner: runs pip with these arguments (["install", ...]); default
            ``slicer.util.pip_install`` (tests record the command lines).
        confirm: shows a question, returns True for OK; default Slicer's dialog.
        torch_logic: PyTorchUtils.PyTorchUtilsLogic() or a stand-in; default
            imported when needed.
        busy: a context manager factory for a wait cursor, entered only around
            pip itself, never around a dialog.
        version_of: distribution name -> installed version or None.
        testing: True under Slicer's tests (nothing is installed); default
            ``slicer.app.testingEnabled()``.
    """

    def __init__(
        self,
        requirements_file: str | Path,
        slicer_module,
        requester: str = "MissingModalityTools",
        pip_runner: PipRunner | None = None,
        confirm: Callable[[str], bool] | None = None,
        torch_logic=None,
        busy: Callable[[], object] = nullcontext,
        version_of: Callable[[str], str | None] = installed_version,
        testing: bool | None = None,
    ):
        self.requirements_file = str(requirements_file)
        self.requirements = read_requirements(requirements_file)
        self.slicer = slicer_module
        self.requester = requester
        self.pip_runner = pip_runner or (lambda args: slicer_module.util.pip_install(list(args[1:])))
        self.confirm = confirm or slicer_module.util.confirmOkCancelDisplay
        self._torch_logic = torch_logic
        self.busy = busy
        self.version_of = version_of
        if testing is None:
            app = getattr(slicer_module, "app", None)
            testing = bool(app is not None and app.testingEnabled())
        self.testing = testing

    def torch_logic(self):
        if self._torch_logic is None:
            try:
                import PyTorchUtils
            except ImportError:
                raise RuntimeError(
                    "MissingModalityTools needs PyTorch: install the 'PyTorch' extension from the "
                    "Extensions Manager, restart Slicer, and press Apply again."
                ) from None
            self._torch_logic = PyTorchUtils.PyTorchUtilsLogic()
        return self._torch_logic

    def ensure(self) -> bool:
        """True when everything is there, False when the user declined.

        Raises RuntimeError with the fix when the PyTorch extension is missing,
        and under testing when anything is missing (nothing is installed then).
        """
        torch_version = self.ensure_torch()
        if torch_version is None:
            return False
        missing = missing_requirements(self.requirements, self.version_of)
        if not missing:
            return True
        if self.testing:
            raise RuntimeError(
                f"Missing Python packages {missing}, and packages are never installed under testing: "
                "install them first (pip_install in Slicer's Python console)."
            )
        with tempfile.TemporaryDirectory(prefix="MissingModalityTools-pip-") as folder:
            constraints = write_constraints(torch_version, folder)
            if not self.install(missing, constraints):
                return False
        return not missing_requirements(self.requirements, self.version_of)

    def ensure_torch(self) -> str | None:
        """The installed torch version, after PyTorchUtils installed or upgraded it; None if declined."""
        version = self.version_of("torch")
        if satisfies(version, TORCH_REQUIREMENT):
            return version
        problem = "is not installed" if version is None else f"{version} is older than {TORCH_REQUIREMENT}"
        if self.testing:
            raise RuntimeError(
                f"PyTorch {problem}, and packages are never installed under testing: "
                "install the PyTorch extension and torch before running the tests."
            )
        # PyTorchUtils asks the user itself and picks the CUDA build; it returns None when declined.
        if self.torch_logic().installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT) is None:
            return None
        version = self.version_of("torch")
        if not satisfies(version, TORCH_REQUIREMENT):
            raise RuntimeError(
                f"PyTorch {version} is still older than {TORCH_REQUIREMENT}: restart Slicer and upgrade it "
                f"in the 'PyTorch Utils' module with the version requirement '{TORCH_REQUIREMENT}'."
            )
        return version

    def install(self, missing: Sequence[str], constraints: str) -> bool:
        """Install ``missing`` with torch held by ``constraints``; False when the user declined."""
        module = pip_ensure_module(self.slicer)
        if module is not None:
            Requirement, _ = _packaging()
            declined = (RuntimeError, getattr(module, "InstallationAbortedError", RuntimeError))
            try:
                result = module.pip_ensure(
                    [Requirement(r) for r in self.requirements], constraints=constraints, requester=self.requester
                )
            except declined:  # how pip_ensure says the user declined
                return False
            return result is not False
        if not self.confirm(
            f"{self.requester} needs these Python packages: {', '.join(missing)}.\n"
            "Install them now? This downloads them from PyPI and can take a few minutes. "
            "The installed PyTorch is kept as it is."
        ):
            return False
        with self.busy():
            self.pip_runner(["install", *missing, "--constraint", constraints])
        return True


def ensure_dependencies(requirements_file: str | Path, requester: str = "MissingModalityTools", **kwargs) -> bool:
    """``DependencyInstaller(requirements_file, slicer, requester, **kwargs).ensure()`` inside Slicer."""
    import slicer

    return DependencyInstaller(requirements_file, slicer, requester, **kwargs).ensure()
