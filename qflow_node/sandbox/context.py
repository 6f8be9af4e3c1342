"""The state of one running step, as the host functions see it.

Linkers and `InstancePre`s are shared by every step of a sandbox, so host functions are
defined once and find their step through a thread-local: a step runs entirely on the
thread that called `Sandbox.run`, and wasmtime calls host functions on that thread.

Host functions never raise into wasmtime. wasmtime-py passes a Python exception from a
host function to the caller through one process-wide slot, which concurrent steps would
race on; so a step is stopped instead by `stop()` (its fuel drops to zero and it traps at
its next fuel check) and the outcome is kept here.

Guest pointers are untrusted i32 offsets: every access is bounds-checked against the
memory's current size, re-read on each call because `memory.grow` may move it.
"""

from __future__ import annotations

import ctypes
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import wasmtime

from qflow_node.sandbox.authz import AuthArgs, Authorizer
from qflow_node.sandbox.failures import StepFailure
from qflow_node.sandbox.result import Denial, LogEntry
from qflow_node.store import BlockStore

if TYPE_CHECKING:
    from qflow_node.sandbox.state import StepState

U32: Final = 0xFFFFFFFF
MAX_IOVECS: Final = 1024  # IOV_MAX of wasi-libc
STDERR_CAP: Final = 64 * 1024
KEPT_DENIALS: Final = 16  # denials kept on the result and logged one by one

_local = threading.local()


def current() -> StepContext:
    ctx: StepContext = _local.ctx
    return ctx


class StepContext:
    def __init__(
        self,
        *,
        store: wasmtime.Store,
        input_json: bytes,
        output_cap: int,
        seed: bytes,
        deadline: float,
        timeout: str,
        authorizer: Authorizer | None,
        blocks: BlockStore,
        state: Callable[[], StepState],
        http_client: Callable[[], Any],
        logger: Any,
        module_name: str,
    ) -> None:
        self.store = store
        self.memory: wasmtime.Memory | None = None  # set once the instance exists
        self.input = input_json
        self.input_pos = 0
        self.out: list[bytes] = []
        self.out_size = 0
        self.output_cap = output_cap
        self.err = bytearray()
        self.stderr_cap = STDERR_CAP
        self.seed = seed
        self.random_calls = 0
        self.deadline = deadline  # time.monotonic() value
        self.timeout = timeout  # the limit as text, for the failure message
        self.authorizer = authorizer
        self.blocks = blocks
        self.state = state
        self.http_client = http_client
        self._logger = logger
        self._module_name = module_name
        self._log: Any = None
        self.pending: bytes | None = None
        self.host_calls = 0
        self.denials: list[Denial] = []
        self.denied_calls = 0
        self.logs: list[LogEntry] = []
        self.failure: StepFailure | None = None  # why the host stopped the step
        self.crash: BaseException | None = None  # a bug in a host function
        self.fuel_at_stop: int | None = None

    @property
    def log(self) -> Any:
        """The step's logger, bound on first use: most steps never log anything."""
        if self._log is None:
            self._log = self._logger.bind(module=self._module_name)
        return self._log

    # -- binding to the running thread ---------------------------------------------------

    def __enter__(self) -> StepContext:
        _local.ctx = self
        return self

    def __exit__(self, *exc: object) -> None:
        _local.ctx = None

    # -- stopping the step -----------------------------------------------------------------

    def stop(self, failure: StepFailure) -> None:
        """End the step with `failure`: it traps at its next fuel check."""
        if self.failure is None:
            self.failure = failure
            self.fuel_at_stop = self.store.get_fuel()
        self.store.set_fuel(0)

    def crashed(self, exc: BaseException) -> None:
        self.crash = exc
        self.fuel_at_stop = self.store.get_fuel()
        self.store.set_fuel(0)

    @property
    def stopped(self) -> bool:
        return self.failure is not None or self.crash is not None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    # -- guest memory ----------------------------------------------------------------------

    def guest(self) -> Guest:
        """The guest's memory for the duration of one host call (it cannot grow meanwhile)."""
        memory = self.memory
        if memory is None:
            return _NO_MEMORY
        size = memory.data_len(self.store)
        if size == 0:
            return _NO_MEMORY
        return Guest(ctypes.addressof(memory.data_ptr(self.store).contents), size)

    # -- what the step did ---------------------------------------------------------------

    def record_denial(self, operation: str, args: AuthArgs, reason: str) -> None:
        self.denied_calls += 1
        if len(self.denials) < KEPT_DENIALS:
            shown = {k: _short(v) for k, v in args.items()}
            self.denials.append(Denial(operation, reason, shown))
            self.log.warning("host call denied", operation=operation, reason=reason, **shown)

    def output(self) -> bytes:
        return b"".join(self.out)


class Guest:
    """Bounds-checked access to guest memory at host address `base`, `size` bytes long."""

    __slots__ = ("base", "size")

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.size = size

    def read(self, ptr: int, length: int) -> bytes | None:
        """`length` bytes at guest offset `ptr`, or None if that is outside the memory."""
        ptr &= U32
        length &= U32
        if ptr + length > self.size:
            return None
        return ctypes.string_at(self.base + ptr, length) if length else b""

    def write(self, ptr: int, data: bytes) -> bool:
        ptr &= U32
        if ptr + len(data) > self.size:
            return False
        if data:
            ctypes.memmove(self.base + ptr, data, len(data))
        return True

    def write_u32(self, ptr: int, value: int) -> bool:
        return self.write(ptr, struct.pack("<I", value & U32))

    def write_u64(self, ptr: int, value: int) -> bool:
        return self.write(ptr, struct.pack("<Q", value))

    def iovecs(self, ptr: int, count: int) -> list[tuple[int, int]] | None:
        """The (offset, length) buffers of a WASI iovec array, each inside memory; or None."""
        count &= U32
        if count > MAX_IOVECS:
            return None
        raw = self.read(ptr, 8 * count)
        if raw is None:
            return None
        flat = struct.unpack(f"<{2 * count}I", raw)
        pairs = list(zip(flat[::2], flat[1::2], strict=True))
        for offset, length in pairs:
            if offset + length > self.size:
                return None
        return pairs

    def gather(self, pairs: list[tuple[int, int]]) -> bytes:
        return b"".join(ctypes.string_at(self.base + off, n) for off, n in pairs if n)


_NO_MEMORY: Final = Guest(0, 0)


def _short(value: str | int) -> str | int:
    if isinstance(value, str) and len(value) > 200:
        return f"{value[:160]}… ({len(value)} chars)"
    return value


def guarded(fn: Callable[..., int], on_crash: int) -> Callable[..., int]:
    """`fn(ctx, *args)` as a host function that never raises into wasmtime."""

    def host(*args: int) -> int:
        ctx = current()
        try:
            return fn(ctx, *args)
        except Exception as exc:  # a bug in Qflow, not the guest: `run` re-raises it
            ctx.crashed(exc)
            return on_crash

    host.__name__ = fn.__name__
    return host
