"""Imports follow the data flow, over every Python file of the project, entry points included:

engine <- bench <- training, search <- reports <- cli <- benchmarks; ``dynlen.errors`` is shared by all.
Nothing imports the old top-level names (everything installs under ``dynlen``), and no two modules
import each other, directly or round a longer circle.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> its import name
PACKAGES = {
    "dynlen": "dynlen",
    "engine": "dynlen.engine",
    "bench": "dynlen.bench",
    "training": "dynlen.training",
    "search": "dynlen.search",
    "reports": "dynlen.reports",
    "cli": "dynlen.cli",
}
LAYERS = ["engine", "bench", "training", "search", "reports", "cli"]
ALLOWED = {
    "engine": {"engine"},
    "bench": {"engine", "bench"},
    "training": {"engine", "bench", "training"},
    "search": {"engine", "bench", "search"},
    "reports": {"engine", "bench", "search", "reports"},
    "cli": set(LAYERS),
    "benchmarks": set(LAYERS),
}
OLD_NAMES = {"bench", "search", "reports", "training", "cli", "engine"}


def _files(folder: str) -> list[Path]:
    return [p for p in sorted((ROOT / folder).rglob("*.py")) if "metric" not in p.parts]


def _imports(path: Path) -> list[str]:
    """Every absolute import anywhere in the file (functions, ``__main__`` blocks and all)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _layer(module: str) -> str | None:
    """The folder a dynlen module lives in (``dynlen.errors`` and ``dynlen`` itself: None, shared)."""
    parts = module.split(".")
    if parts[0] != "dynlen" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_packages_import_only_what_the_data_flow_allows(folder):
    wrong = []
    for path in _files(folder):
        for module in _imports(path):
            layer = _layer(module)
            if module.split(".")[0] in OLD_NAMES:
                wrong.append(f"{path.relative_to(ROOT)} imports {module} (the old top-level name)")
            elif layer is not None and layer not in ALLOWED[folder]:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong


def test_the_shared_root_imports_no_layer_but_its_entry_point():
    for path in _files("dynlen"):
        layers = {_layer(m) for m in _imports(path)} - {None}
        assert layers <= ({"cli"} if path.name == "__main__.py" else set()), path


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    name = ".".join([PACKAGES[rel.parts[0]], *rel.with_suffix("").parts[1:]])
    return name.removesuffix(".__init__")


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for folder in PACKAGES for p in _files(folder)}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            # `from a.b import c` names module a.b.c when that is a module, else a.b
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    return graph


def test_no_import_circles():
    graph = _graph()
    circles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles
