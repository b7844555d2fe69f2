"""audit/ depends on nothing in the gateway, and its verifier on nothing but the stdlib."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

AUDIT = Path(__file__).resolve().parents[2] / "audit"
STDLIB_ONLY = {"events", "merkle"}
VERIFIER_SIDE = {"events", "merkle", "checkpoint", "verify", "__init__"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_imports_from_the_gateway() -> None:
    for path in AUDIT.glob("*.py"):
        roots = {name.split(".")[0] for name in imported_roots(path)}
        assert not roots & {"gateway", "policies", "schemas", "flask"}, path.name


def test_stdlib_only_modules() -> None:
    for path in AUDIT.glob("*.py"):
        names = imported_roots(path)
        roots = {n.split(".")[0] for n in names} - {"__future__"}
        third_party = roots - set(sys.stdlib_module_names) - {"audit"}
        if path.stem in STDLIB_ONLY:
            assert not third_party and not {n for n in names if n.startswith("audit")}, path
        if path.stem in VERIFIER_SIDE:
            assert third_party <= {"cryptography", "orjson"}, (
                path.name,
                third_party,
            )  # orjson: optional
            own = {n.split(".")[1] for n in names if n.startswith("audit.")}
            assert own <= VERIFIER_SIDE, (path.name, own)
