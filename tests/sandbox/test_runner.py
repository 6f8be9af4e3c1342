"""The runner's contract: input on stdin, one JSON value on stdout, exit code 0; every
other ending a typed failure with a message a flow author understands."""

from __future__ import annotations

import json

import pytest
import wasmtime

from qflow_node.sandbox import FailureKind, Limits, Sandbox
from qflow_node.sandbox.testing import INPUT, Modules, command
from qflow_node.store import MemoryBlockStore

ECHO = command(f"(call $out (i32.const {INPUT}) (call $read_input))", output=None, pages=4)


def printing(text: bytes, *, exit_code: int = 0) -> bytes:
    """A module that writes `text` to stdout, then exits with `exit_code`."""
    body = f"(call $out (i32.const 1024) (i32.const {len(text)}))"
    if exit_code:
        body += f" (call $exit (i32.const {exit_code}))"
    return command(body, data={1024: text}, output=None)


def test_echo_returns_the_input_bytes_and_usage(sandbox: Sandbox, modules: Modules) -> None:
    cid = modules.add(ECHO)
    payload = b'{"user": {"first": "Ada"}, "tags": ["a", "b"], "n": 1.5}'
    result = sandbox.run(cid, payload)
    assert result.failure is None
    assert result.ok
    assert result.output == payload
    assert result.output_value() == json.loads(payload)
    assert result.module == cid
    assert result.usage.fuel > 0
    assert result.usage.memory == 4 * 65536
    assert 0 < result.usage.wall_time < 5
    assert result.usage.output_bytes == len(payload)
    assert result.stderr == b""
    assert result.state_delta is None


def test_large_input_is_read_completely(sandbox: Sandbox, modules: Modules) -> None:
    cid = modules.add(ECHO)
    payload = json.dumps({"xs": list(range(20000))}).encode()  # > 64 KiB: several reads
    result = sandbox.run(cid, payload, limits=Limits(output=1 << 20))
    assert result.output == payload


def test_exit_code_is_a_failure_quoting_stderr(sandbox: Sandbox, modules: Modules) -> None:
    said = b"first line\nbad \x1b[31minput\n\n"
    body = f"(call $err (i32.const 1024) (i32.const {len(said)})) (call $exit (i32.const 3))"
    cid = modules.add(command(body, data={1024: said}, output=None))
    result = sandbox.run(cid, b"{}")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.EXIT_CODE
    assert result.failure.exit_code == 3
    # The last non-empty line, with control characters made visible.
    message = "the step exited with code 3; stderr: bad \\x1b[31minput"
    assert result.failure.message == message
    assert str(result.failure) == f"exit_code: {message}"
    assert result.output is None
    assert result.stderr == said


def test_exit_zero_through_proc_exit_is_success(sandbox: Sandbox, modules: Modules) -> None:
    result = sandbox.run(modules.add(printing(b"[1, 2]\n", exit_code=0)), b"{}")
    assert result.failure is None
    assert result.output == b"[1, 2]\n"


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        (b"", "the step wrote nothing to stdout; a step must write exactly one JSON value"),
        (b" \n", "the step wrote nothing to stdout; a step must write exactly one JSON value"),
        (b'{"a": 1', "stdout is not one JSON value: Expecting ',' delimiter at line 1 column 8"),
        (b'{"a": 1} {"b": 2}', "stdout is not one JSON value: Extra data at line 1 column 10"),
        (b"NaN", "stdout is not one JSON value: NaN is not JSON"),
        (b'"\xff"', "stdout is not UTF-8 (invalid byte at offset 1)"),
        (b"\xef\xbb\xbf{}", "stdout is not one JSON value: Unexpected UTF-8 BOM (decode using "
         "utf-8-sig) at line 1 column 1"),
        (b"[" * 100_000, "stdout is not one JSON value: nested deeper than 512 levels"),
        (b"[" * 513 + b"]" * 513, "stdout is not one JSON value: nested deeper than 512 levels"),
    ],
)  # fmt: skip
def test_invalid_output(sandbox: Sandbox, modules: Modules, stdout: bytes, message: str) -> None:
    result = sandbox.run(modules.add(printing(stdout)), b"{}")
    assert result.failure is not None
    assert (result.failure.kind, result.failure.message) == (FailureKind.INVALID_OUTPUT, message)
    assert result.output is None


def test_trap_names_what_happened(sandbox: Sandbox, modules: Modules) -> None:
    unreachable = modules.add(command("unreachable"))
    result = sandbox.run(unreachable, b"{}")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TRAP
    assert result.failure.message == (
        "the step trapped: wasm `unreachable` executed (how abort(), a failed assert or a "
        "Rust panic ends a wasm program)"
    )
    divide = modules.add(command("(drop (i32.div_u (i32.const 1) (i32.load (i32.const 2000))))"))
    result = sandbox.run(divide, b"{}")
    assert result.failure is not None
    assert (result.failure.kind, result.failure.message) == (
        FailureKind.TRAP,
        "the step trapped: integer division by zero",
    )
    oob = modules.add(command("(drop (i32.load (i32.const 200000)))"))
    result = sandbox.run(oob, b"{}")
    assert result.failure is not None
    assert result.failure.message == "the step trapped: out-of-bounds memory access"


