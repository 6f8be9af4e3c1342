"""Escape suite: files, env, args, sockets are out of reach; clocks and randomness are
stubbed deterministically; floats are canonical. WAT probes report raw WASI return
values on stderr; C guests (built with zig) check the same through wasi-libc."""

from __future__ import annotations

import hashlib
import json
import struct
import time

import pytest

from qflow_node.sandbox import FailureKind, Sandbox
from qflow_node.sandbox.testing import Modules, command, reports
from qflow_node.sandbox.wasi import REALTIME_NS, ZERO_SEED

EBADF = 8
EINVAL = 28


def wasi(name: str, signature: str) -> str:
    return f'(import "wasi_snapshot_preview1" "{name}" (func ${name} {signature}))'


def probe(sandbox: Sandbox, modules: Modules, body: str, *imports: str, seed: bytes = ZERO_SEED,
          data: dict[int, bytes] | None = None) -> bytes:  # fmt: skip
    result = sandbox.run(modules.add(command(body, imports=imports, data=data)), b"{}", seed=seed)
    assert result.failure is None, result.failure
    return result.stderr


def test_no_files_no_preopened_directories(sandbox: Sandbox, modules: Modules) -> None:
    body = """
      (call $report (call $fd_prestat_get (i32.const 3) (i32.const 2048)))
      (call $report (call $fd_prestat_get (i32.const 4) (i32.const 2048)))
      (call $report (call $path_open (i32.const 3) (i32.const 0) (i32.const 1024) (i32.const 11)
        (i32.const 0) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 2048)))
      (call $report (call $path_open (i32.const 0) (i32.const 0) (i32.const 1024) (i32.const 11)
        (i32.const 0) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 2048)))
      (call $report (call $fd_read (i32.const 3) (i32.const 32) (i32.const 1) (i32.const 40)))
      (call $report (call $fd_write (i32.const 3) (i32.const 0) (i32.const 1) (i32.const 8)))
    """
    err = probe(
        sandbox, modules, body,
        wasi("fd_prestat_get", "(param i32 i32) (result i32)"),
        wasi("path_open", "(param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)"),
        data={1024: b"/etc/passwd"},
    )  # fmt: skip
    codes = reports(err)
    assert codes[:3] == [EBADF, EBADF, EBADF]
    assert codes[3] != 0  # stdin is no directory to open files in
    assert codes[4:] == [EBADF, EBADF]


def test_no_environment_no_arguments(sandbox: Sandbox, modules: Modules) -> None:
    body = """
      (call $report (call $environ_sizes_get (i32.const 2048) (i32.const 2052)))
      (call $report (i32.load (i32.const 2048)))
      (call $report (i32.load (i32.const 2052)))
      (call $report (call $args_sizes_get (i32.const 2048) (i32.const 2052)))
      (call $report (i32.load (i32.const 2048)))
      (call $report (i32.load (i32.const 2052)))
    """
    err = probe(
        sandbox, modules, body,
        wasi("environ_sizes_get", "(param i32 i32) (result i32)"),
        wasi("args_sizes_get", "(param i32 i32) (result i32)"),
    )  # fmt: skip
    assert reports(err) == [0, 0, 0, 0, 0, 0]


def test_no_sockets(sandbox: Sandbox, modules: Modules) -> None:
    body = """
      (call $report (call $sock_accept (i32.const 3) (i32.const 0) (i32.const 2048)))
      (call $report (call $sock_send (i32.const 3) (i32.const 0) (i32.const 1) (i32.const 0)
        (i32.const 2048)))
      (call $report (call $sock_shutdown (i32.const 3) (i32.const 2)))
    """
    err = probe(
        sandbox, modules, body,
        wasi("sock_accept", "(param i32 i32 i32) (result i32)"),
        wasi("sock_send", "(param i32 i32 i32 i32 i32) (result i32)"),
        wasi("sock_shutdown", "(param i32 i32) (result i32)"),
    )  # fmt: skip
    assert reports(err) == [EBADF, EBADF, EBADF]


