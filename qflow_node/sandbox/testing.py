"""Helpers for sandbox tests and benchmarks (like `trio.testing`; not used at run time).

`command(body)` builds a small WASI command module from WAT around a `_start` body, with
helper functions for observing what host calls return:

    $out (ptr len)       write memory[ptr:ptr+len] to stdout
    $err (ptr len)       ... to stderr
    $report (value)      write an i32 (little-endian) to stderr
    $show (n)            report n, then (if 0 < n <= 4096) write OUT[0:n] to stderr
    $read_input -> len   read all of stdin to INPUT (offset 4096), return its length
    $exit (code)         proc_exit

Memory: offsets 0-63 are the helpers' scratch, 1024-3071 are free for `data` segments,
3072 holds `output`, INPUT (4096) onwards the input, OUT (65536, 4 KiB) host results.
Unless `output=None`, `_start` ends by writing `output` ("{}" by default) to stdout.
`shown(stderr)` parses what `$show` wrote.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import wasmtime

from qflow_node.codec import CID, raw_block
from qflow_node.sandbox.authz import AuthArgs, AuthDecision
from qflow_node.store import BlockStore

INPUT: Final = 4096
OUT: Final = 65536
OUT_CAP: Final = 4096

_HELPERS: Final = """
  (func $out (param $ptr i32) (param $len i32)
    (drop (call $write (i32.const 1) (local.get $ptr) (local.get $len))))
  (func $err (param $ptr i32) (param $len i32)
    (drop (call $write (i32.const 2) (local.get $ptr) (local.get $len))))
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
  (func $report (param $v i32)
    (i32.store (i32.const 16) (local.get $v))
    (call $err (i32.const 16) (i32.const 4)))
  (func $read_input (result i32) (local $n i32)
    (block $done
      (loop $more
        (i32.store (i32.const 32) (i32.add (i32.const 4096) (local.get $n)))
        (i32.store (i32.const 36) (i32.const 65536))
        (br_if $done (call $fd_read (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 40)))
        (br_if $done (i32.eqz (i32.load (i32.const 40))))
        (local.set $n (i32.add (local.get $n) (i32.load (i32.const 40))))
        (br $more)))
    (local.get $n))
  (func $exit (param $code i32) (call $proc_exit (local.get $code)))
  (func $show (param $n i32)
    (call $report (local.get $n))
    (if (i32.and (i32.gt_s (local.get $n) (i32.const 0)) (i32.le_s (local.get $n) (i32.const 4096)))
      (then (call $err (i32.const 65536) (local.get $n)))))
"""

_WASI_IMPORTS: Final = """
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
"""

# Signatures of the qflow.* host functions, for `imports=`.
HOST_SIGNATURES: Final = {
    "log": "(param i32 i32 i32) (result i32)",
    "http_fetch": "(param i32 i32 i32 i32) (result i32)",
    "state_get": "(param i32 i32 i32 i32) (result i32)",
    "state_set": "(param i32 i32 i32 i32) (result i32)",
    "block_get": "(param i32 i32 i32 i32) (result i32)",
    "block_put": "(param i32 i32 i32 i32 i32) (result i32)",
    "result": "(param i32 i32) (result i32)",
}


def host_import(name: str) -> str:
    """The WAT import of `qflow.<name>` as `$<name>`."""
    return f'(import "qflow" "{name}" (func ${name} {HOST_SIGNATURES[name]}))'


def command(
    body: str,
    *,
    imports: Iterable[str] = (),
    data: Mapping[int, bytes] | None = None,
    funcs: str = "",
    pages: int = 2,
    max_pages: int | None = None,
    output: bytes | None = b"{}",
) -> bytes:
    """A WASI command module (binary) whose `_start` runs `body`."""
    segments = "\n".join(
        f'  (data (i32.const {offset}) "{_wat_bytes(value)}")'
        for offset, value in (data or {}).items()
    )
    limit = f" {max_pages}" if max_pages is not None else ""
    tail = ""
    if output is not None:
        segments += f'\n  (data (i32.const 3072) "{_wat_bytes(output)}")'
        tail = f"(call $out (i32.const 3072) (i32.const {len(output)}))"
    source = f"""(module
{_WASI_IMPORTS}
  {" ".join(imports)}
  (memory (export "memory") {pages}{limit})
{segments}
{_HELPERS}
{funcs}
  (func (export "_start") {body} {tail}))"""
    return bytes(wasmtime.wat2wasm(source))


def _wat_bytes(value: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in value)


def reports(stderr: bytes) -> list[int]:
    """The i32 values written by `$report`, in order (stderr holding nothing else)."""
    return list(struct.unpack(f"<{len(stderr) // 4}i", stderr))


def shown(stderr: bytes) -> list[int | bytes]:
    """What `$show` calls wrote: each return code, and after a positive one its result."""
    items: list[int | bytes] = []
    pos = 0
    while pos < len(stderr):
        (n,) = struct.unpack_from("<i", stderr, pos)
        pos += 4
        items.append(n)
        if 0 < n <= OUT_CAP:
            items.append(stderr[pos : pos + n])
            pos += n
    return items


def add_module(blocks: BlockStore, wasm: bytes) -> CID:
    block = raw_block(wasm)
    blocks.put(block)
    return block.cid


class Modules:
    """Adds modules to a block store and names them by CID."""

    def __init__(self, blocks: BlockStore) -> None:
        self.blocks = blocks

    def add(self, wasm: bytes) -> CID:
        return add_module(self.blocks, wasm)


@dataclass
class RuleAuthorizer:
    """An `Authorizer` from plain rules: operation -> {argument: allowed values or bound}.

    A str/int rule value must equal the argument; a tuple lists allowed values; for
    `bytes`/`response_bytes` an int rule is an upper bound; a rule on `key` or `url`
    ending in `*` is a prefix. Records every call it is asked about. `codes=False` gives
    decisions without a `code`, as an authorizer that only says yes or no would.
    """

    rules: dict[str, dict[str, object]]
    trap_on_deny: bool = False
    codes: bool = True
    calls: list[tuple[str, dict[str, str | int]]] = field(default_factory=list)

    def granted(self) -> frozenset[str]:
        return frozenset(self.rules)

    def authorize(self, operation: str, args: AuthArgs) -> AuthDecision | PlainDecision:
        self.calls.append((operation, dict(args)))
        rule = self.rules.get(operation)
        if rule is None:
            return AuthDecision(False, f"{operation} not granted", self.trap_on_deny)
        for name, allowed in rule.items():
            if name not in args:
                continue
            value = args[name]
            if name in ("bytes", "response_bytes") and isinstance(allowed, int):
                if isinstance(value, int) and value > allowed:
                    code = "limit_exceeded" if self.codes else None
                    return self._deny(f"{name} {value} > {allowed}", code)
            elif isinstance(allowed, str) and allowed.endswith("*"):
                if not str(value).startswith(allowed[:-1]):
                    return self._deny(f"{name} {value!r} outside {allowed}")
            elif isinstance(allowed, tuple):
                if value not in allowed:
                    return self._deny(f"{name} {value!r} not in {allowed}")
            elif value != allowed:
                return self._deny(f"{name} {value!r} != {allowed!r}")
        return AuthDecision(True)

    def _deny(self, reason: str, code: str | None = None) -> AuthDecision | PlainDecision:
        if not self.codes:
            return PlainDecision(False, reason, self.trap_on_deny)
        return AuthDecision(False, reason, self.trap_on_deny, code)


@dataclass(frozen=True, slots=True)
class PlainDecision:
    """A `Decision` with no `code`: only allowed or not."""

    allowed: bool
    reason: str
    trap: bool = False
