"""lib/'s packages follow the data flow: data <- train <- evaluate <- report.

A module may import from its own package, from the packages before it in the flow, and
from the shared base modules (lib.common, lib.config, lib.layout); never from a later
package, and the base modules import no package at all.
"""
import ast
import pathlib

import pytest

from tests.helpers import ROOT

LIB = pathlib.Path(ROOT) / "lib"
FLOW = ["data", "train", "evaluate", "report"]
BASE = {"common", "config", "layout"}


def lib_imports(path):
    """The lib.<package> names that a module imports (at any depth: lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "lib"]
        else:
            continue
        found.update(n.split(".")[1] for n in names if n.startswith("lib.") and n.count(".") >= 1)
    return found


def allowed(package):
    if package in BASE:
        return BASE
    return BASE | set(FLOW[:FLOW.index(package) + 1])


MODULES = sorted(LIB.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(LIB)))
def test_imports_point_down_the_data_flow(path):
    rel = path.relative_to(LIB)
    package = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    if package == "__init__":
        return
    bad = lib_imports(path) - allowed(package)
    assert not bad, f"lib/{rel} ({package}) imports lib.{', lib.'.join(sorted(bad))}, against the data flow"


def test_every_module_is_in_a_package_or_the_base():
    loose = {p.stem for p in LIB.glob("*.py")} - BASE - {"__init__"}
    assert not loose, f"modules outside lib/'s packages: {sorted(loose)}"
    assert {p.name for p in LIB.iterdir() if p.is_dir() and not p.name.startswith("__")} == set(FLOW)


def test_the_check_sees_a_violation(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from lib.report.render import render\n")
    assert lib_imports(bad) == {"report"}
    assert "report" not in allowed("train")
