"""The WASI preview-1 functions Qflow replaces, so a step is sealed and deterministic.

wasmtime's WASI is configured with nothing (no args, env, preopened dirs or sockets); on
top of it these are shadowed:

* `fd_read` on stdin serves the step's input bytes (no temp file per step);
* `fd_write` on stdout/stderr captures output with a cap. This also keeps every write on
  the step's own thread: wasmtime's `stdout_custom` calls back from tokio worker threads,
  which can abort the process when Python exits;
* `clock_time_get` / `clock_res_get`: realtime is fixed at 2000-01-01T00:00:00Z, the
  monotonic and CPU clocks read 0 and never advance;
* `random_get`: call k (k = 0, 1, …) of a step fills its buffer with the first `len`
  bytes of SHAKE256(seed ‖ k as u64 little-endian);
* `poll_oneoff` returns at once (clock subscriptions fire immediately: time does not
  pass), so a step can never block its thread by sleeping.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

import wasmtime

from qflow_node.codec import CID
from qflow_node.sandbox.context import StepContext, guarded
from qflow_node.sandbox.failures import FailureKind, StepFailure
from qflow_node.sandbox.limits import format_bytes

WASI: Final = "wasi_snapshot_preview1"
ZERO_SEED: Final = bytes(32)
REALTIME_NS: Final = 946_684_800 * 1_000_000_000  # 2000-01-01T00:00:00Z

# WASI errno values.
SUCCESS: Final = 0
EBADF: Final = 8
EFAULT: Final = 21
EFBIG: Final = 22
EINVAL: Final = 28
EIO: Final = 29

_CLOCKS: Final = {0: REALTIME_NS, 1: 0, 2: 0, 3: 0}  # realtime, monotonic, process, thread
_SUBSCRIPTION: Final = 48  # bytes per subscription / event record (WASI p1 layout)
_EVENT: Final = 32
_MAX_SUBSCRIPTIONS: Final = 4096


def derive_seed(exec_id: CID, step: str, attempt: int) -> bytes:
    """The PRNG seed of one attempt of one step of one execution: the same on every node."""
    material = b"qflow-step-seed-v1\0%s%s\0%d" % (exec_id.cid_bytes, step.encode(), attempt)
    return hashlib.sha256(material).digest()


def fd_read(ctx: StepContext, fd: int, iovs: int, iovs_len: int, nread: int) -> int:
    if fd != 0:
        return EBADF
    mem = ctx.guest()
    pairs = mem.iovecs(iovs, iovs_len)
    if pairs is None:
        return EFAULT
    data, pos, total = ctx.input, ctx.input_pos, 0
    for offset, length in pairs:
        chunk = data[pos : pos + length]
        if not chunk:
            break
        mem.write(offset, chunk)
        pos += len(chunk)
        total += len(chunk)
    if not mem.write_u32(nread, total):
        return EFAULT
    ctx.input_pos = pos
    return SUCCESS


def fd_write(ctx: StepContext, fd: int, iovs: int, iovs_len: int, nwritten: int) -> int:
    if fd not in (1, 2):
        return EBADF
    if ctx.stopped:
        return EIO
    mem = ctx.guest()
    pairs = mem.iovecs(iovs, iovs_len)
    if pairs is None:
        return EFAULT
    # Lengths are summed before anything is copied: iovecs may overlap, so their total
    # can be far larger than the guest's memory.
    total = sum(length for _, length in pairs)
    if fd == 1:
        if ctx.out_size + total > ctx.output_cap:
            ctx.stop(
                StepFailure(
                    FailureKind.OUTPUT_TOO_LARGE,
                    f"the step wrote more than its {format_bytes(ctx.output_cap)} output "
                    "limit to stdout",
                )
            )
            return EFBIG
        ctx.out.append(mem.gather(pairs))
        ctx.out_size += total
    else:
        room = ctx.stderr_cap - len(ctx.err)
        if room > 0:  # beyond the cap stderr is dropped, not failed: it is diagnostics
            ctx.err += mem.gather(_clip(pairs, room))
    if not mem.write_u32(nwritten, total):
        return EFAULT
    return SUCCESS


def _clip(pairs: list[tuple[int, int]], room: int) -> list[tuple[int, int]]:
    clipped = []
    for offset, length in pairs:
        if room <= 0:
            break
        clipped.append((offset, min(length, room)))
        room -= length
    return clipped


def clock_time_get(ctx: StepContext, clock: int, _precision: int, out: int) -> int:
    value = _CLOCKS.get(clock)
    if value is None:
        return EINVAL
    return SUCCESS if ctx.guest().write_u64(out, value) else EFAULT


def clock_res_get(ctx: StepContext, clock: int, out: int) -> int:
    if clock not in _CLOCKS:
        return EINVAL
    return SUCCESS if ctx.guest().write_u64(out, 1) else EFAULT


def random_get(ctx: StepContext, buf: int, length: int) -> int:
    length &= 0xFFFFFFFF
    mem = ctx.guest()
    if (buf & 0xFFFFFFFF) + length > mem.size:
        return EFAULT
    counter = struct.pack("<Q", ctx.random_calls)
    ctx.random_calls += 1
    mem.write(buf, hashlib.shake_256(ctx.seed + counter).digest(length))
    return SUCCESS


def poll_oneoff(ctx: StepContext, subs: int, events: int, count: int, nevents: int) -> int:
    count &= 0xFFFFFFFF
    if count == 0 or count > _MAX_SUBSCRIPTIONS:
        return EINVAL
    mem = ctx.guest()
    raw = mem.read(subs, _SUBSCRIPTION * count)
    if raw is None:
        return EFAULT
    out = bytearray(_EVENT * count)
    for i in range(count):
        userdata, tag = struct.unpack_from("<QB", raw, i * _SUBSCRIPTION)
        fd = struct.unpack_from("<I", raw, i * _SUBSCRIPTION + 16)[0]
        error, nbytes = SUCCESS, 0
        if tag == 1:  # fd_read: only stdin can be read
            error, nbytes = (SUCCESS, len(ctx.input) - ctx.input_pos) if fd == 0 else (EBADF, 0)
        elif tag == 2:  # fd_write: only stdout and stderr can be written
            error = SUCCESS if fd in (1, 2) else EBADF
        elif tag != 0:
            error = EINVAL
        struct.pack_into("<QHBxxxxxQ", out, i * _EVENT, userdata, error, tag, nbytes)
    if not mem.write(events, bytes(out)) or not mem.write_u32(nevents, count):
        return EFAULT
    return SUCCESS


def define_wasi(linker: wasmtime.Linker) -> None:
    """wasmtime's WASI with Qflow's replacements on top."""
    i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
    linker.define_wasi()
    linker.allow_shadowing = True
    shadows = (
        ("fd_read", fd_read, [i32, i32, i32, i32]),
        ("fd_write", fd_write, [i32, i32, i32, i32]),
        ("clock_time_get", clock_time_get, [i32, i64, i32]),
        ("clock_res_get", clock_res_get, [i32, i32]),
        ("random_get", random_get, [i32, i32]),
        ("poll_oneoff", poll_oneoff, [i32, i32, i32, i32]),
    )
    for name, fn, params in shadows:
        linker.define_func(WASI, name, wasmtime.FuncType(params, [i32]), guarded(fn, EIO))
    linker.allow_shadowing = False
