"""Imports follow the data flow: bench <- training, bench <- search <- reports <- cli; nothing imports cli.

Entry points (``__main__.py`` and ``if __name__ == "__main__":`` blocks) mount the command line
and are left out.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "bench": {"bench"},
    "training": {"bench", "training"},
    "search": {"bench", "search"},
    "reports": {"bench", "search", "reports"},
    "cli": {"bench", "training", "search", "reports", "cli"},
}


def _is_main_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test)


def _imports(tree: ast.AST):
    for node in ast.iter_child_nodes(tree):
        if _is_main_block(node):
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        yield from _imports(node)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_what_the_data_flow_allows(package):
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.name == "__main__.py":
            continue
        for module in _imports(ast.parse(path.read_text())):
            top = module.split(".")[0]
            if top in ALLOWED and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong
