"""Finding and importing the bundled ``medmodels``, and forgetting the module's own code for Reload.

Standard library only: the module file imports this at Slicer's start and
while the panel is built, and neither may fail when ``medmodels`` is missing
or broken. Such an install is reported when the user presses Apply (or
"Load demo case"), as one ImportError that names the fix.
"""

from __future__ import annotations

import os
import sys
import types

#: What the user reads when the bundled library is missing or cannot be imported.
REINSTALL_ADVICE = (
    "Reinstall the extension from the Extensions Manager and restart Slicer; from a source "
    "checkout, add its Lib folder next to the module folder."
)


def medmodels_folder(module_dir: str) -> str | None:
    """The folder that holds the ``medmodels`` package, put on ``sys.path``; None when there is none.

    The extension installs it next to the module file (that folder is on
    Slicer's sys.path); in a source checkout it is ../Lib.

    Args:
        module_dir: the folder of MissingModalityTools.py.
    """
    for candidate in (module_dir, os.path.join(os.path.dirname(module_dir), "Lib")):
        if os.path.isdir(os.path.join(candidate, "medmodels")):
            if candidate not in sys.path:
                sys.path.insert(0, candidate)
            return candidate
    return None


def load_libraries(module_dir: str) -> types.SimpleNamespace:
    """The input checks, options and demo loader (they import medmodels), imported on first use.

    Raises:
        ImportError: the bundled medmodels is missing, or importing it fails in
            any way (a broken install raises more than ImportError); the
            message says which and how to fix it.
    """
    if medmodels_folder(module_dir) is None:
        raise ImportError(
            "The medmodels library bundled with MissingModalityTools is missing next to the module. " + REINSTALL_ADVICE
        )
    try:
        from MissingModalityToolsLib import demo, inputs, options
    except Exception as e:  # a broken install: SyntaxError, AttributeError, a missing dependency...
        raise ImportError(
            f"The medmodels library bundled with MissingModalityTools could not be imported ({e}). " + REINSTALL_ADVICE
        ) from e
    return types.SimpleNamespace(demo=demo, inputs=inputs, options=options)


def forget_package(name: str = "MissingModalityToolsLib") -> list[str]:
    """Drop a package and its submodules from ``sys.modules``; the names dropped.

    Slicer's Reload re-executes only the module file; its
    ``from MissingModalityToolsLib import ...`` lines then import the Lib's
    files afresh instead of reusing the old ones.
    """
    dropped = [m for m in list(sys.modules) if m == name or m.startswith(name + ".")]
    for m in dropped:
        del sys.modules[m]
    return sorted(dropped)
