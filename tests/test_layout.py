"""The package's shape: subpackages by pipeline stage, all installed, small modules, no import
circles, and no deep-learning framework imported by the engine."""

from __future__ import annotations

import ast
import re
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"onnxviz": ROOT / "onnxviz", "onnxviz.converters": ROOT / "converters"}
MAX_LINES = 420  # "no module past ~400 lines"
FRAMEWORKS = ("torch", "tensorflow", "keras", "tf2onnx", "onnx2torch", "jax")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([top, *parts])] = path
    return found


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """onnxviz modules that ``name`` imports anywhere (function-level too), except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if _is_package(name, modules) else name.rsplit(".", 1)[0]
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{a.name}" for a in node.names] + [stem]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _stage(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else name


def test_every_subpackage_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    modules = _modules()
    packages = {name for name in modules if _is_package(name, modules)}
    assert packages <= listed, f"add to pyproject.toml's packages: {sorted(packages - listed)}"
    assert config["package-dir"]["onnxviz.converters"] == "converters"


def test_modules_stay_small():
    too_long = {name: n for name, path in _modules().items() if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not too_long, f"split these modules (over {MAX_LINES} lines): {too_long}"


def test_no_flat_growth_of_the_top_level():
    flat = sorted(p.name for p in (ROOT / "onnxviz").glob("*.py"))
    assert len(flat) <= 8, f"put new modules in the subpackage of their pipeline stage, not at the top: {flat}"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles_between_modules_or_stages():
    modules = _modules()
    module_edges = {name: _imports(name, path, modules) for name, path in modules.items()}
    # A package's __init__ re-exporting its own modules is not a circle.
    module_edges = {
        name: {t for t in targets if not (_is_package(name, modules) and t.startswith(name + "."))}
        for name, targets in module_edges.items()
    }
    assert not _cycles(module_edges), f"module import circles: {_cycles(module_edges)}"
    stage_edges: dict[str, set[str]] = defaultdict(set)
    for name, targets in module_edges.items():
        for target in targets:
            if _stage(target) != _stage(name) and _stage(name) != "onnxviz" and _stage(target) != "onnxviz":
                stage_edges[_stage(name)].add(_stage(target))
    assert not _cycles(stage_edges), f"stages import each other in a circle: {_cycles(stage_edges)} ({dict(stage_edges)})"


def test_engine_imports_no_framework():
    pattern = re.compile(rf"^\s*(import|from)\s+({'|'.join(FRAMEWORKS)})\b", re.M)
    offenders = [
        str(path.relative_to(ROOT)) for path in (ROOT / "onnxviz").rglob("*.py") if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"the engine must not import a DL framework: {offenders}"
