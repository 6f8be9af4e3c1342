"""The dependency rules of docs/adr/0001-layout-and-dependency-rules.md, enforced.

Each part of `qflow_node` may import only the parts listed for it; `core` and `crypto`
must stay pure (no I/O, clock, randomness or concurrency); `sentinel` stands alone so other
projects can run it in their CI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "qflow_node"

# part -> the qflow_node parts it may import (itself always allowed).
ALLOWED: dict[str, set[str]] = {
    "core": {"codec", "identity.keys", "crypto"},
    "codec": set(),
    "identity": {"codec", "fsio", "repo", "log"},
    "store": {"codec", "appendlog", "fsio", "offload", "repo", "log"},
    "crypto": {"codec"},
    "net": {"codec", "identity", "store", "log"},
    "sandbox": {"codec", "core", "store", "fsio", "repo", "log"},
    "flow_loader": {"core", "codec", "store", "fsio", "repo", "log"},
    "ledger_store": {
        "core",
        "codec",
        "identity",
        "store",
        "appendlog",
        "clock",
        "fsio",
        "repo",
        "log",
    },
    "runtime": {"*"},
    "api": {"*"},
    "cli": {"*"},
    "sim": {"*"},  # the simulator drives the real node; nothing may import it
    "appendlog": {"fsio"},
    "fsio": set(),
    "clock": set(),
    "offload": set(),
    "log": set(),
    "repo": set(),
    "__init__": set(),
}

# Parts that must stay pure, and the modules they must never touch: I/O, time,
# randomness, concurrency, network.
PURE = {"core", "crypto"}
IMPURE = {
    "trio", "anyio", "asyncio", "socket", "select", "selectors", "ssl", "time", "random",
    "secrets", "uuid", "datetime", "os", "pathlib", "io", "shutil", "tempfile", "threading",
    "multiprocessing", "subprocess", "signal", "libp2p", "wasmtime", "httpx", "structlog",
    "logging", "sys",
}  # fmt: skip


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: use absolute imports")
            if node.module:
                found.append((node.lineno, node.module))
    return found


def part_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def qflow_part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "qflow_node":
        return None
    return ".".join(parts[1:3]) if len(parts) > 1 else "__init__"


def allowed(source_part: str, target: str) -> bool:
    rules = ALLOWED[source_part]
    top = target.split(".", maxsplit=1)[0]
    return "*" in rules or top == source_part or target in rules or top in rules


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_dependency_rules(path: Path) -> None:
    part = part_of(path)
    assert part in ALLOWED, f"{part!r} is a new part of qflow_node: add it to ALLOWED and the ADR"
    for line, module in imported_modules(path):
        target = qflow_part(module)
        if target is not None:
            assert allowed(part, target), f"{path}:{line}: {part} may not import {module}"
        if part in PURE:
            assert module.split(".")[0] not in IMPURE, f"{path}:{line}: {part} is pure; {module}"


def test_nothing_in_the_node_imports_the_simulator() -> None:
    for path in SOURCES:
        if part_of(path) == "sim":
            continue
        for line, module in imported_modules(path):
            assert not module.startswith("qflow_node.sim"), f"{path}:{line}: imports {module}"


def test_sentinel_stands_alone() -> None:
    for path in sorted((ROOT / "sentinel").rglob("*.py")):
        for line, module in imported_modules(path):
            assert not module.startswith("qflow_node"), f"{path}:{line}: sentinel imports {module}"


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom qflow_node.store import x\n", encoding="utf-8")
    modules = imported_modules(bad)
    assert modules == [(1, "time"), (2, "qflow_node.store")]
    assert not allowed("core", "store")
    assert "time" in IMPURE
    assert allowed("core", "identity.keys") and not allowed("core", "identity.store")
