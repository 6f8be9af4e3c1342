"""Host functions: present only when granted, authorized per call with their actual
arguments, denials answered with a code (or a stop) and recorded."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest

from qflow_node.codec import DAG_CBOR, RAW, cid_for, encode_dag
from qflow_node.sandbox import (
    AuthArgs,
    AuthDecision,
    Denial,
    FailureKind,
    LogEntry,
    Sandbox,
    StepState,
)
from qflow_node.sandbox.codes import (
    DENIED,
    INVALID_ARGUMENT,
    LIMIT_EXCEEDED,
    NO_PENDING_RESULT,
    NOT_FOUND,
)
from qflow_node.sandbox.testing import (
    OUT,
    Modules,
    RuleAuthorizer,
    command,
    host_import,
    reports,
    shown,
)
from qflow_node.store import MemoryBlockStore

KEY, VALUE, TEXT = 1024, 1536, 2048  # data segment offsets
CAP = 4096


def call(name: str, *args: int) -> str:
    return f"(call ${name} {' '.join(f'(i32.const {a})' for a in args)})"


def show(name: str, *args: int) -> str:
    return f"(call $show {call(name, *args)})"


def step(
    sandbox: Sandbox,
    modules: Modules,
    body: str,
    imports: tuple[str, ...],
    data: dict[int, bytes],
    **run: Any,
) -> Any:
    wasm = command(body, imports=[host_import(name) for name in imports], data=data)
    return sandbox.run(modules.add(wasm), b"{}", **run)


# -- presence -----------------------------------------------------------------------------


def test_without_a_token_no_host_function_exists(sandbox: Sandbox, modules: Modules) -> None:
    result = step(sandbox, modules, show("log", 1, TEXT, 2), ("log",), {TEXT: b"hi"})
    assert result.failure is not None
    assert (result.failure.kind, result.failure.message) == (
        FailureKind.CAPABILITY_DENIED,
        "the module imports qflow.log (operation log), which needs a capability token, and "
        "the step has none; a module may import only the host functions its token grants",
    )
    assert result.usage.fuel == 0  # refused before it ran


def test_imports_beyond_the_grant_are_named(sandbox: Sandbox, modules: Modules) -> None:
    token = RuleAuthorizer({"state.get": {}})
    body = show("state_get", KEY, 1, OUT, CAP) + show("log", 1, TEXT, 2)
    result = step(sandbox, modules, body, ("state_get", "log", "block_put"), {}, authorizer=token)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.CAPABILITY_DENIED
    assert result.failure.message.startswith(
        "the module imports qflow.log (operation log), qflow.block_put (operation block.put), "
        "which the step's capability token does not grant"
    )
    assert token.calls == []


def test_result_exists_without_a_token(sandbox: Sandbox, modules: Modules) -> None:
    result = step(sandbox, modules, show("result", OUT, CAP), ("result",), {})
    assert result.failure is None
    assert shown(result.stderr) == [NO_PENDING_RESULT]


# -- log ----------------------------------------------------------------------------------


def test_log_is_authorized_with_its_level(sandbox: Sandbox, modules: Modules) -> None:
    token = RuleAuthorizer({"log": {"level": (1, 2, 3), "bytes": 100}})
    body = (
        show("log", 1, TEXT, 5)  # info "hello"
        + show("log", 0, TEXT, 5)  # debug: denied by the token
        + show("log", 9, TEXT, 5)  # no such level
        + show("log", 3, TEXT, 200)  # over the token's 100 bytes
        + show("log", 2, 200_000, 5)  # outside memory
    )
    result = step(sandbox, modules, body, ("log",), {TEXT: b"hello" + b"x" * 200}, authorizer=token)
    assert result.failure is None
    assert shown(result.stderr) == [0, DENIED, INVALID_ARGUMENT, LIMIT_EXCEEDED, INVALID_ARGUMENT]
    assert result.logs == (LogEntry(1, "hello"),)
    assert result.usage.host_calls == 5
    assert result.denied_calls == 2
    assert result.denials == (
        Denial("log", "level 0 not in (1, 2, 3)", {"level": 0, "bytes": 5}),
        Denial("log", "bytes 200 > 100", {"level": 3, "bytes": 200}),
    )
    assert token.calls == [
        ("log", {"level": 1, "bytes": 5}),
        ("log", {"level": 0, "bytes": 5}),
        ("log", {"level": 3, "bytes": 200}),
    ]


# -- state --------------------------------------------------------------------------------

STATE_TOKEN: dict[str, dict[str, object]] = {
    "state.get": {"key": "flow.*"},
    "state.set": {"key": "flow.*", "bytes": 64},
}


def test_state_set_get_and_delta(sandbox: Sandbox, modules: Modules) -> None:
    data = {KEY: b"flow.countflow.nopeother.key", VALUE: b'{"n": 1}' + b"7" * 100 + b"{"}
    body = (
        show("state_set", KEY, 10, VALUE, 8)  # flow.count = {"n": 1}
        + show("state_get", KEY, 10, OUT, CAP)
        + show("state_get", KEY + 10, 9, OUT, CAP)  # flow.nope: not found
        + show("state_set", KEY + 19, 9, VALUE, 8)  # other.key: outside the prefix
        + show("state_get", KEY + 19, 9, OUT, CAP)
        + show("state_set", KEY, 10, VALUE + 8, 100)  # 100 bytes > 64
        + show("state_set", KEY, 10, VALUE + 108, 1)  # "{" is not JSON
        + show("state_set", KEY, 10, VALUE + 8, 3)  # flow.count = 777
    )
    token = RuleAuthorizer(STATE_TOKEN)
    result = step(sandbox, modules, body, ("state_get", "state_set"), data, authorizer=token)
    assert result.failure is None
    assert shown(result.stderr) == [
        0, 8, b'{"n": 1}', NOT_FOUND, DENIED, DENIED, LIMIT_EXCEEDED, INVALID_ARGUMENT, 0,
    ]  # fmt: skip
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    assert result.state_delta is not None
    doc.apply_update(result.state_delta)
    assert dict(doc.get("vars", type=pycrdt.Map)) == {"flow.count": "777"}


def test_state_starts_from_the_execution_document(sandbox: Sandbox, modules: Modules) -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.get("vars", type=pycrdt.Map)["flow.x"] = "[1, 2]"
    seed = bytes(32)
    body = show("state_get", KEY, 6, OUT, CAP) + show("state_set", KEY, 6, VALUE, 4)
    data = {KEY: b"flow.x", VALUE: b"true"}
    result = step(
        sandbox, modules, body, ("state_get", "state_set"), data,
        authorizer=RuleAuthorizer(STATE_TOKEN), state=StepState.of(doc, seed=seed), seed=seed,
    )  # fmt: skip
    assert shown(result.stderr) == [6, b"[1, 2]", 0]
    assert dict(doc.get("vars", type=pycrdt.Map)) == {"flow.x": "[1, 2]"}  # untouched
    assert result.state_delta is not None
    doc.apply_update(result.state_delta)
    assert dict(doc.get("vars", type=pycrdt.Map)) == {"flow.x": "true"}


def test_a_failed_step_leaves_no_state_delta(sandbox: Sandbox, modules: Modules) -> None:
    body = show("state_set", KEY, 6, VALUE, 4) + "(call $exit (i32.const 1))"
    data = {KEY: b"flow.x", VALUE: b"true"}
    token = RuleAuthorizer(STATE_TOKEN)
    result = step(sandbox, modules, body, ("state_set",), data, authorizer=token)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.EXIT_CODE
    assert shown(result.stderr) == [0]
    assert result.state_delta is None


def test_byte_bounds_without_denial_codes(sandbox: Sandbox, modules: Modules) -> None:
    # An authorizer that only says yes/no: the runner asks again with a zero size.
    token = RuleAuthorizer(STATE_TOKEN, codes=False)
    body = show("state_set", KEY, 6, VALUE, 100) + show("state_set", KEY + 6, 5, VALUE, 100)
    data = {KEY: b"flow.xother", VALUE: b"1" * 100}
    result = step(sandbox, modules, body, ("state_set",), data, authorizer=token)
    assert shown(result.stderr) == [LIMIT_EXCEEDED, DENIED]


def test_a_large_result_stays_pending_until_the_next_call(
    sandbox: Sandbox, modules: Modules
) -> None:
    value = b'"' + b"v" * 98 + b'"'
    report = "(call $report {})".format
    body = "".join(
        [
            report(call("state_set", KEY, 6, VALUE, 100)),
            report(call("state_get", KEY, 6, OUT, 10)),  # too small: pending, nothing written
            report(call("result", OUT, 10)),  # still too small
            report(call("result", OUT, 100)),  # copied
            f"(call $err (i32.const {OUT}) (i32.const 100))",
            report(call("result", OUT, 100)),  # consumed
            report(call("state_get", KEY, 6, OUT, 10)),
            report(call("state_set", KEY, 6, VALUE, 100)),  # another host call discards it
            report(call("result", OUT, 100)),
        ]
    )
    token = RuleAuthorizer(STATE_TOKEN | {"state.set": {"key": "flow.*"}})
    data = {KEY: b"flow.v", VALUE: value}
    result = step(sandbox, modules, body, ("state_get", "state_set", "result"), data,
                  authorizer=token)  # fmt: skip
    head, copied, tail = result.stderr[:16], result.stderr[16:116], result.stderr[116:]
    assert reports(head) == [0, 100, 100, 100]
    assert copied == value
    assert reports(tail) == [NO_PENDING_RESULT, 100, 0, NO_PENDING_RESULT]


# -- blocks -------------------------------------------------------------------------------


def test_block_put_and_get(sandbox: Sandbox, modules: Modules, blocks: MemoryBlockStore) -> None:
    cid = cid_for(b"hello", RAW)
    canonical = encode_dag({"a": 1, "b": [1, 2]})
    unsorted = b"\xa2\x61b\x01\x61a\x02"  # {"b": 1, "a": 2}: keys out of order
    missing = cid_for(b"not stored", RAW).encode().encode()
    data = {
        KEY: b"hello",
        VALUE: cid.encode().encode() + missing + b"bafynotacid",
        TEXT: canonical + unsorted,
    }
    n = len(canonical)
    body = (
        show("block_put", RAW, KEY, 5, OUT, CAP)
        + show("block_get", VALUE, len(missing), OUT, CAP)
        + show("block_get", VALUE + len(missing), len(missing), OUT, CAP)
        + show("block_get", VALUE + 2 * len(missing), 11, OUT, CAP)
        + show("block_put", DAG_CBOR, TEXT, n, OUT, CAP)
        + show("block_put", DAG_CBOR, TEXT + n, len(unsorted), OUT, CAP)
        + show("block_put", 0x70, KEY, 5, OUT, CAP)  # dag-pb: not a Qflow codec
        + show("block_put", RAW, KEY, 1500, OUT, CAP)  # over the token's 1000 bytes
    )
    token = RuleAuthorizer(
        {"block.put": {"codec": ("raw", "dag-cbor"), "bytes": 1000}, "block.get": {}}
    )
    result = step(sandbox, modules, body, ("block_put", "block_get"), data, authorizer=token)
    assert result.failure is None
    dag_cid = cid_for(canonical, DAG_CBOR).encode().encode()
    assert shown(result.stderr) == [
        len(missing), cid.encode().encode(),
        5, b"hello",
        NOT_FOUND,
        INVALID_ARGUMENT,
        len(dag_cid), dag_cid,
        INVALID_ARGUMENT,
        INVALID_ARGUMENT,
        LIMIT_EXCEEDED,
    ]  # fmt: skip
    assert blocks.get(cid) == b"hello"
    assert ("block.put", {"codec": "raw", "bytes": 5}) in token.calls
    assert ("block.put", {"codec": "dag-cbor", "bytes": n}) in token.calls


def test_block_codec_outside_the_token_is_denied(sandbox: Sandbox, modules: Modules) -> None:
    token = RuleAuthorizer({"block.put": {"codec": "raw"}})
    body = show("block_put", DAG_CBOR, KEY, 1, OUT, CAP)
    result = step(sandbox, modules, body, ("block_put",), {KEY: b"\x01"}, authorizer=token)
    assert shown(result.stderr) == [DENIED]
    assert result.denials == (
        Denial("block.put", "codec 'dag-cbor' != 'raw'", {"codec": "dag-cbor", "bytes": 1}),
    )


def test_pointers_outside_memory_are_invalid(sandbox: Sandbox, modules: Modules) -> None:
    body = (
        show("state_get", 131_000, 1000, OUT, CAP)  # key runs past the end of memory
        + show("state_get", -1, 4, OUT, CAP)  # 0xffffffff
        + show("state_set", KEY, 6, VALUE, 4)
        + show("state_get", KEY, 6, 131_070, 100)  # result fits the cap, not the memory
    )
    token = RuleAuthorizer(STATE_TOKEN)
    data = {KEY: b"flow.x", VALUE: b"1234"}
    result = step(sandbox, modules, body, ("state_get", "state_set"), data, authorizer=token)
    assert shown(result.stderr) == [INVALID_ARGUMENT, INVALID_ARGUMENT, 0, INVALID_ARGUMENT]


# -- denials ------------------------------------------------------------------------------


def test_trap_on_deny_stops_the_step(sandbox: Sandbox, modules: Modules) -> None:
    token = RuleAuthorizer({"state.get": {"key": "a.*"}}, trap_on_deny=True)
    body = show("state_get", KEY, 3, OUT, CAP) + "(loop $forever (br $forever))"
    result = step(sandbox, modules, body, ("state_get",), {KEY: b"b.x"}, authorizer=token)
    assert result.failure is not None
    assert (result.failure.kind, result.failure.message) == (
        FailureKind.CAPABILITY_DENIED,
        "state.get was denied and the capability token says to stop the step "
        "(trap_on_deny): key 'b.x' outside a.*",
    )
    assert result.stderr == b""  # stopped: it could not even report the code
    assert result.denied_calls == 1
    assert result.usage.fuel < 10_000  # it never reached its endless loop's fuel


def test_a_failing_authorizer_denies(sandbox: Sandbox, modules: Modules) -> None:
    class Broken:
        def granted(self) -> frozenset[str]:
            return frozenset({"state.get"})

        def authorize(self, operation: str, args: AuthArgs) -> AuthDecision:
            raise RuntimeError("boom")

    result = step(sandbox, modules, show("state_get", KEY, 1, OUT, CAP), ("state_get",),
                  {KEY: b"k"}, authorizer=Broken())  # fmt: skip
    assert result.failure is None
    assert shown(result.stderr) == [DENIED]
    assert result.denials == (
        Denial("state.get", "authorizer error: RuntimeError: boom", {"key": "k"}),
    )


def test_denials_are_counted_and_the_first_kept(sandbox: Sandbox, modules: Modules) -> None:
    body = """(local $i i32)
      (loop $again
        (drop (call $log (i32.const 0) (i32.const 2048) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $again (i32.lt_u (local.get $i) (i32.const 100))))"""
    token = RuleAuthorizer({"log": {"level": 3}})
    result = step(sandbox, modules, body, ("log",), {TEXT: b"x"}, authorizer=token)
    assert result.failure is None
    assert result.denied_calls == 100
    assert len(result.denials) == 16


@pytest.mark.parametrize("operation", ["log", "state.set"])
def test_granted_set_decides_presence(sandbox: Sandbox, modules: Modules, operation: str) -> None:
    # Granting one operation does not make another's function exist.
    token = RuleAuthorizer({operation: {}})
    result = step(sandbox, modules, show("block_get", KEY, 1, OUT, CAP), ("block_get",),
                  {KEY: b"b"}, authorizer=token)  # fmt: skip
    assert result.failure is not None
    assert result.failure.kind is FailureKind.CAPABILITY_DENIED
