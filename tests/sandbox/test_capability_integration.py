"""The runner with real Biscuit tokens (`core.capability.StepAuthorizer`): grants decide
which host functions exist, token bounds decide each call."""

from __future__ import annotations

from qflow_node.codec import RAW
from qflow_node.core.capability import Grants, StepAuthorizer, issue, parse_token
from qflow_node.core.capability.testing import AUTHORITY, JAN_2026, JAN_2027
from qflow_node.sandbox import Authorizer, FailureKind, Sandbox
from qflow_node.sandbox.codes import DENIED, LIMIT_EXCEEDED
from qflow_node.sandbox.testing import OUT, Modules, command, host_import, shown


def authorizer(grants: Grants) -> Authorizer:
    token = parse_token(issue(AUTHORITY, grants, expires=JAN_2027), AUTHORITY.public_key)
    return StepAuthorizer.for_step(token, now=JAN_2026)


def show(name: str, *args: int) -> str:
    return f"(call $show (call ${name} {' '.join(f'(i32.const {a})' for a in args)}))"


def test_token_bounds_decide_each_call(sandbox: Sandbox, modules: Modules) -> None:
    grants = Grants.build(
        ["state.set", "block.put"], key_prefixes=["flow."], codecs=["raw"], max_bytes=8
    )
    body = (
        show("state_set", 1024, 6, 1100, 1)  # flow.a = 1
        + show("state_set", 1030, 7, 1100, 1)  # other.a: outside the key prefix
        + show("state_set", 1024, 6, 1110, 20)  # 20 bytes > max_bytes 8
        + show("block_put", RAW, 1100, 1, OUT, 4096)
        + show("block_put", 0x71, 1120, 1, OUT, 4096)  # dag-cbor not granted
    )
    data = {1024: b"flow.aother.a", 1100: b"1", 1110: b'"' + b"x" * 18 + b'"', 1120: b"\x01"}
    imports = [host_import("state_set"), host_import("block_put")]
    wasm = command(body, imports=imports, data=data)
    result = sandbox.run(modules.add(wasm), b"{}", authorizer=authorizer(grants))
    assert result.failure is None, result.failure
    codes = [item for item in shown(result.stderr) if isinstance(item, int)]
    assert codes == [0, DENIED, LIMIT_EXCEEDED, 59, DENIED]
    assert [d.operation for d in result.denials] == ["state.set", "state.set", "block.put"]
    assert result.state_delta is not None


def test_ungranted_import_is_refused(sandbox: Sandbox, modules: Modules) -> None:
    wasm = command(show("log", 1, 1024, 2), imports=[host_import("log")], data={1024: b"hi"})
    grants = Grants.build(["state.get"], key_prefixes=[""])
    result = sandbox.run(modules.add(wasm), b"{}", authorizer=authorizer(grants))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.CAPABILITY_DENIED


def test_trap_on_deny_from_the_token(sandbox: Sandbox, modules: Modules) -> None:
    grants = Grants.build(["state.get"], key_prefixes=["flow."], trap_on_deny=True)
    body = show("state_get", 1024, 5, OUT, 4096)
    wasm = command(body, imports=[host_import("state_get")], data={1024: b"other"})
    result = sandbox.run(modules.add(wasm), b"{}", authorizer=authorizer(grants))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.CAPABILITY_DENIED
    assert "(trap_on_deny)" in result.failure.message
