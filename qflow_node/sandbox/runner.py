"""`Sandbox`: runs one step — (module CID, input JSON, limits, token) → output or failure.

One wasmtime engine and one epoch ticker per sandbox. Modules are compiled once (or
loaded from the disk cache) and kept in memory with their `InstancePre`; every step gets
a fresh store and instance, so nothing leaks from one step into the next. `run` is
synchronous and thread-safe (the trio runtime calls it through `trio.to_thread`); wasm
execution releases the GIL, so steps in different threads run in parallel.

`run` returns a `StepResult` for every outcome a step or its inputs can cause; only a bug
in Qflow itself raises.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import wasmtime

from qflow_node.codec import CID, RAW, cid_codec
from qflow_node.log import get_logger
from qflow_node.sandbox.authz import HOST_IMPORTS, Authorizer
from qflow_node.sandbox.cache import ModuleCache
from qflow_node.sandbox.context import StepContext
from qflow_node.sandbox.engine import EpochTicker, build_engine
from qflow_node.sandbox.failures import FailureKind, StepFailure, timeout_failure
from qflow_node.sandbox.jsontext import parse_json
from qflow_node.sandbox.limits import Limits, MiB, describe_limit, format_bytes
from qflow_node.sandbox.linking import ModuleInfo, analyze, build_linker
from qflow_node.sandbox.policy import SubnetPolicy
from qflow_node.sandbox.result import NO_USAGE, StepResult, Usage
from qflow_node.sandbox.state import StepState, client_id_for
from qflow_node.sandbox.wasi import ZERO_SEED
from qflow_node.store import BlockNotFoundError, BlockStore, StoreError

DEFAULT_TICK: Final = 0.005  # seconds between epoch ticks: the timeout's resolution

_TRAPS: Final = {
    wasmtime.TrapCode.UNREACHABLE: "wasm `unreachable` executed (how abort(), a failed "
    "assert or a Rust panic ends a wasm program)",
    wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS: "out-of-bounds memory access",
    wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO: "integer division by zero",
    wasmtime.TrapCode.INTEGER_OVERFLOW: "integer overflow",
    wasmtime.TrapCode.BAD_CONVERSION_TO_INTEGER: "invalid float-to-integer conversion",
    wasmtime.TrapCode.INDIRECT_CALL_TO_NULL: "call through a null function pointer",
    wasmtime.TrapCode.BAD_SIGNATURE: "indirect call with the wrong function signature",
    wasmtime.TrapCode.TABLE_OUT_OF_BOUNDS: "out-of-bounds table access",
}


@dataclass(frozen=True, slots=True)
class _Loaded:
    name: str  # the module CID as text, for logs
    module: wasmtime.Module
    info: ModuleInfo
    pre: wasmtime.InstancePre


class Sandbox:
    """Runs steps. Use as a context manager: it owns the epoch ticker (and an HTTP client).

    `blocks` holds step modules (raw blocks named by their CID) and serves the
    `block.get`/`block.put` host functions. `cache_dir` keeps compiled modules across
    restarts (see `cache.default_cache_dir`); None compiles in memory only.
    """

    def __init__(
        self,
        blocks: BlockStore,
        *,
        policy: SubnetPolicy | None = None,
        cache_dir: Path | None = None,
        tick_interval: float = DEFAULT_TICK,
        max_modules: int = 256,
    ) -> None:
        self._blocks = blocks
        self._policy = policy if policy is not None else SubnetPolicy()
        self.engine, self.fingerprint = build_engine(self._policy.max_wasm_stack)
        self._ticker = EpochTicker(self.engine, tick_interval)
        self._disk = ModuleCache(cache_dir, self.fingerprint) if cache_dir is not None else None
        self._max_modules = max_modules
        self._lock = threading.Lock()
        self._modules: OrderedDict[CID, _Loaded | StepFailure] = OrderedDict()
        self._loading: dict[CID, threading.Lock] = {}
        self._linkers: dict[frozenset[str], wasmtime.Linker] = {}
        self._http: Any = None
        self._http_lock = threading.Lock()  # first use imports httpx: not under _lock
        self._log = get_logger("qflow.sandbox")

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        self._ticker.start()

    def close(self) -> None:
        self._ticker.stop()
        with self._http_lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    @property
    def policy(self) -> SubnetPolicy:
        return self._policy

    def set_policy(self, policy: SubnetPolicy) -> None:
        """Adopt a new subnet policy (whitelist, defaults, maxima); the stack size is fixed."""
        if policy.max_wasm_stack != self._policy.max_wasm_stack:
            raise ValueError("max_wasm_stack is an engine setting: it needs a new Sandbox")
        self._policy = policy

    # -- running steps ---------------------------------------------------------------------

    def preload(self, module: CID) -> StepFailure | None:
        """Compile (or load from the disk cache) a whitelisted module ahead of its steps."""
        if not self._policy.allows(module):
            return _not_allowed(module)
        loaded = self._load(module)
        return loaded if isinstance(loaded, StepFailure) else None

    def evict(self, module: CID) -> None:
        """Drop a module's compiled code from memory (its disk cache entry stays)."""
        with self._lock:
            self._modules.pop(module, None)

    def run(
        self,
        module: CID,
        input_json: bytes,
        *,
        limits: Limits | None = None,
        authorizer: Authorizer | None = None,
        seed: bytes = ZERO_SEED,
        state: StepState | None = None,
    ) -> StepResult:
        """Run one step. `input_json` is the step's input (UTF-8 JSON) for its stdin.

        `seed` seeds `random_get` (see `wasi.derive_seed`); `state` is the execution's
        variables (`StepState.of(doc, seed=seed)`), a fresh empty one if None.
        """
        if not self._ticker.running:
            raise RuntimeError("Sandbox.run needs a started sandbox: `with Sandbox(...) as s:`")
        policy = self._policy
        limits = limits if limits is not None else policy.defaults
        problem = policy.check(limits)
        if problem is not None:
            return _refused(module, FailureKind.INVALID_LIMITS, problem)
        if not policy.allows(module):
            return StepResult(module, None, _not_allowed(module), NO_USAGE)
        loaded = self._load(module)
        if isinstance(loaded, StepFailure):
            return StepResult(module, None, loaded, NO_USAGE)
        granted = authorizer.granted() if authorizer is not None else frozenset()
        missing = loaded.info.operations - granted
        if missing:
            why = _denied_imports(loaded, missing, has_token=authorizer is not None)
            return _refused(module, FailureKind.CAPABILITY_DENIED, why)
        if loaded.info.initial_memory > limits.memory:
            return _refused(
                module,
                FailureKind.MEMORY_LIMIT,
                f"the module starts with {format_bytes(loaded.info.initial_memory)} of memory, "
                f"above the step's memory limit of {format_bytes(limits.memory)}",
            )
        return self._execute(
            module, loaded, input_json, limits=limits, authorizer=authorizer, seed=seed, state=state
        )

    def _execute(
        self,
        cid: CID,
        loaded: _Loaded,
        input_json: bytes,
        *,
        limits: Limits,
        authorizer: Authorizer | None,
        seed: bytes,
        state: StepState | None,
    ) -> StepResult:
        store = wasmtime.Store(self.engine)
        store.set_limits(
            memory_size=limits.memory,
            table_elements=limits.table_elements,
            instances=1,
            tables=limits.tables,
            memories=1,
        )
        store.set_fuel(limits.fuel)
        store.set_epoch_deadline(math.ceil(limits.timeout / self._ticker.interval) + 1)
        # An empty WasiConfig is the deny-by-default sandbox: no args, env, dirs or
        # sockets. It must always be set: WASI calls without it abort the process.
        store.set_wasi(wasmtime.WasiConfig())

        states: list[StepState] = [] if state is None else [state]

        def step_state() -> StepState:
            if not states:
                states.append(StepState(client_id=client_id_for(seed)))
            return states[0]

        ctx = StepContext(
            store=store,
            input_json=input_json,
            output_cap=limits.output,
            seed=seed,
            deadline=time.monotonic() + limits.timeout,
            timeout=describe_limit("timeout", limits.timeout),
            authorizer=authorizer,
            blocks=self._blocks,
            state=step_state,
            http_client=self._http_client,
            logger=self._log,
            module_name=loaded.name,
        )
        exit_code: int | None = None
        trap: wasmtime.Trap | None = None
        error: wasmtime.WasmtimeError | None = None
        memory: wasmtime.Memory | None = None
        started = time.perf_counter()
        with ctx, self._ticker.active():
            try:
                instance = loaded.pre.instantiate(store)
                exports = instance.exports(store)
                memory = ctx.memory = _export(exports, "memory", wasmtime.Memory)
                _export(exports, "_start", wasmtime.Func)(store)
                exit_code = 0
            except wasmtime.ExitTrap as exc:  # before WasmtimeError: it is one
                exit_code = exc.code
            except wasmtime.Trap as exc:
                trap = exc
            except wasmtime.WasmtimeError as exc:  # a resource limit, or a WASI call failed
                error = exc
        wall_time = time.perf_counter() - started
        try:
            if ctx.crash is not None:
                raise ctx.crash
            left = ctx.fuel_at_stop if ctx.fuel_at_stop is not None else store.get_fuel()
            peak = memory.data_len(store) if memory is not None else 0
            output = ctx.output()
            failure = ctx.failure or _classify(
                limits,
                self._policy,
                exit_code=exit_code,
                trap=trap,
                error=error,
                output=output,
                peak=peak,
                stderr=bytes(ctx.err),
                instantiated=memory is not None,
            )
            usage = Usage(
                fuel=limits.fuel - left,
                memory=peak,
                wall_time=wall_time,
                host_calls=ctx.host_calls,
                output_bytes=ctx.out_size,
            )
            if ctx.denied_calls > len(ctx.denials):
                ctx.log.warning("more host calls denied", count=ctx.denied_calls)
            if ctx.err:
                ctx.log.debug(
                    "step stderr", stderr=bytes(ctx.err[:2048]).decode("utf-8", "replace")
                )
            ok = failure is None
            return StepResult(
                module=cid,
                output=output if ok else None,
                failure=failure,
                usage=usage,
                stderr=bytes(ctx.err),
                state_delta=states[0].delta() if ok and states else None,
                denials=tuple(ctx.denials),
                denied_calls=ctx.denied_calls,
                logs=tuple(ctx.logs),
            )
        finally:
            store.close()  # frees the step's memory now, not at the next GC

    # -- modules ---------------------------------------------------------------------------

    def _load(self, cid: CID) -> _Loaded | StepFailure:
        with self._lock:
            entry = self._modules.get(cid)
            if entry is not None:
                self._modules.move_to_end(cid)
                return entry
            key_lock = self._loading.setdefault(cid, threading.Lock())
        with key_lock:  # one compilation per module, however many steps want it
            try:
                with self._lock:
                    entry = self._modules.get(cid)
                if entry is not None:
                    return entry
                entry = self._compile(cid)
                if isinstance(entry, StepFailure) and entry.kind is FailureKind.MODULE_NOT_FOUND:
                    return entry  # not cached: the block may arrive later
                with self._lock:
                    self._modules[cid] = entry
                    while len(self._modules) > self._max_modules:
                        self._modules.popitem(last=False)
                return entry
            finally:
                with self._lock:
                    if self._loading.get(cid) is key_lock:
                        del self._loading[cid]

    def _compile(self, cid: CID) -> _Loaded | StepFailure:
        module = self._disk.load(self.engine, cid) if self._disk is not None else None
        if module is None:
            if cid_codec(cid) != RAW:
                return _invalid(cid, "step modules are raw blocks (CID codec 0x55)")
            try:
                wasm = self._blocks.get(cid)
            except BlockNotFoundError:
                return StepFailure(
                    FailureKind.MODULE_NOT_FOUND, f"module {cid.encode()} is not in the block store"
                )
            except (StoreError, OSError) as exc:
                return StepFailure(
                    FailureKind.MODULE_NOT_FOUND, f"cannot read module {cid.encode()}: {exc}"
                )
            try:
                module = wasmtime.Module(self.engine, wasm)
            except wasmtime.WasmtimeError as exc:
                return _invalid(cid, f"it does not compile: {_first_line(str(exc))}")
            self._log.info("compiled step module", module=cid.encode(), bytes=len(wasm))
            if self._disk is not None:
                self._disk.store(cid, module)
        info = analyze(module)
        if isinstance(info, str):
            return _invalid(cid, info)
        try:
            pre = self._linker(info.operations).instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            return _invalid(cid, f"its imports cannot be linked: {_first_line(str(exc))}")
        return _Loaded(cid.encode(), module, info, pre)

    def _linker(self, operations: frozenset[str]) -> wasmtime.Linker:
        with self._lock:
            linker = self._linkers.get(operations)
            if linker is None:
                linker = self._linkers[operations] = build_linker(self.engine, operations)
            return linker

    def _http_client(self) -> Any:
        with self._http_lock:
            if self._http is None:
                from qflow_node.sandbox.httpcall import new_client

                self._http = new_client()
            return self._http