@pytest.mark.parametrize(
    ("wasm", "why"),
    [
        (b"\x00asm\x01\x00\x00\x00garbage", "it does not compile: "),
        (
            wasmtime.wat2wasm(
                '(module (memory (export "memory") 1) (func (export "_initialize")))'
            ),
            "it is not a WASI command module: no exported _start function (it looks like a "
            "WASI reactor/library)",
        ),
        (
            wasmtime.wat2wasm('(module (func (export "_start")))'),
            "it does not export its memory as `memory`",
        ),
        (
            wasmtime.wat2wasm(
                '(module (import "env" "f" (func)) (memory (export "memory") 1)'
                ' (func (export "_start")))'
            ),
            "it imports env.f: steps may import only wasi_snapshot_preview1 (WASI preview 1) "
            "and qflow host functions",
        ),
        (
            wasmtime.wat2wasm(
                '(module (import "qflow" "exec" (func)) (memory (export "memory") 1)'
                ' (func (export "_start")))'
            ),
            "it imports qflow.exec, which is not a Qflow host function (known: block_get, "
            "block_put, http_fetch, log, result, state_get, state_set)",
        ),
        (
            wasmtime.wat2wasm(
                '(module (import "wasi_snapshot_preview1" "sock_open" (func (param i32))) '
                '(memory (export "memory") 1) (func (export "_start")))'
            ),
            "its imports cannot be linked: ",
        ),
        (
            wasmtime.wat2wasm(
                '(module (import "qflow" "result" (func (param i64))) '
                '(memory (export "memory") 1) (func (export "_start")))'
            ),
            "its imports cannot be linked: ",
        ),
        (
            wasmtime.wat2wasm(
                '(module (import "env" "memory" (memory 1)) (func (export "_start")))'
            ),
            "it imports env.memory, which is not a function; steps import only functions",
        ),
    ],
)
def test_invalid_modules_are_refused(
    sandbox: Sandbox, modules: Modules, wasm: bytes, why: str
) -> None:
    cid = modules.add(wasm)
    result = sandbox.run(cid, b"{}")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_MODULE
    assert result.failure.message.startswith(f"module {cid.encode()} is not a step: {why}")
    assert result.usage.fuel == 0


def test_missing_module_is_not_cached(sandbox: Sandbox, blocks: MemoryBlockStore) -> None:
    from qflow_node.codec import raw_block

    block = raw_block(ECHO)
    result = sandbox.run(block.cid, b"{}")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.MODULE_NOT_FOUND
    assert result.failure.message == f"module {block.cid.encode()} is not in the block store"
    blocks.put(block)  # the block arrives later (e.g. over bitswap)
    assert sandbox.run(block.cid, b"[]").output == b"[]"


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (Limits(fuel=0), "fuel must be positive, got 0"),
        (Limits(memory=1000), "memory of 1000 B is below the minimum of 64 KiB"),
        (Limits(memory=2 << 30), "memory of 2 GiB is above this subnet's maximum of 1 GiB"),
        (Limits(timeout=float("nan")), "timeout must be a number of seconds, got nan"),
        (Limits(timeout=120), "timeout of 120 s is above this subnet's maximum of 60 s"),
        (Limits(output=2 << 20), "output of 2 MiB is above this subnet's maximum of 1 MiB"),
        (Limits(fuel=1.5), "fuel must be an integer, got 1.5"),  # type: ignore[arg-type]
        (Limits(tables=0), "tables must be positive, got 0"),
    ],
)
def test_limits_outside_the_policy_are_refused(
    sandbox: Sandbox, modules: Modules, limits: Limits, message: str
) -> None:
    result = sandbox.run(modules.add(ECHO), b"{}", limits=limits)
    assert result.failure is not None
    assert (result.failure.kind, result.failure.message) == (FailureKind.INVALID_LIMITS, message)


def test_each_step_gets_a_fresh_instance(sandbox: Sandbox, modules: Modules) -> None:
    # A global and a memory cell both count runs; a reused instance would show 2, 3, …
    body = """
      (global.set $runs (i32.add (global.get $runs) (i32.const 1)))
      (i32.store (i32.const 2000) (i32.add (i32.load (i32.const 2000)) (i32.const 1)))
      (call $report (global.get $runs))
      (call $report (i32.load (i32.const 2000)))
    """
    cid = modules.add(command(body, funcs="(global $runs (mut i32) (i32.const 0))"))
    for _ in range(3):
        result = sandbox.run(cid, b"{}")
        assert result.stderr == b"\x01\x00\x00\x00\x01\x00\x00\x00"


def test_run_needs_a_started_sandbox(blocks: MemoryBlockStore) -> None:
    sandbox = Sandbox(blocks)
    with pytest.raises(RuntimeError, match="needs a started sandbox"):
        sandbox.run(Modules(blocks).add(ECHO), b"{}")
    with sandbox:
        assert sandbox.run(Modules(blocks).add(ECHO), b"1").output == b"1"
    with pytest.raises(RuntimeError, match="needs a started sandbox"):
        sandbox.run(Modules(blocks).add(ECHO), b"{}")


def test_stderr_is_captured_up_to_its_cap(sandbox: Sandbox, modules: Modules) -> None:
    # 100 writes of 1 KiB: stderr keeps the first 64 KiB and the step still succeeds.
    body = """(local $i i32)
      (loop $l
        (call $err (i32.const 8192) (i32.const 1024))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))"""
    result = sandbox.run(modules.add(command(body)), b"{}")
    assert result.failure is None
    assert len(result.stderr) == 64 * 1024
