"""diagnostics/ and repair/ are libraries: they never import streamlit (pages stay thin)."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("package", ["diagnostics", "repair", "workspace"])
def test_library_packages_do_not_import_streamlit(package):
    offenders = []
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "streamlit"]
    assert offenders == []


def test_pages_are_thin():
    long = {p.name: len(p.read_text().splitlines()) for p in (REPO / "pages").glob("*.py")
            if p.name not in ("ui.py", "__init__.py")}
    assert all(n <= 160 for n in long.values()), long
