"""The mesh stands below the gateway: no module of ``mesh`` imports the gateway, the inference
extension or the agent gateway (the gateway uses the mesh's HBONE and identity code, never the
other way round)."""

from __future__ import annotations

import ast
from pathlib import Path

MESH = Path(__file__).resolve().parents[2] / "mesh"
ABOVE = ("gateway", "inference_ext", "agentgw")


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_mesh_module_imports_a_package_above_it() -> None:
    modules = sorted(MESH.rglob("*.py"))
    assert len(modules) > 20  # the walk found the package
    offending = {
        str(path.relative_to(MESH.parent)): sorted(
            name for name in imported(path) if name.split(".")[0] in ABOVE
        )
        for path in modules
    }
    assert {path: names for path, names in offending.items() if names} == {}
