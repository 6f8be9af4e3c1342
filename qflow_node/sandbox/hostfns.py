"""The `qflow.*` host functions: defined only for granted operations, authorized per call.

Return convention (docs/steps.md): n >= 0 is the full length of the result; it is
written at out_ptr if n <= out_cap, else it stays pending for `qflow.result` until the
next host call. Negative values are the error codes below. Every argument is checked
here (bounds, encoding, size caps) before it reaches the authorizer, the block store, the
state or the network; a denied call is recorded on the step and, if the token says so,
stops the step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import wasmtime

from qflow_node.codec import (
    DAG_CBOR,
    RAW,
    Block,
    CidError,
    CodecError,
    cid_for,
    decode_dag,
    parse_cid,
)
from qflow_node.core.capability import vocabulary as ops
from qflow_node.sandbox import authz
from qflow_node.sandbox.authz import LIMIT_CODE, AuthArgs, AuthDecision, Decision
from qflow_node.sandbox.codes import (
    DENIED,
    INVALID_ARGUMENT,
    LIMIT_EXCEEDED,
    NO_PENDING_RESULT,
    NOT_FOUND,
    UNAVAILABLE,
)
from qflow_node.sandbox.context import StepContext, guarded
from qflow_node.sandbox.failures import FailureKind, StepFailure, timeout_failure
from qflow_node.sandbox.jsontext import parse_json
from qflow_node.sandbox.result import LOG_LEVELS, LogEntry
from qflow_node.store import BlockNotFoundError, BlockTooLargeError, InvalidBlockError, StoreError

# Hard caps of the host, whatever a token allows.
MAX_LOG_BYTES: Final = 8 * 1024
MAX_LOG_ENTRIES: Final = 1000
MAX_KEY_BYTES: Final = 1024
MAX_STATE_VALUE: Final = 1 << 20
MAX_HTTP_REQUEST: Final = (1 << 20) + 64 * 1024  # a 1 MiB body plus its JSON envelope
MAX_HTTP_RESPONSE: Final = 1 << 20
MAX_CID_TEXT: Final = 128

_LEVEL_METHODS: Final = ("debug", "info", "warning", "error")
CODEC_NAMES: Final = {RAW: "raw", DAG_CBOR: "dag-cbor"}  # as tokens name them


# -- shared steps of every call ---------------------------------------------------------


def _begin(ctx: StepContext) -> bool:
    """Count the call and drop the previous pending result; False once the step is stopped."""
    ctx.host_calls += 1
    ctx.pending = None
    return not ctx.stopped


def _authorize(ctx: StepContext, operation: str, args: AuthArgs, size_arg: str = "") -> int:
    """0 if allowed; else record the denial and return DENIED or LIMIT_EXCEEDED.

    A denial is LIMIT_EXCEEDED when its `code` says a byte bound refused it. Decisions
    without a `code` attribute at all say only yes or no: then the call is asked again
    with a zero size, and allowed that way it was the byte bound.
    """
    decision = _ask(ctx, operation, args)
    if decision.allowed:
        return 0
    _deny(ctx, operation, args, decision)
    if hasattr(decision, "code"):
        return LIMIT_EXCEEDED if decision.code == LIMIT_CODE else DENIED
    if size_arg and args.get(size_arg, 0) and _ask(ctx, operation, {**args, size_arg: 0}).allowed:
        return LIMIT_EXCEEDED
    return DENIED


def _ask(ctx: StepContext, operation: str, args: AuthArgs) -> Decision:
    authorizer = ctx.authorizer
    if authorizer is None:  # unreachable: ungranted functions are not even defined
        return AuthDecision(False, "no capability token")
    try:
        return authorizer.authorize(operation, args)
    except Exception as exc:  # a token that cannot be evaluated grants nothing
        ctx.log.exception("authorizer failed; denying", operation=operation)
        return AuthDecision(False, f"authorizer error: {type(exc).__name__}: {exc}")


def _deny(ctx: StepContext, operation: str, args: AuthArgs, decision: Decision) -> None:
    reason = decision.reason or "not allowed by the capability token"
    ctx.record_denial(operation, args, reason)
    if decision.trap:
        ctx.stop(
            StepFailure(
                FailureKind.CAPABILITY_DENIED,
                f"{operation} was denied and the capability token says to stop the step "
                f"(trap_on_deny): {reason}",
            )
        )


def _respond(ctx: StepContext, result: bytes, out_ptr: int, out_cap: int) -> int:
    n = len(result)
    if n <= (out_cap & 0xFFFFFFFF):
        if not ctx.guest().write(out_ptr, result):
            return INVALID_ARGUMENT
    else:
        ctx.pending = result
    return n


def _text(ctx: StepContext, ptr: int, length: int, limit: int) -> str | int:
    """UTF-8 text from guest memory, or an error code."""
    if length & 0xFFFFFFFF > limit:
        return LIMIT_EXCEEDED
    raw = ctx.guest().read(ptr, length)
    if raw is None:
        return INVALID_ARGUMENT
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return INVALID_ARGUMENT


# -- the functions ----------------------------------------------------------------------


def log(ctx: StepContext, level: int, msg_ptr: int, msg_len: int) -> int:
    if not _begin(ctx):
        return DENIED
    if not 0 <= level < len(LOG_LEVELS):
        return INVALID_ARGUMENT
    if msg_len & 0xFFFFFFFF > MAX_LOG_BYTES or len(ctx.logs) >= MAX_LOG_ENTRIES:
        return LIMIT_EXCEEDED
    raw = ctx.guest().read(msg_ptr, msg_len)
    if raw is None:
        return INVALID_ARGUMENT
    denied = _authorize(ctx, ops.LOG, {"level": level, "bytes": len(raw)}, "bytes")
    if denied:
        return denied
    message = raw.decode("utf-8", "replace")
    ctx.logs.append(LogEntry(level, message))
    getattr(ctx.log, _LEVEL_METHODS[level])("step log", message=message)
    return 0


def state_get(ctx: StepContext, key_ptr: int, key_len: int, out_ptr: int, out_cap: int) -> int:
    if not _begin(ctx):
        return DENIED
    key = _text(ctx, key_ptr, key_len, MAX_KEY_BYTES)
    if isinstance(key, int):
        return key
    denied = _authorize(ctx, ops.STATE_GET, {"key": key})
    if denied:
        return denied
    value = ctx.state().get(key)
    if value is None:
        return NOT_FOUND
    return _respond(ctx, value.encode(), out_ptr, out_cap)


def state_set(ctx: StepContext, key_ptr: int, key_len: int, val_ptr: int, val_len: int) -> int:
    if not _begin(ctx):
        return DENIED
    key = _text(ctx, key_ptr, key_len, MAX_KEY_BYTES)
    if isinstance(key, int):
        return key
    value = _text(ctx, val_ptr, val_len, MAX_STATE_VALUE)
    if isinstance(value, int):
        return value
    args: dict[str, str | int] = {"key": key, "bytes": val_len & 0xFFFFFFFF}
    denied = _authorize(ctx, ops.STATE_SET, args, "bytes")
    if denied:
        return denied
    try:
        parse_json(value)
    except ValueError:
        return INVALID_ARGUMENT
    ctx.state().set(key, value)
    return 0


def block_get(ctx: StepContext, cid_ptr: int, cid_len: int, out_ptr: int, out_cap: int) -> int:
    if not _begin(ctx):
        return DENIED
    text = _text(ctx, cid_ptr, cid_len, MAX_CID_TEXT)
    if isinstance(text, int):
        return INVALID_ARGUMENT
    try:
        cid = parse_cid(text)
    except CidError:
        return INVALID_ARGUMENT
    denied = _authorize(ctx, ops.BLOCK_GET, {"cid": text})
    if denied:
        return denied
    try:
        data = ctx.blocks.get(cid)
    except BlockNotFoundError:
        return NOT_FOUND
    except (StoreError, OSError) as exc:  # e.g. a corrupt file, quarantined by the store
        ctx.log.warning("block.get failed", cid=text, error=str(exc))
        return UNAVAILABLE
    return _respond(ctx, data, out_ptr, out_cap)


def block_put(  # noqa: PLR0917 - the wasm ABI passes five i32s positionally
    ctx: StepContext, codec: int, data_ptr: int, data_len: int, out_ptr: int, out_cap: int
) -> int:
    if not _begin(ctx):
        return DENIED
    if codec not in CODEC_NAMES:
        return INVALID_ARGUMENT
    if data_len & 0xFFFFFFFF > ctx.blocks.max_block_size:
        return LIMIT_EXCEEDED
    data = ctx.guest().read(data_ptr, data_len)
    if data is None:
        return INVALID_ARGUMENT
    args: dict[str, str | int] = {"codec": CODEC_NAMES[codec], "bytes": len(data)}
    denied = _authorize(ctx, ops.BLOCK_PUT, args, "bytes")
    if denied:
        return denied
    if codec == DAG_CBOR:
        try:
            decode_dag(data)  # strict: only canonical DAG-CBOR decodes
        except CodecError:
            return INVALID_ARGUMENT
    block = Block(cid_for(data, codec), data)
    try:
        ctx.blocks.put(block)
    except BlockTooLargeError:
        return LIMIT_EXCEEDED
    except InvalidBlockError:
        return INVALID_ARGUMENT
    except (StoreError, OSError) as exc:
        ctx.log.warning("block.put failed", cid=block.cid.encode(), error=str(exc))
        return UNAVAILABLE
    return _respond(ctx, block.cid.encode().encode(), out_ptr, out_cap)


def result(ctx: StepContext, out_ptr: int, out_cap: int) -> int:
    ctx.host_calls += 1
    pending = ctx.pending
    if pending is None or ctx.stopped:
        return NO_PENDING_RESULT
    n = len(pending)
    if n <= (out_cap & 0xFFFFFFFF):
        if not ctx.guest().write(out_ptr, pending):
            return INVALID_ARGUMENT
        ctx.pending = None
    return n


def http_fetch(ctx: StepContext, req_ptr: int, req_len: int, out_ptr: int, out_cap: int) -> int:
    # httpx is imported only once a step actually fetches something.
    from qflow_node.sandbox import httpcall

    if not _begin(ctx):
        return DENIED
    text = _text(ctx, req_ptr, req_len, MAX_HTTP_REQUEST)
    if isinstance(text, int):
        return text
    request = httpcall.parse_request(text)
    if request is None:
        return INVALID_ARGUMENT
    args: dict[str, str | int] = {
        "host": request.host,
        "method": request.method,
        "url": request.url_text,
        "bytes": len(request.body),
    }
    denied = _authorize(ctx, ops.HTTP_FETCH, args, "bytes")
    if denied:
        return denied
    seconds = ctx.remaining()
    token_ms = getattr(ctx.authorizer, "http_timeout_ms", None)  # the token may set one
    if isinstance(token_ms, int):
        seconds = min(seconds, token_ms / 1000)
    outcome = httpcall.send(ctx.http_client(), request, seconds, MAX_HTTP_RESPONSE)
    if ctx.remaining() <= 0:  # the fetch used up the step's time: stop it as timed out
        ctx.stop(timeout_failure(ctx.timeout))
        return UNAVAILABLE
    if isinstance(outcome, int):
        return outcome
    args["response_bytes"] = len(outcome.body)
    decision = _ask(ctx, ops.HTTP_FETCH, args)
    if not decision.allowed:
        _deny(ctx, ops.HTTP_FETCH, args, decision)
        return LIMIT_EXCEEDED
    return _respond(ctx, outcome.to_json(), out_ptr, out_cap)


# -- linking ----------------------------------------------------------------------------

HostFn = Callable[..., int]
_FUNCTIONS: Final[dict[str, tuple[HostFn, int]]] = {
    # import name -> (implementation, number of i32 parameters)
    "log": (log, 3),
    "http_fetch": (http_fetch, 4),
    "state_get": (state_get, 4),
    "state_set": (state_set, 4),
    "block_get": (block_get, 4),
    "block_put": (block_put, 5),
    "result": (result, 2),
}


def define_host(linker: wasmtime.Linker, operations: frozenset[str]) -> None:
    """Define `qflow.result` and the host functions of the granted `operations`."""
    i32 = wasmtime.ValType.i32()
    for name, (fn, arity) in _FUNCTIONS.items():
        operation = authz.HOST_IMPORTS[name]
        if operation is None or operation in operations:
            ty = wasmtime.FuncType([i32] * arity, [i32])
            linker.define_func(authz.HOST_MODULE, name, ty, guarded(fn, UNAVAILABLE))
