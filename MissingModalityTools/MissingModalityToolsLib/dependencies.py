"""Python packages the worker needs, installed only when the user agrees, never replacing Slicer's own.

Nothing is installed at import time or while Slicer runs its tests: the panel
calls ``ensure_dependencies`` when the user presses Apply.

torch belongs to the PyTorch extension, whose installer picks the CUDA or CPU
build for the machine. Its version is read from the package metadata (torch
is not imported: on Windows an imported torch locks its DLLs); when it is
missing or older than ``torch_requirement`` PyTorchUtils is asked to install
or upgrade it. The other requirements are installed with a constraints file
that pins what is already there at its installed version, read at run time:
torch (so pip can never swap the user's CUDA torch for a CPU build from PyPI)
and Slicer's own numpy, SimpleITK and scipy (``SLICER_PACKAGES``: Slicer 5.10
on ships numpy 2, and MONAI 1.4 would replace it with numpy 1). MONAI's range
is narrowed to the releases that install beside that torch, Python and numpy
(``monai_requirement``). The install goes through Slicer's ``pip_ensure``
(module ``slicer.packaging``, Slicer 5.12.0 on; not imported by
``import slicer``) or, on older Slicer, ``slicer.util.pip_install`` after
asking here. ``upgrade`` reinstalls the newest MONAI, scipy and tqdm allowed
under the same constraints.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

#: torch the models need (pyproject's floor); older ones are upgraded through PyTorchUtils.
TORCH_FLOOR = "2.3"
#: With numpy 2 (Slicer 5.10 on) the floor is MONAI 1.5.1's: MONAI 1.4, the last release for an
#: older torch, needs numpy < 2.
TORCH_FLOOR_NUMPY_2 = "2.4.1"
#: Slicer's own packages: never replaced, pinned at their installed versions while pip installs.
SLICER_PACKAGES = ("numpy", "SimpleITK", "scipy")
#: The module in which Slicer's pip_ensure lives (Slicer 5.12.0 on, Slicer/Slicer#9010).
PIP_ENSURE_MODULE = "packaging"

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


def torch_requirement(numpy_version: str | None) -> str:
    """The torch range the models and a MONAI that keeps this numpy need (">=2.3" or ">=2.4.1")."""
    return f">={TORCH_FLOOR_NUMPY_2 if _major(numpy_version) >= 2 else TORCH_FLOOR}"


def _major(version: str | None) -> int:
    return int(version.split(".")[0]) if version else 0


def monai_requirement(python_version: Sequence[int], torch_version: str, numpy_version: str | None) -> str:
    """The MONAI range that installs beside this Python, torch and numpy without changing them.

    From MONAI's metadata: 1.4.0 needs numpy < 2; 1.5.1 torch >= 2.4.1;
    1.6.1 torch >= 2.8 and Python >= 3.10. The project's code runs on all
    three (the DDIM grid is its own: syn/diffusion.py).

    Args:
        python_version: (major, minor) of the worker's Python (3.9 on Slicer 5.6/5.8).
        torch_version: the installed torch ("2.4.1+cu121").
        numpy_version: the installed numpy, or None.
    """
    if satisfies(torch_version, ">=2.8") and tuple(python_version[:2]) >= (3, 10):
        return "monai>=1.5.1,<1.7"
    if satisfies(torch_version, ">=2.4.1"):
        return "monai>=1.5.1,<1.6"
    if _major(numpy_version) >= 2:
        raise RuntimeError(
            f"PyTorch {torch_version} is older than {TORCH_FLOOR_NUMPY_2}, which MONAI needs beside Slicer's "
            f"numpy {numpy_version}: upgrade it in the 'PyTorch Utils' module with the version requirement "
            f"'>={TORCH_FLOOR_NUMPY_2}', restart Slicer and press Apply again."
        )
    return "monai>=1.4,<1.5"


def narrowed_requirements(
    requirements: Sequence[str], python_version: Sequence[int], torch_version: str, numpy_version: str | None
) -> list[str]:
    """requirements.txt's lines with MONAI's range replaced by ``monai_requirement``'s."""
    narrowed = monai_requirement(python_version, torch_version, numpy_version)
    return [narrowed if distribution_name(r).lower() == "monai" else r for r in requirements]


def constraint_lines(
    torch_version: str, requirements: Sequence[str], version_of: Callable[[str], str | None]
) -> list[str]:
    """``name==version`` for torch and every installed Slicer package (``SLICER_PACKAGES``).

    A Slicer package that is also a requirement it does not meet (scipy older
    than the floor) is left free, so pip can upgrade it; numpy stays pinned,
    so the new one is built for Slicer's numpy.
    """
    unmet = {distribution_name(r).lower() for r in missing_requirements(requirements, version_of)}
    lines = [f"torch=={torch_version}"]
    for name in SLICER_PACKAGES:
        version = version_of(name)
        if version is not None and name.lower() not in unmet:
            lines.append(f"{name}=={version}")
    return lines


def write_constraints(lines: Sequence[str], folder: str) -> str:
    """A pip constraints file with ``lines``; its path. A constraint never installs, only forbids changing."""
    path = os.path.join(folder, "constraints.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{line}\n" for line in lines))
    return path


def pip_ensure_module(slicer_module):
    """``slicer.packaging`` where it has ``pip_ensure`` (Slicer 5.12.0 on), imported explicitly, or None."""
    found = getattr(slicer_module, PIP_ENSURE_MODULE, None)
    if found is None and getattr(slicer_module, "__name__", None) == "slicer":
        try:
            found = importlib.import_module(f"slicer.{PIP_ENSURE_MODULE}")
        except ImportError:
            found = None
    return found if found is not None and hasattr(found, "pip_ensure") else None