def test_opening_sockets_is_not_even_linkable(sandbox: Sandbox, modules: Modules) -> None:
    # Preview 1 cannot create sockets; a module importing a made-up sock_open is refused.
    wasm = command("", imports=[wasi("sock_open", "(param i32 i32 i32) (result i32)")])
    result = sandbox.run(modules.add(wasm), b"{}")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_MODULE
    assert "cannot be linked" in result.failure.message


def test_clocks_are_fixed(sandbox: Sandbox, modules: Modules) -> None:
    body = """
      (call $report (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 2048)))
      (call $err (i32.const 2048) (i32.const 8))
      (call $report (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 2048)))
      (call $err (i32.const 2048) (i32.const 8))
      (call $report (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 2048)))
      (call $err (i32.const 2048) (i32.const 8))
      (call $report (call $clock_time_get (i32.const 2) (i64.const 1) (i32.const 2048)))
      (call $err (i32.const 2048) (i32.const 8))
      (call $report (call $clock_time_get (i32.const 9) (i64.const 1) (i32.const 2048)))
      (call $report (call $clock_res_get (i32.const 0) (i32.const 2048)))
      (call $err (i32.const 2048) (i32.const 8))
      (call $report (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 70000)))
    """
    err = probe(
        sandbox, modules, body,
        wasi("clock_time_get", "(param i32 i64 i32) (result i32)"),
        wasi("clock_res_get", "(param i32 i32) (result i32)"),
    )  # fmt: skip
    fields = struct.unpack("<iqiqiqiqiiqi", err)
    assert fields == (0, REALTIME_NS, 0, 0, 0, 0, 0, 0, EINVAL, 0, 1, 0)
    assert REALTIME_NS == 946_684_800 * 10**9  # 2000-01-01T00:00:00Z


def test_a_wasi_call_that_cannot_decode_its_arguments_traps(
    sandbox: Sandbox, modules: Modules
) -> None:
    body = """(drop (call $path_open (i32.const 3) (i32.const 0) (i32.const 1024) (i32.const 11)
      (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 2048)))"""
    imp = wasi("path_open", "(param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)")
    result = sandbox.run(modules.add(command(body, imports=[imp])), b"{}")
    assert result.failure is not None
    assert (result.failure.kind, result.failure.message) == (
        FailureKind.TRAP,
        "the step trapped: In func wasi_snapshot_preview1::path_open at convert Rights: Int "
        "conversion error: TryFromIntError(NegOverflow)",
    )


def test_clock_write_outside_memory_is_a_fault(sandbox: Sandbox, modules: Modules) -> None:
    body = "(call $report (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 131070)))"
    err = probe(sandbox, modules, body, wasi("clock_time_get", "(param i32 i64 i32) (result i32)"))
    assert reports(err) == [21]  # EFAULT


def test_random_is_seeded_shake256(sandbox: Sandbox, modules: Modules) -> None:
    body = """
      (call $report (call $random_get (i32.const 2048) (i32.const 16)))
      (call $err (i32.const 2048) (i32.const 16))
      (call $report (call $random_get (i32.const 2048) (i32.const 5)))
      (call $err (i32.const 2048) (i32.const 5))
      (call $report (call $random_get (i32.const 131000) (i32.const 1000)))
    """
    imp = wasi("random_get", "(param i32 i32) (result i32)")
    seed = bytes(range(32))
    err = probe(sandbox, modules, body, imp, seed=seed)
    first = hashlib.shake_256(seed + struct.pack("<Q", 0)).digest(16)
    second = hashlib.shake_256(seed + struct.pack("<Q", 1)).digest(5)
    assert err == b"\0\0\0\0" + first + b"\0\0\0\0" + second + struct.pack("<i", 21)
    assert probe(sandbox, modules, body, imp, seed=seed) == err
    assert probe(sandbox, modules, body, imp, seed=ZERO_SEED) != err


