"""The same module, input and seed give the same output bytes, run after run."""

from __future__ import annotations

import pytest

from qflow_node.codec import CID
from qflow_node.sandbox import Sandbox, derive_seed
from qflow_node.sandbox.testing import INPUT, Modules, RuleAuthorizer, command, host_import

# Output: the input, then 32 random bytes, the realtime clock and 0/0, all hex-free JSON
# numbers would need formatting in WAT; stdout is checked as bytes via stderr instead.
NOISY = command(
    f"""(local $n i32)
    (local.set $n (call $read_input))
    (drop (call $random_get (i32.const 2048) (i32.const 32)))
    (drop (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 2080)))
    (f64.store (i32.const 2088) (f64.div (f64.const 0) (f64.const 0)))
    (drop (call $state_set (i32.const 1024) (i32.const 1) (i32.const {INPUT}) (local.get $n)))
    (call $err (i32.const 2048) (i32.const 48))
    (call $out (i32.const {INPUT}) (local.get $n))""",
    imports=[
        '(import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) '
        "(result i32)))",
        '(import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get '
        "(param i32 i64 i32) (result i32)))",
        host_import("state_set"),
    ],
    data={1024: b"k"},
    output=None,
)
RUNS = 200


def test_same_inputs_same_bytes(sandbox: Sandbox, modules: Modules) -> None:
    cid = modules.add(NOISY)
    seed = derive_seed(cid, "step-1", 0)
    token = RuleAuthorizer({"state.set": {}})
    first = sandbox.run(cid, b'{"a": [1, 2.5, "x"]}', seed=seed, authorizer=token)
    assert first.ok
    for _ in range(RUNS):
        again = sandbox.run(cid, b'{"a": [1, 2.5, "x"]}', seed=seed, authorizer=token)
        assert (again.output, again.stderr, again.state_delta, again.usage.fuel) == (
            first.output, first.stderr, first.state_delta, first.usage.fuel,
        )  # fmt: skip
    other = sandbox.run(cid, b'{"a": [1, 2.5, "x"]}', seed=derive_seed(cid, "step-1", 1),
                        authorizer=token)  # fmt: skip
    assert other.stderr[:32] != first.stderr[:32]
    assert other.stderr[32:] == first.stderr[32:]


def test_derive_seed_names_the_attempt() -> None:
    a = CID(bytes([1, 0x71, 0x12, 32]) + bytes(32))
    assert derive_seed(a, "s", 0) == derive_seed(a, "s", 0)
    assert len({derive_seed(a, "s", 0), derive_seed(a, "s", 1), derive_seed(a, "t", 0)}) == 3


@pytest.mark.slow
def test_c_step_is_deterministic(
    sandbox: Sandbox, modules: Modules, c_guests: dict[str, bytes]
) -> None:
    cid = modules.add(c_guests["compute"])
    seed = derive_seed(cid, "compute", 0)
    outputs = {sandbox.run(cid, b'{"values": [1, 2, 3]}', seed=seed).output for _ in range(50)}
    assert len(outputs) == 1
    (output,) = outputs
    assert output is not None
    assert output.startswith(b'{"input_bytes": 21, "checksum": ')