# -- outcomes ----------------------------------------------------------------------------


def _classify(
    limits: Limits,
    policy: SubnetPolicy,
    *,
    exit_code: int | None,
    trap: wasmtime.Trap | None,
    error: wasmtime.WasmtimeError | None,
    output: bytes,
    peak: int,
    stderr: bytes,
    instantiated: bool,
) -> StepFailure | None:
    """What went wrong, from how the step ended; None if it succeeded."""
    if error is not None:
        why = _error_text(str(error))
        if not instantiated and "limit" in why:
            return StepFailure(
                FailureKind.MEMORY_LIMIT,
                f"the module cannot be instantiated within the step's limits (memory "
                f"{format_bytes(limits.memory)}, {limits.tables} tables of at most "
                f"{limits.table_elements:,} elements): {why}",
            )
        # E.g. a WASI function given arguments it cannot even decode fails the call.
        return StepFailure(FailureKind.TRAP, f"the step trapped: {why}")
    if trap is not None:
        code = trap.trap_code
        if code is wasmtime.TrapCode.OUT_OF_FUEL:
            return StepFailure(
                FailureKind.OUT_OF_FUEL,
                f"the step used all of its {limits.fuel:,} fuel (its CPU budget) without "
                f"finishing: an endless loop, or raise `fuel` (this subnet allows up to "
                f"{policy.maxima.fuel:,})",
            )
        if code is wasmtime.TrapCode.INTERRUPT:
            return timeout_failure(describe_limit("timeout", limits.timeout))
        if code is wasmtime.TrapCode.STACK_OVERFLOW:
            return StepFailure(
                FailureKind.TRAP,
                "stack overflow: the step's calls nested deeper than the "
                f"{format_bytes(policy.max_wasm_stack)} wasm stack allows (unbounded recursion?)",
            )
        what = _TRAPS.get(code) if code is not None else None
        what = what or _trap_text(trap)
        if _near_memory_limit(peak, limits.memory):
            return _memory_failure(limits, policy, peak, f"it then trapped ({what})", None)
        return StepFailure(FailureKind.TRAP, f"the step trapped: {what}")
    if exit_code:
        if _near_memory_limit(peak, limits.memory):
            ended = f"it then exited with code {exit_code}"
            return _memory_failure(limits, policy, peak, ended, exit_code)
        said = _last_line(stderr)
        return StepFailure(
            FailureKind.EXIT_CODE,
            f"the step exited with code {exit_code}" + (f"; stderr: {said}" if said else ""),
            exit_code,
        )
    problem = _output_problem(output)
    if problem is None:
        return None
    if _near_memory_limit(peak, limits.memory):
        return _memory_failure(limits, policy, peak, f"its output is invalid ({problem})", None)
    return StepFailure(FailureKind.INVALID_OUTPUT, problem)