def test_sleeping_returns_at_once(sandbox: Sandbox, modules: Modules) -> None:
    # poll_oneoff with one 1-hour relative clock subscription (userdata 7).
    subscription = struct.pack("<QB7xIxxxxQQH6x", 7, 0, 1, 3600 * 10**9, 1, 0)
    assert len(subscription) == 48
    body = """
      (call $report (call $poll_oneoff (i32.const 1024) (i32.const 2048) (i32.const 1)
        (i32.const 2100)))
      (call $err (i32.const 2048) (i32.const 16))
      (call $report (i32.load (i32.const 2100)))
      (call $report (call $poll_oneoff (i32.const 1024) (i32.const 2048) (i32.const 0)
        (i32.const 2100)))
    """
    started = time.monotonic()
    err = probe(
        sandbox, modules, body,
        wasi("poll_oneoff", "(param i32 i32 i32 i32) (result i32)"),
        data={1024: subscription},
    )  # fmt: skip
    assert time.monotonic() - started < 2
    assert err == struct.pack("<iQHBxxxxxii", 0, 7, 0, 0, 1, EINVAL)


def test_nan_is_canonical(sandbox: Sandbox, modules: Modules) -> None:
    # 0/0 gives a NaN whose sign and payload differ between CPUs; canonicalised, it is
    # the one quiet NaN 0x7ff8000000000000 (0x7fc00000 in f32) everywhere.
    body = """
      (f64.store (i32.const 2048) (f64.div (f64.load (i32.const 1024)) (f64.load (i32.const 1024))))
      (f32.store (i32.const 2056)
        (f32.sqrt (f32.neg (f32.const 1))))
      (call $err (i32.const 2048) (i32.const 12))
    """
    err = probe(sandbox, modules, body, data={1024: bytes(8)})
    assert err == struct.pack("<QI", 0x7FF8000000000000, 0x7FC00000)


@pytest.mark.slow
def test_c_guest_cannot_escape(
    sandbox: Sandbox, modules: Modules, c_guests: dict[str, bytes]
) -> None:
    result = sandbox.run(modules.add(c_guests["escape"]), b"{}")
    assert result.failure is None, result.failure
    report = result.output_value()
    entropy = report.pop("entropy")
    rand = report.pop("rand")
    assert report == {
        "read": 44,  # ENOENT: no preopened directory to resolve the path in
        "write": 44,
        "opendir": 44,
        "stat": 44,
        "argc": 0,
        "env": 0,
        "home": None,
        "realtime": 946684800,
        "realtime_ns": 0,
        "mono1": 0,
        "mono2": 0,
        "slept": 0,
        "time": 946684800,
        "entropy_rc": 0,
    }
    assert len(entropy) == 16
    again = sandbox.run(modules.add(c_guests["escape"]), b"{}")
    assert json.loads(again.output or b"") == {**report, "entropy": entropy, "rand": rand}
    other = sandbox.run(modules.add(c_guests["escape"]), b"{}", seed=b"\x01" * 32)
    assert other.output_value()["entropy"] != entropy


@pytest.mark.slow
def test_c_memory_bomb_hits_the_memory_limit(
    sandbox: Sandbox, modules: Modules, c_guests: dict[str, bytes]
) -> None:
    from qflow_node.sandbox import Limits

    limits = Limits(memory=16 << 20)
    result = sandbox.run(modules.add(c_guests["membomb"]), b"{}", limits=limits)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.MEMORY_LIMIT
    assert result.failure.exit_code == 3
    assert result.failure.message.startswith("the step ran out of memory: it grew to ")
    assert result.failure.message.endswith(
        " of its 16 MiB limit, so an allocation was most likely refused, and it then exited "
        "with code 3; raise `memory` if it really needs more (this subnet allows up to 1 GiB)"
    )
    assert result.stderr.startswith(b"membomb: malloc failed after ")
