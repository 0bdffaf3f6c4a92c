"""Rules of the geometry chain reached in one place each (issue 22, item 4), checked on the source.

- The skull-strip verdict: ``inspection.skull_figures`` (with ``looks_skull_stripped`` over a case);
  the pipeline asks the preparation for it, the module's stand-in worker asks the library; the
  Slicer module computes nothing of it.
- The label rule (label maps onto a coarser or finer grid): ``grid_chain.labels_onto``, which the one
  grid inverse (``GridChain.inverse``) calls for "label".
- One grid inverse: ``GridChain.inverse`` is the only function named ``inverse`` in the library and
  every call of it names its kind and where it stops (no interpolation chosen by a caller).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "Lib" / "medmodels"
MODULE_DIR = ROOT / "MissingModalityTools"
#: The thresholds of the skull-strip verdict (Lib/medmodels/inspection.py).
VERDICT_THRESHOLDS = {"SKULL_STRIPPED_MAX_FRACTION", "ZERO_BACKGROUND_MIN", "RIM_RATIO_MAX"}
#: Where a threshold may be named besides inspection.py, and why: brain_mask picks its mask method
#: (the non-zero union or Otsu) by the non-zero fraction, and inspection.py imports the constant from it.
THRESHOLD_ELSEWHERE = {("brain_mask.py", "brain_mask"), ("brain_mask.py", None)}


def _trees(*folders: Path):
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"))


def _functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _enclosing(tree: ast.AST, node: ast.AST) -> str | None:
    """The name of the innermost function around ``node`` (None at module level)."""
    inside = [f for f in _functions(tree) if f.lineno <= node.lineno <= f.end_lineno]
    return min(inside, key=lambda f: f.end_lineno - f.lineno).name if inside else None


def test_the_skull_strip_verdict_is_defined_once_in_inspection():
    judging = [
        f"{path.relative_to(ROOT)}: {f.name}"
        for path, tree in _trees(LIB, MODULE_DIR)
        for f in _functions(tree)
        if re.search(r"skull|stripped", f.name) and path.name != "inspection.py"
    ]
    assert not judging, judging
    named = []
    for path, tree in _trees(LIB, MODULE_DIR):
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in VERDICT_THRESHOLDS and path.name != "inspection.py":
                if (path.name, _enclosing(tree, node)) not in THRESHOLD_ELSEWHERE:
                    named.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.id}")
    assert not named, named


def test_the_module_asks_for_the_verdict_and_computes_none_of_it():
    computing = []
    for path, tree in _trees(MODULE_DIR):
        source = path.read_text(encoding="utf-8").splitlines()
        for f in _functions(tree):
            text = "\n".join(source[f.lineno - 1 : f.end_lineno])
            if not re.search(r"skull|stripped", text, re.IGNORECASE):
                continue
            for node in ast.walk(f):
                numeric = isinstance(node, ast.Compare) and any(
                    isinstance(c, ast.Constant) and isinstance(c.value, float) for c in ast.walk(node)
                )  # a threshold: a comparison with a fraction
                counting = isinstance(node, ast.Attribute) and node.attr in ("count_nonzero", "mean", "percentile")
                if numeric or counting:
                    computing.append(f"{path.relative_to(ROOT)}:{node.lineno} in {f.name}")
    assert not computing, computing
    worker = (MODULE_DIR / "Resources" / "Testing" / "slicer_contract_worker.py").read_text(encoding="utf-8")
    assert "from medmodels.inspection import looks_skull_stripped" in worker


def test_the_pipeline_takes_the_verdict_from_the_preparation():
    pipeline = (LIB / "pipeline.py").read_text(encoding="utf-8")
    preparation = (LIB / "preparation.py").read_text(encoding="utf-8")
    assert "prepared.skull_stripped" in pipeline and "looks_skull_stripped" not in pipeline
    assert "inspection.skull_stripped" in preparation


def _users(path: Path, name: str) -> set[str]:
    """The functions of ``path`` that name ``name`` (a call of it, or ``np.<name>``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        f.name
        for f in _functions(tree)
        for node in ast.walk(f)
        if (isinstance(node, ast.Name) and node.id == name) or (isinstance(node, ast.Attribute) and node.attr == name)
    }


def test_the_one_inverse_takes_the_one_label_rule():
    assert _users(LIB / "grid_chain.py", "labels_onto") == {"inverse"}
    # No second way back for label maps beside it: the only argmax over label shares is the rule's.
    assert _users(LIB / "grid_chain.py", "argmax") == {"labels_onto"}
    for name in ("working_grid.py", "preparation.py", "resampling.py", "pipeline.py"):
        assert _users(LIB / name, "argmax") == set(), name
        assert _users(LIB / name, "labels_onto") == set(), name


def test_one_grid_inverse_and_every_call_names_its_kind_and_stage():
    from medmodels.grid_chain import KINDS, STAGES

    defined, calls = [], []
    for path, tree in _trees(LIB):
        defined += [f"{path.name}: {f.name}" for f in _functions(tree) if f.name == "inverse"]
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "inverse":
                calls.append((path.name, node))
    assert defined == ["grid_chain.py: inverse"]
    assert {name for name, _ in calls} >= {"pipeline.py", "inference.py", "data.py"}  # its callers, both models
    for name, call in calls:
        kind = call.args[1] if len(call.args) > 1 else None
        to = next((k.value for k in call.keywords if k.arg == "to"), None)
        assert isinstance(to, ast.Constant) and to.value in STAGES, f"{name}:{call.lineno} names no stage"
        if isinstance(kind, ast.Constant):  # else a name, as in the pipeline's helper: checked at run time
            assert kind.value in KINDS, f"{name}:{call.lineno}"