def _near_memory_limit(peak: int, limit: int) -> bool:
    """Whether a step that failed was most likely refused memory.

    wasmtime's `memory.grow` past the store limit returns -1 (malloc returns NULL) and
    reports nothing, so it is inferred: a failing step whose memory ends within an eighth
    of its limit (at least 4 MiB: allocators grow in large steps) was almost certainly
    refused a grow. A single huge request far from the limit goes unnoticed.
    """
    return limit - peak < max(limit // 8, 4 * MiB)


def _memory_failure(
    limits: Limits, policy: SubnetPolicy, peak: int, ended: str, exit_code: int | None
) -> StepFailure:
    return StepFailure(
        FailureKind.MEMORY_LIMIT,
        f"the step ran out of memory: it grew to {format_bytes(peak)} of its "
        f"{format_bytes(limits.memory)} limit, so an allocation was most likely refused, "
        f"and {ended}; raise `memory` if it really needs more (this subnet allows up to "
        f"{format_bytes(policy.maxima.memory)})",
        exit_code,
    )


def _output_problem(output: bytes) -> str | None:
    if not output.strip():
        return "the step wrote nothing to stdout; a step must write exactly one JSON value"
    try:
        text = output.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"stdout is not UTF-8 (invalid byte at offset {exc.start})"
    try:
        parse_json(text)
    except json.JSONDecodeError as exc:
        return f"stdout is not one JSON value: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except ValueError as exc:
        return f"stdout is not one JSON value: {exc}"
    return None


def _export(exports: Any, name: str, kind: type[Any]) -> Any:
    item = exports[name]
    if not isinstance(item, kind):  # analyze() checked the types; this guards the cast
        raise TypeError(f"export {name} is a {type(item).__name__}, not a {kind.__name__}")
    return item


def _trap_text(trap: wasmtime.Trap) -> str:
    lines = [line.strip() for line in trap.message.splitlines() if line.strip()]
    text = lines[-1] if lines else "unknown trap"
    return text.removeprefix("wasm trap: ")


def _error_text(text: str) -> str:
    """The cause of a wasmtime error: the first line after "Caused by:", else the first."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Caused by:" in lines:
        cause = lines[lines.index("Caused by:") + 1 :]
        if cause:
            return cause[0].split(": ", 1)[1] if cause[0][:1].isdigit() else cause[0]
    return lines[0] if lines else "unknown error"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def _last_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return ""
    line = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in lines[-1].strip())
    return line if len(line) <= 200 else line[:197] + "..."


def _refused(module: CID, kind: FailureKind, message: str) -> StepResult:
    return StepResult(module, None, StepFailure(kind, message), NO_USAGE)


def _not_allowed(module: CID) -> StepFailure:
    return StepFailure(
        FailureKind.MODULE_NOT_ALLOWED,
        f"module {module.encode()} is not in this subnet's whitelist of step modules",
    )


def _invalid(cid: CID, why: str) -> StepFailure:
    return StepFailure(FailureKind.INVALID_MODULE, f"module {cid.encode()} is not a step: {why}")


def _denied_imports(loaded: _Loaded, missing: frozenset[str], *, has_token: bool) -> str:
    names = []
    for imp in loaded.info.host_imports:
        operation = HOST_IMPORTS[imp.split(".", 1)[1]]
        if operation in missing:
            names.append(f"{imp} (operation {operation})")
    who = (
        "the step's capability token does not grant"
        if has_token
        else ("needs a capability token, and the step has none")
    )
    return (
        f"the module imports {', '.join(names)}, which {who}; a module may import only "
        "the host functions its token grants"
    )
