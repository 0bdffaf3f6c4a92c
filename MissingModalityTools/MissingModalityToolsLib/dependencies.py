"""Python packages the worker needs, installed only when the user agrees.

Nothing is installed at import time or while Slicer runs its tests: the panel
calls ``ensure_dependencies`` when the user presses Apply. torch comes from the
PyTorch extension (its installer chooses the CUDA or CPU build); the rest
through ``slicer.packaging.pip_ensure`` (Slicer 5.11 on: it asks, installs with
progress and offers a restart) or, on older Slicer, ``slicer.util.pip_install``
after asking here.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

TORCH_REQUIREMENT = ">=2.1"


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


def missing_requirements(requirements: list[str]) -> list[str]:
    """The requirements whose distribution is not installed (versions are left to pip)."""
    missing = []
    for requirement in requirements:
        try:
            importlib.metadata.version(distribution_name(requirement))
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


def installer_name(slicer_module) -> str:
    """ "packaging" where slicer.packaging.pip_ensure exists (Slicer 5.11 on), else "util"."""
    packaging = getattr(slicer_module, "packaging", None)
    return "packaging" if packaging is not None and hasattr(packaging, "pip_ensure") else "util"


def torch_installed() -> bool:
    try:
        importlib.metadata.version("torch")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def ensure_dependencies(requirements_file: str | Path, requester: str = "MissingModalityTools") -> bool:
    """Make torch and the requirements importable in Slicer's Python, asking first.

    Returns True when everything is there, False when the user declined.
    Raises RuntimeError with the fix when the PyTorch extension is missing.
    Under Slicer's tests nothing is installed: missing packages are an error.
    """
    import slicer

    requirements = read_requirements(requirements_file)
    testing = bool(getattr(slicer, "app", None) and slicer.app.testingEnabled())
    if not torch_installed():
        if testing:
            raise RuntimeError(
                "PyTorch is not installed and packages are never installed under testing: "
                "install the PyTorch extension and torch before running the tests."
            )
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError(
                "MissingModalityTools needs PyTorch: install the 'PyTorch' extension from the "
                "Extensions Manager, restart Slicer, and press Apply again."
            ) from None
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT
        )
        if torch is None:
            return False
    missing = missing_requirements(requirements)
    if not missing:
        return True
    if testing:
        raise RuntimeError(
            f"Missing Python packages {missing}, and packages are never installed under testing: "
            "install them first (pip_install in Slicer's Python console)."
        )
    if installer_name(slicer) == "packaging":
        result = slicer.packaging.pip_ensure(
            slicer.packaging.load_requirements(str(requirements_file)), requester=requester
        )
        return result is not False and not missing_requirements(requirements)
    if not slicer.util.confirmOkCancelDisplay(
        f"{requester} needs these Python packages: {', '.join(missing)}.\n"
        "Install them now? This downloads them from PyPI and can take a few minutes."
    ):
        return False
    slicer.util.pip_install(missing)
    return not missing_requirements(requirements)
