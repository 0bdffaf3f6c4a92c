"""Shape rules of the code base that review would otherwise have to remember."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "Lib" / "medmodels"


def _functions(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def test_no_library_function_is_over_80_lines():
    long = [
        f"{path.relative_to(ROOT)}: {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, node in _functions(LIB)
        if node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, long


def test_medmodels_never_imports_slicer_or_qt():
    banned = {"slicer", "vtk", "qt", "ctk", "mrml", "PyQt5"}
    found = []
    for path in sorted(LIB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in banned]
    assert not found, found


# -- layer rules (docs/architecture.md names each of these tests) ------------------------------

MODULE_DIR = ROOT / "MissingModalityTools"
#: The library's layers, lowest first: a module may import its own layer and those below, never above.
#: Every library module must be in one (a new file is placed here, where review sees it).
LAYERS = (
    (
        "foundations",
        (
            "medmodels",
            "medmodels.errors",
            "medmodels.modalities",
            "medmodels.image",
            "medmodels.io",
            "medmodels.atomic",
            "medmodels.report",
            "medmodels.progress",
            "medmodels.device",
            "medmodels.distributed",
            "medmodels.runtime",
            "medmodels.labels",
            "medmodels.metrics",
            "medmodels.stats",
            "medmodels.options",
            "medmodels.flags",
            "medmodels.checkpoint_ref",
            "medmodels.contract",
            "medmodels.datasets",
            "medmodels.phantom",
            "medmodels.resampling",
            "medmodels.brain_mask",
            "medmodels.normalisation",
            "medmodels.cropping",
            "medmodels.working_grid",
            "medmodels.grid_chain",
            "medmodels.tumour_carving",
            "medmodels.weights",
            "medmodels.held_out",
            "medmodels.nets",
            "medmodels.inspection",
            "medmodels.registration",
            "medmodels.brain_net",
            "medmodels.brain_extraction",
            "medmodels.preparation",
        ),
    ),
    (
        "training loop",
        ("medmodels.loop_config", "medmodels.weight_average", "medmodels.training", "medmodels.throughput"),
    ),
    ("families", ("medmodels.seg", "medmodels.syn")),
    (
        "orchestration",
        (
            "medmodels.pipeline",
            "medmodels.downstream",
            "medmodels.segmenter_in_the_loop",
            "medmodels.region_condition",
            "medmodels.demo",
        ),
    ),
    ("interface", ("medmodels.cli", "medmodels.__main__", "medmodels.commands")),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT / "Lib").with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (relative imports resolved)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:  # only the library has packages
            name = _module_name(path).split(".")
            package = name if path.name == "__init__.py" else name[:-1]
            base = package[: len(package) - node.level + 1]
            found.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _library_graph() -> dict[str, set[str]]:
    """Library module -> the library modules it imports."""
    graph = {}
    for path in sorted(LIB.rglob("*.py")):
        graph[_module_name(path)] = {m for m in _imports(path) if m.split(".")[0] == "medmodels"}
    return graph


def _layer(module: str) -> int | None:
    for index, (_, prefixes) in enumerate(LAYERS):
        if (
            any(module == p or module.startswith(p + ".") for p in prefixes if p != "medmodels")
            or module == "medmodels"
        ):
            return index
    return None


def test_every_library_module_has_a_layer_and_imports_none_above_it():
    graph = _library_graph()
    unplaced = sorted(m for m in graph if _layer(m) is None)
    assert not unplaced, f"put {unplaced} in a layer of LAYERS (test_code_shape.py) and docs/architecture.md"
    upward = [
        f"{m} ({LAYERS[_layer(m)][0]}) imports {d} ({LAYERS[_layer(d)][0]})"
        for m, deps in graph.items()
        for d in sorted(deps)
        if _layer(d) is not None and _layer(d) > _layer(m)
    ]
    assert not upward, upward


def test_the_layer_check_sees_an_upward_import():
    assert _layer("medmodels.working_grid") < _layer("medmodels.seg.inference") < _layer("medmodels.pipeline")
    assert _layer("medmodels.commands.seg") == len(LAYERS) - 1 and _layer("medmodels.newfile") is None
    graph = _library_graph()
    assert "medmodels.seg.inference" in graph["medmodels.pipeline"]  # lazy imports inside functions count too


def test_seg_and_syn_do_not_import_each_other():
    graph = _library_graph()
    crossing = [
        f"{m} imports {d}"
        for m, deps in graph.items()
        for d in deps
        for a, b in (("seg", "syn"), ("syn", "seg"))
        if m.startswith(f"medmodels.{a}.") and (d == f"medmodels.{b}" or d.startswith(f"medmodels.{b}."))
    ]
    assert not crossing, crossing


def test_no_import_cycle_in_the_library():
    graph = _library_graph()
    # A package's __init__ is imported with each of its submodules: that edge is not a cycle of ours.
    edges = {m: {d for d in deps if d in graph and not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> list[str] | None:
        state[module] = 1
        for dep in sorted(edges[module]):
            if state.get(dep) == 1:
                return trail + [module, dep]
            if dep not in state:
                cycle = visit(dep, trail + [module])
                if cycle:
                    return cycle
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, " -> ".join(cycle)


def _module_sources() -> list[Path]:
    """The Slicer module's Python: the module file, its Lib and the shipped stand-in worker."""
    return sorted(p for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_library_never_imports_the_module_and_the_module_lib_never_imports_the_widget():
    for path in sorted(LIB.rglob("*.py")):
        assert not {m for m in _imports(path) if m.split(".")[0].startswith("MissingModalityTools")}, path
    for path in sorted((MODULE_DIR / "MissingModalityToolsLib").glob("*.py")):
        assert "MissingModalityTools" not in {m.split(".")[0] for m in _imports(path)}, path


def test_the_module_imports_only_torch_free_library_modules():
    """Slicer's own Python may have no torch (and the self-test's stand-in worker runs in it): every
    ``medmodels`` module the module's code imports loads with torch and MONAI made unimportable."""
    used = sorted({m for p in _module_sources() for m in _imports(p) if m.split(".")[0] == "medmodels"})
    assert "medmodels.contract" in used and "medmodels.options" in used, used
    code = (
        "import importlib, sys\n"
        "sys.modules.update(torch=None, monai=None)  # import torch / monai now raise ImportError\n"
        f"for name in {used!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai') and sys.modules[m]))\n"
    )
    env = {"PYTHONPATH": str(ROOT / "Lib"), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, f"a medmodels module the Slicer module imports needs torch:\n{out.stderr[-2000:]}"
    assert out.stdout.strip() == "[]", out.stdout


# -- one name, one thing ------------------------------------------------------------------------

#: Public top-level names that two files may both define, each with the reason it cannot be avoided.
SHARED_NAMES = {
    # Slicer looks the module's logic up as <Module>Logic; the widget file's class is the Qt-free
    # MissingModalityToolsLib.logic class plus ScriptedLoadableModuleLogic: one logic in two halves
    # (docs/slicer_module.md; test_module_static.py checks the pairing).
    "MissingModalityToolsLogic",
    # Each program's entry point (the console script, the self-test, the stand-in worker).
    "main",
}


def _top_level_names(path: Path) -> list[str]:
    """The public classes and functions ``path`` defines at its top level (``_private`` ones are the file's own)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        n.name
        for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not n.name.startswith("_")
    ]


def _by_design(name: str, paths: list[Path]) -> bool:
    """Whether the files share ``name`` by one of the code base's rules: ``seg/`` and ``syn/`` are mirror
    images (the same name in the same file name of each: ``train.train``, ``evaluate.evaluate``), and
    every ``commands/`` file gives the command line its subcommands with ``register``."""
    parts = [p.relative_to(LIB).parts if p.is_relative_to(LIB) else () for p in paths]
    if len(paths) == 2 and sorted(p[0] for p in parts if p) == ["seg", "syn"]:
        return parts[0][1:] == parts[1][1:]
    return name == "register" and all(p[:1] == ("commands",) for p in parts)


def name_clashes(paths: list[Path], root: Path = ROOT) -> dict[str, list[str]]:
    """Public top-level name -> the files that define it (relative to ``root``), for names defined in more than one file."""
    where: dict[str, list[Path]] = {}
    for path in paths:
        for name in set(_top_level_names(path)):
            where.setdefault(name, []).append(path)
    return {
        name: [str(p.relative_to(root)) for p in found]
        for name, found in sorted(where.items())
        if len(found) > 1 and name not in SHARED_NAMES and not _by_design(name, found)
    }


def test_no_class_or_function_name_is_defined_in_two_library_or_module_files():
    clashes = name_clashes(sorted(LIB.rglob("*.py")) + _module_sources())
    assert not clashes, f"give each its own name (one that says what it is): {clashes}"


def test_the_name_check_sees_a_clash(tmp_path):
    lib = tmp_path / "Lib" / "medmodels"
    for sub, text in (("syn/data.py", "def prepare_case(): ...\n"), ("preparation.py", "class prepare_case: ...\n")):
        (lib / sub).parent.mkdir(parents=True, exist_ok=True)
        (lib / sub).write_text(text + "def _helper(): ...\n", encoding="utf-8")
    assert list(name_clashes(sorted(lib.rglob("*.py")), tmp_path)) == ["prepare_case"]  # _helper: each file's own
    mirror = [LIB / "seg" / "train.py", LIB / "syn" / "train.py"]
    assert _by_design("train", mirror) and not _by_design(
        "train", [LIB / "seg" / "train.py", LIB / "syn" / "evaluate.py"]
    )
