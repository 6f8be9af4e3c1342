"""Flow files on disk → compiled flows (the I/O around the pure `qflow_node.core.flow`).

Reads a flow file, resolves `run: ./path.wasm` by reading the module (relative to the
flow file's folder) into a raw block, resolves sub-flows from a block store when one is
given, compiles, and — with a store — puts the modules and the compiled flow into it.
Nothing is stored unless the whole flow compiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from qflow_node.codec import CID, MAX_BLOCK_SIZE, Block, CodecError, decode_block, raw_block
from qflow_node.core.flow import (
    MAX_SOURCE_BYTES,
    CompiledFlow,
    FlowCompileError,
    FlowError,
    FlowResolver,
    ResolveError,
    Syntax,
    compile_flow,
)
from qflow_node.store import BlockNotFoundError, BlockStore, StoreError

WASM_MAGIC: Final = b"\0asm"


class FlowFileError(OSError):
    """The flow file itself cannot be read (missing, a directory, no permission)."""


@dataclass(frozen=True, slots=True)
class LoadedFlow:
    path: Path
    compiled: CompiledFlow
    modules: dict[str, Block] = field(default_factory=dict)  # `run:` path as written → block

    @property
    def cid(self) -> CID:
        return self.compiled.cid

    def blocks(self) -> list[Block]:
        """What a store needs to run this flow: its modules, then the compiled flow."""
        return [*self.modules.values(), self.compiled.block]


def syntax_for(path: Path) -> Syntax:
    suffix = path.suffix.lower()
    return "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else "auto"


def read_flow_text(path: Path) -> str:
    """The file's text; FlowFileError if unreadable, FlowCompileError if too big or not UTF-8."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_SOURCE_BYTES + 1)
    except OSError as exc:
        raise FlowFileError(exc.errno, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise FlowCompileError([FlowError(1, 1, "", f"flow file is over {MAX_SOURCE_BYTES} bytes")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = (
            len(data[data.rfind(b"\n", 0, exc.start) + 1 : exc.start].decode("utf-8", "replace"))
            + 1
        )
        raise FlowCompileError(
            [FlowError(line, column, "", "the file is not UTF-8 text")]
        ) from None


def load_flow(
    path: Path,
    *,
    store: BlockStore | None = None,
    resolve_flow: FlowResolver | None = None,
    syntax: Syntax | None = None,
) -> LoadedFlow:
    """Read and compile the flow at `path`; FlowFileError, FlowCompileError.

    With `store`, sub-flows are looked up in it (unless `resolve_flow` is given) and the
    modules and the compiled flow are put into it. Without either, sub-flow references
    are checked for form only.
    """
    text = read_flow_text(path)
    modules = ModuleFiles(path.parent)
    if resolve_flow is None and store is not None:
        resolve_flow = StoreFlows(store)
    compiled = compile_flow(
        text,
        syntax=syntax or syntax_for(path),
        resolve_module=modules,
        resolve_flow=resolve_flow,
    )
    loaded = LoadedFlow(path, compiled, dict(modules.used))
    if store is not None:
        store.put_many(loaded.blocks())
    return loaded


class ModuleFiles:
    """A module resolver: `run:` paths relative to `base` (the flow file's folder), read
    into raw blocks; `used` keeps them for storing once the flow compiles."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.used: dict[str, Block] = {}

    def __call__(self, written: str) -> CID:
        file = self.base / written
        try:
            with file.open("rb") as fh:
                data = fh.read(MAX_BLOCK_SIZE + 1)
        except FileNotFoundError:
            raise ResolveError(f"module file not found: {written} ({file})") from None
        except OSError as exc:
            raise ResolveError(
                f"cannot read module {written} ({file}): {exc.strerror or exc}"
            ) from None
        if len(data) > MAX_BLOCK_SIZE:
            raise ResolveError(
                f"module {written} is over {MAX_BLOCK_SIZE} bytes, the largest block"
            )
        if not data.startswith(WASM_MAGIC):
            raise ResolveError(f"{written} is not a WebAssembly module (no \\0asm header)")
        block = raw_block(data)
        self.used[written] = block
        return block.cid


class StoreFlows:
    """A sub-flow resolver over a block store (whose reads are verified by hash)."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store

    def __call__(self, cid: CID) -> Any:
        try:
            data = self.store.get(cid)
        except BlockNotFoundError:
            raise ResolveError(
                "not in the block store (compile the sub-flow into this repo first)"
            ) from None
        except StoreError as exc:
            raise ResolveError(f"cannot read {cid.encode()} from the block store: {exc}") from None
        try:
            return decode_block(cid, data)
        except CodecError as exc:
            raise ResolveError(f"{cid.encode()} is not a valid block: {exc}") from None