def installer_name(slicer_module) -> str:
    """ "packaging" where Slicer's pip_ensure exists (Slicer 5.12.0 on), else "util"."""
    return "packaging" if pip_ensure_module(slicer_module) is not None else "util"


#: What the worker's Python reports about itself: the versions a run uses (``worker_package_versions``).
_VERSIONS_SCRIPT = """import importlib.metadata as m, json, sys
out = {"python": sys.version.split()[0]}
for name in ("torch", "monai", "numpy", "SimpleITK", "scipy"):
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        out[name] = None
try:
    import medmodels
    out["medmodels"] = medmodels.__version__
except Exception as e:
    out["medmodels"] = None
    out["medmodels_error"] = str(e)
print(json.dumps(out))
"""


def worker_package_versions(python: str, env: dict, timeout: float = 60.0) -> dict:
    """Versions of Python, torch, MONAI, numpy, SimpleITK, scipy and medmodels in the worker's Python.

    Read in the worker's own Python (the one a run uses), from the package
    metadata: torch is not imported. A package that is absent is None.
    Raises RuntimeError with the worker's last stderr line when it cannot run.
    """
    import json

    done = subprocess.run([python, "-c", _VERSIONS_SCRIPT], env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = [line for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(
            f"The worker's Python {python} could not report its packages: {tail[-1] if tail else done.returncode}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


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
        python_version: (major, minor) of Slicer's Python, which the worker
            runs (PythonSlicer); default this process's.
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
        python_version: Sequence[int] | None = None,
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
        self.python_version = tuple(python_version or sys.version_info[:2])

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

    def ensure(self, upgrade: bool = False) -> bool:
        """True when everything is there, False when the user declined.

        Args:
            upgrade: reinstall the newest allowed MONAI, scipy and tqdm even
                when the installed ones satisfy the requirements (the panel's
                upgrade button); torch is upgraded in PyTorch Utils, not here.

        Raises RuntimeError with the fix when the PyTorch extension is missing,
        when the installed torch cannot go with Slicer's numpy, and under
        testing when anything is missing (nothing is installed then).
        """
        torch_version = self.ensure_torch()
        if torch_version is None:
            return False
        requirements = narrowed_requirements(
            self.requirements, self.python_version, torch_version, self.version_of("numpy")
        )
        missing = list(requirements) if upgrade else missing_requirements(requirements, self.version_of)
        if not missing:
            return True
        if self.testing:
            raise RuntimeError(
                f"Missing Python packages {missing}, and packages are never installed under testing: "
                "install them first (pip_install in Slicer's Python console)."
            )
        with tempfile.TemporaryDirectory(prefix="MissingModalityTools-pip-") as folder:
            pins = [] if upgrade else requirements
            constraints = write_constraints(constraint_lines(torch_version, pins, self.version_of), folder)
            if not self.install(requirements, missing, constraints, upgrade):
                return False
        return not missing_requirements(requirements, self.version_of)

    def ensure_torch(self) -> str | None:
        """The installed torch version, after PyTorchUtils installed or upgraded it; None if declined."""
        required = torch_requirement(self.version_of("numpy"))
        version = self.version_of("torch")
        if satisfies(version, required):
            return version
        problem = "is not installed" if version is None else f"{version} is older than {required}"
        if self.testing:
            raise RuntimeError(
                f"PyTorch {problem}, and packages are never installed under testing: "
                "install the PyTorch extension and torch before running the tests."
            )
        # PyTorchUtils asks the user itself and picks the CUDA build; it returns None when declined.
        if self.torch_logic().installTorch(askConfirmation=True, torchVersionRequirement=required) is None:
            return None
        version = self.version_of("torch")
        if not satisfies(version, required):
            raise RuntimeError(
                f"PyTorch {version} is still older than {required}: restart Slicer and upgrade it "
                f"in the 'PyTorch Utils' module with the version requirement '{required}'."
            )
        return version

    def install(self, requirements: Sequence[str], missing: Sequence[str], constraints: str, upgrade: bool) -> bool:
        """Install ``missing`` with torch and Slicer's packages held by ``constraints``; False when declined."""
        module = None if upgrade else pip_ensure_module(self.slicer)
        if module is not None:
            Requirement, _ = _packaging()
            declined = (RuntimeError, getattr(module, "InstallationAbortedError", RuntimeError))
            try:
                result = module.pip_ensure(
                    [Requirement(r) for r in requirements], constraints=constraints, requester=self.requester
                )
            except declined:  # how pip_ensure says the user declined
                return False
            return result is not False
        if not self.confirm(
            f"{self.requester} needs these Python packages: {', '.join(missing)}.\n"
            f"{'Upgrade' if upgrade else 'Install'} them now? This downloads them from PyPI and can take a few "
            "minutes. The installed PyTorch and Slicer's numpy, SimpleITK and scipy are kept as they are."
        ):
            return False
        with self.busy():
            self.pip_runner(["install", *(["--upgrade"] if upgrade else []), *missing, "--constraint", constraints])
        return True


def ensure_dependencies(
    requirements_file: str | Path, requester: str = "MissingModalityTools", upgrade: bool = False, **kwargs
) -> bool:
    """``DependencyInstaller(requirements_file, slicer, requester, **kwargs).ensure(upgrade)`` inside Slicer."""
    import slicer

    return DependencyInstaller(requirements_file, slicer, requester, **kwargs).ensure(upgrade)
