"""Every limit stops a misbehaving step with its own failure kind, and the node goes on."""

from __future__ import annotations

import time

import pytest
import wasmtime

from qflow_node.sandbox import FailureKind, Limits, Sandbox, SubnetPolicy
from qflow_node.sandbox.testing import Modules, command
from qflow_node.store import MemoryBlockStore

LOOP = command("(loop $forever (br $forever))", output=None)
# memory.grow by 16 pages (1 MiB) until refused, then abort (as a C program would).
GROW_BOMB = command(
    """(block $refused
         (loop $more
           (br_if $refused (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
           (br $more)))
       unreachable""",
    output=None,
)
RECURSE = command("(drop (call $deeper (i32.const 0)))", funcs="""
  (func $deeper (param $n i32) (result i32)
    (i32.add (call $deeper (i32.add (local.get $n) (i32.const 1))) (i32.const 1)))""")  # fmt: skip
FLOOD = command(
    "(loop $more (drop (call $write (i32.const 1) (i32.const 8192) (i32.const 65536))) (br $more))",
    output=None,
)
ECHO_OK = command("")  # writes {}


def assert_node_alive(sandbox: Sandbox, modules: Modules) -> None:
    assert sandbox.run(modules.add(ECHO_OK), b"{}").output == b"{}"


def test_infinite_loop_runs_out_of_fuel(sandbox: Sandbox, modules: Modules) -> None:
    result = sandbox.run(modules.add(LOOP), b"{}", limits=Limits(fuel=5_000_000))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.OUT_OF_FUEL
    assert result.failure.message == (
        "the step used all of its 5,000,000 fuel (its CPU budget) without finishing: an "
        "endless loop, or raise `fuel` (this subnet allows up to 50,000,000,000)"
    )
    assert result.usage.fuel == 5_000_000
    assert result.output is None
    assert_node_alive(sandbox, modules)


def test_infinite_loop_with_huge_fuel_times_out(sandbox: Sandbox, modules: Modules) -> None:
    started = time.monotonic()
    result = sandbox.run(modules.add(LOOP), b"{}", limits=Limits(fuel=50_000_000_000, timeout=0.2))
    elapsed = time.monotonic() - started
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TIMEOUT
    assert result.failure.message == (
        "the step ran longer than its 200 ms wall-clock limit and was stopped"
    )
    assert 0.2 <= result.usage.wall_time < 2.0
    assert elapsed < 2.0
    # wasmtime keeps the fuel counter in a register inside a call-free loop and does not
    # write it back when the epoch interrupts: after a timeout fuel is a lower bound.
    assert 0 <= result.usage.fuel < 50_000_000_000
    assert_node_alive(sandbox, modules)


def test_memory_bomb_hits_the_memory_limit(sandbox: Sandbox, modules: Modules) -> None:
    result = sandbox.run(modules.add(GROW_BOMB), b"{}", limits=Limits(memory=16 << 20))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.MEMORY_LIMIT
    assert result.usage.memory <= 16 << 20
    assert result.usage.memory > 15 << 20
    assert result.failure.message == (
        "the step ran out of memory: it grew to 15.1 MiB of its 16 MiB limit, so an "
        "allocation was most likely refused, and it then trapped (wasm `unreachable` "
        "executed (how abort(), a failed assert or a Rust panic ends a wasm program)); raise "
        "`memory` if it really needs more (this subnet allows up to 1 GiB)"
    )
    assert_node_alive(sandbox, modules)


def test_far_from_the_limit_an_exit_stays_an_exit(sandbox: Sandbox, modules: Modules) -> None:
    # Grows 1 MiB once, then exits 3: a refused grow is only inferred near the limit.
    body = "(drop (memory.grow (i32.const 16))) (call $exit (i32.const 3))"
    result = sandbox.run(modules.add(command(body)), b"{}", limits=Limits(memory=64 << 20))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.EXIT_CODE
    assert result.usage.memory == (2 << 16) + (1 << 20)


def test_initial_memory_above_the_limit_is_refused_before_running(
    sandbox: Sandbox, modules: Modules
) -> None:
    big = modules.add(command("", pages=300))  # 18.75 MiB at start
    result = sandbox.run(big, b"{}", limits=Limits(memory=16 << 20))
    assert result.failure is not None
    assert (result.failure.kind, result.failure.message) == (
        FailureKind.MEMORY_LIMIT,
        "the module starts with 18.8 MiB of memory, above the step's memory limit of 16 MiB",
    )
    assert result.usage.fuel == 0
    assert sandbox.run(big, b"{}", limits=Limits(memory=32 << 20)).output == b"{}"


def test_tables_are_limited(sandbox: Sandbox, modules: Modules) -> None:
    cid = modules.add(command("", funcs="(table 100000 funcref)"))
    result = sandbox.run(cid, b"{}", limits=Limits(table_elements=10_000))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.MEMORY_LIMIT
    assert result.failure.message == (
        "the module cannot be instantiated within the step's limits (memory 64 MiB, 4 tables "
        "of at most 10,000 elements): table minimum size of 100000 elements exceeds table "
        "limits"
    )
    assert sandbox.run(cid, b"{}", limits=Limits(table_elements=100_000)).output == b"{}"


