"""The Slicer module's tests import ``MissingModalityToolsLib`` as Slicer does:
from the module's folder. A conftest is loaded before the test files, so the
folder is on ``sys.path`` whatever order their imports are sorted in."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _path in (str(ROOT / "Lib"), str(ROOT / "MissingModalityTools")):
    if _path not in sys.path:
        sys.path.insert(0, _path)
