"""The audit package's modules import each other without a circle (imports under TYPE_CHECKING count too: a circle
hidden there is still a circle in the design)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import tenantlm.audit

PACKAGE = "tenantlm.audit"


def imports_within_package(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE + "."):
            found.add(node.module.removeprefix(PACKAGE + "."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix(PACKAGE + ".") for a in node.names if a.name.startswith(PACKAGE + ".")}
    return found


def test_no_import_circle_in_the_audit_package() -> None:
    folder = Path(tenantlm.audit.__file__).parent
    graph = {p.stem: imports_within_package(p) for p in folder.glob("*.py") if p.stem != "__init__"}
    assert graph["auth_failures"] and graph["service"]  # the modules this guards are there and import siblings
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"import circle in {PACKAGE}: {exc.args[1]}") from None
    assert order.index("service") > order.index("ports") and "service" not in graph["auth_failures"]