def test_stack_recursion_traps_with_stack_overflow(sandbox: Sandbox, modules: Modules) -> None:
    result = sandbox.run(modules.add(RECURSE), b"{}")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TRAP
    assert result.failure.message == (
        "stack overflow: the step's calls nested deeper than the 512 KiB wasm stack allows "
        "(unbounded recursion?)"
    )
    assert_node_alive(sandbox, modules)


def test_the_stack_size_is_the_subnets(blocks: MemoryBlockStore) -> None:
    modules = Modules(blocks)
    # Depth 2000 of a small frame fits in 512 KiB but not in 64 KiB.
    body = "(drop (call $down (i32.const 2000)))"
    funcs = """(func $down (param $n i32) (result i32)
      (if (result i32) (i32.eqz (local.get $n)) (then (i32.const 0))
        (else (i32.add (call $down (i32.sub (local.get $n) (i32.const 1))) (i32.const 1)))))"""
    cid = modules.add(command(body, funcs=funcs))
    with Sandbox(blocks) as roomy:
        assert roomy.run(cid, b"{}").ok
    with Sandbox(blocks, policy=SubnetPolicy(max_wasm_stack=64 * 1024)) as tight:
        result = tight.run(cid, b"{}")
    assert result.failure is not None
    assert result.failure.message.startswith("stack overflow: ")
    assert "64 KiB wasm stack" in result.failure.message


def test_output_flood_is_stopped_at_the_cap(sandbox: Sandbox, modules: Modules) -> None:
    result = sandbox.run(modules.add(FLOOD), b"{}", limits=Limits(output=200_000))
    assert result.failure is not None
    assert (result.failure.kind, result.failure.message) == (
        FailureKind.OUTPUT_TOO_LARGE,
        "the step wrote more than its 195.3 KiB output limit to stdout",
    )
    # Stopped at the first write over the cap, not when its fuel ran out.
    assert result.usage.output_bytes == 3 * 65536
    assert result.usage.fuel < 1_000_000
    assert result.output is None
    assert_node_alive(sandbox, modules)


@pytest.mark.parametrize(("size", "ok"), [(1000, True), (1001, False)])
def test_output_cap_is_exact(sandbox: Sandbox, modules: Modules, size: int, ok: bool) -> None:
    text = b'"' + b"x" * (size - 2) + b'"'
    cid = modules.add(command(f"(call $out (i32.const 8192) (i32.const {size}))",
                              data={8192: text}, output=None))  # fmt: skip
    result = sandbox.run(cid, b"{}", limits=Limits(output=1000))
    assert result.ok is ok
    if not ok:
        assert result.failure is not None
        assert result.failure.kind is FailureKind.OUTPUT_TOO_LARGE


def test_overlapping_iovecs_cannot_inflate_output(sandbox: Sandbox, modules: Modules) -> None:
    # 1000 iovecs all pointing at the same 60 KiB: 60 MB "written" from 60 KiB of memory.
    body = """(local $i i32)
      (loop $fill
        (i32.store (i32.add (i32.const 16384) (i32.mul (local.get $i) (i32.const 8)))
                   (i32.const 65536))
        (i32.store (i32.add (i32.const 16388) (i32.mul (local.get $i) (i32.const 8)))
                   (i32.const 61440))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $fill (i32.lt_u (local.get $i) (i32.const 1000))))
      (call $report
        (call $fd_write (i32.const 1) (i32.const 16384) (i32.const 1000) (i32.const 64)))"""
    result = sandbox.run(modules.add(command(body, output=None)), b"{}")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.OUTPUT_TOO_LARGE
    assert result.stderr == b""  # stopped before it could report
    assert result.usage.output_bytes == 0


def test_limits_default_from_the_policy(blocks: MemoryBlockStore) -> None:
    policy = SubnetPolicy(defaults=Limits(fuel=1_000_000))
    with Sandbox(blocks, policy=policy) as sandbox:
        result = sandbox.run(Modules(blocks).add(LOOP), b"{}")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.OUT_OF_FUEL
    assert result.usage.fuel == 1_000_000


def test_policy_defaults_must_fit_its_maxima() -> None:
    with pytest.raises(ValueError, match="fuel of 2,000 is above this subnet's maximum of 1,000"):
        SubnetPolicy(defaults=Limits(fuel=2000), maxima=Limits(fuel=1000))


def test_wasmtime_module_is_what_the_tests_think(blocks: MemoryBlockStore) -> None:
    # Guard for the fixtures above: the bomb really grows in 1 MiB steps.
    module = wasmtime.Module(wasmtime.Engine(), GROW_BOMB)
    assert [e.name for e in module.exports] == ["memory", "_start"]
