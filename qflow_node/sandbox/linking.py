"""What a compiled module needs, and the linkers that provide it.

A step module may import only WASI preview-1 functions and `qflow.*` host functions,
and must be a WASI command (export `_start` and `memory`). `analyze` works out which
operations its imports need, so a step whose token does not grant them is refused
before it runs. Linkers are built once per set of operations and shared by every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import wasmtime

from qflow_node.sandbox import authz
from qflow_node.sandbox.hostfns import define_host
from qflow_node.sandbox.limits import WASM_PAGE
from qflow_node.sandbox.wasi import WASI, define_wasi

MAX_EXPORTS: Final = 1000  # every step enumerates the instance's exports once


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    operations: frozenset[str]  # operations the module's qflow imports need
    host_imports: tuple[str, ...]  # the qflow.* names it imports, for messages
    initial_memory: int  # bytes the module's memory starts with


def analyze(module: wasmtime.Module) -> ModuleInfo | str:
    """The module's needs, or why it is not a step module."""
    operations: set[str] = set()
    host_imports: list[str] = []
    for imp in module.imports:
        where = f"{imp.module}.{imp.name}"
        if not isinstance(imp.type, wasmtime.FuncType):
            return f"it imports {where}, which is not a function; steps import only functions"
        if imp.module == WASI:
            continue  # unknown WASI names are refused when linking
        if imp.module != authz.HOST_MODULE:
            return (
                f"it imports {where}: steps may import only {WASI} (WASI preview 1) and "
                f"{authz.HOST_MODULE} host functions"
            )
        if imp.name is None or imp.name not in authz.HOST_IMPORTS:
            known = ", ".join(sorted(authz.HOST_IMPORTS))
            return f"it imports {where}, which is not a Qflow host function (known: {known})"
        operation = authz.HOST_IMPORTS[imp.name]
        if operation is not None:
            operations.add(operation)
        host_imports.append(where)
    exports = {exp.name: exp.type for exp in module.exports}
    if len(exports) > MAX_EXPORTS:
        return f"it has {len(exports)} exports; a step module may have at most {MAX_EXPORTS}"
    start, memory = exports.get("_start"), exports.get("memory")
    if not isinstance(start, wasmtime.FuncType):
        reactor = " (it looks like a WASI reactor/library)" if "_initialize" in exports else ""
        return f"it is not a WASI command module: no exported _start function{reactor}"
    if start.params or start.results:
        return "its _start function must take no arguments and return nothing"
    if not isinstance(memory, wasmtime.MemoryType):
        return "it does not export its memory as `memory`"
    if memory.is_64 or memory.is_shared:
        return "its memory must be a plain 32-bit, unshared memory"
    return ModuleInfo(frozenset(operations), tuple(host_imports), memory.limits.min * WASM_PAGE)


def build_linker(engine: wasmtime.Engine, operations: frozenset[str]) -> wasmtime.Linker:
    linker = wasmtime.Linker(engine)
    define_wasi(linker)
    define_host(linker, operations)
    return linker
