"""The node's local control API: JSON lines over a Unix domain socket (docs/api.md).

Only the repo's owner can talk to it: the socket is 0600 in a directory created 0700.
One JSON object per line each way; a connection carries any number of requests,
answered one at a time in order. A bad request gets an error response, never a crash:
the server and every other connection keep running whatever one handler or client does.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from qflow_node.api.errors import (
    API_VERSION,
    BAD_REQUEST,
    INTERNAL,
    MAX_REQUEST_LINE,
    UNKNOWN_METHOD,
    UNSUPPORTED_VERSION,
    ApiError,
    check_socket_path,
)
from qflow_node.log import get_logger

if TYPE_CHECKING:
    # trio's own TaskStatus is shadowed for mypy by trio-stubs (installed with libp2p).
    from trio_typing import TaskStatus

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

# A connection waiting this long for its next request (or for the client to read a
# response) is closed, so forgotten clients cannot pile up.
IDLE_TIMEOUT: Final = 60.0
_BACKLOG: Final = 64
_CHUNK: Final = 1 << 16
_PROBE_TIMEOUT: Final = 5.0
_MAX_SHOWN: Final = 1000  # characters of an exception repr sent to the client


class ApiSocketInUseError(RuntimeError):
    """Another process (a second node on this repo?) already serves the socket path."""


class _LineTooLongError(Exception):
    pass


def _log() -> Any:
    return get_logger("qflow.api")


async def serve_api(
    socket_path: Path,
    handlers: Mapping[str, Handler],
    *,
    idle_timeout: float = IDLE_TIMEOUT,
    task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `handlers` on `socket_path` until cancelled, then remove the socket.

    `await nursery.start(serve_api, path, handlers)` returns once the socket accepts
    connections. Raises SocketPathTooLongError for a path over 107 bytes (the Unix
    socket address limit), ApiSocketInUseError if something already answers on it; a
    stale socket file (nothing listening) is replaced, any other file is refused.
    """
    check_socket_path(socket_path)
    if _prepare_location(socket_path):
        await _remove_stale(socket_path)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        await sock.bind(os.fspath(socket_path))
        # chmod before listen(): until listen() every connect is refused, so no client
        # can get in while the umask's mode is still on the file.
        ours = _restrict(socket_path)
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    listener = trio.SocketListener(sock)
    serve = partial(_serve_connection, handlers=handlers, idle_timeout=idle_timeout)
    _log().info("api.listening", socket=str(socket_path), methods=sorted(handlers))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, serve, [listener])
            task_status.started()
    finally:
        # Sync cleanup only: an await here would raise Cancelled and skip the rest.
        _remove_if_ours(socket_path, ours)
        sock.close()


def _prepare_location(path: Path) -> bool:
    """Create the socket's directory (0700); True if a socket file is already there."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        raise ApiSocketInUseError(f"{path} exists and is not a socket; not removing it")
    return True


def _restrict(path: Path) -> os.stat_result:
    path.chmod(0o600)
    return path.stat()


async def _remove_stale(path: Path) -> None:
    probe = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        # A connect that succeeds, or hangs (a full backlog), means someone listens.
        with trio.move_on_after(_PROBE_TIMEOUT):
            await probe.connect(os.fspath(path))
        raise ApiSocketInUseError(
            f"another process already serves the API on {path} (a node running on this repo?)"
        )
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # left behind by a node that died: nothing listens
    finally:
        probe.close()
    _unlink(path)
    _log().info("api.stale_socket_removed", socket=str(path))


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _remove_if_ours(path: Path, ours: os.stat_result) -> None:
    # A node started after us (after ours died?) may have replaced the file: keep theirs.
    with contextlib.suppress(FileNotFoundError):
        now = path.lstat()
        if (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino):
            path.unlink()


async def _serve_connection(
    stream: trio.SocketStream, *, handlers: Mapping[str, Handler], idle_timeout: float
) -> None:
    """One client's requests in turn; every failure ends this connection only."""
    try:
        async with stream:
            await _request_loop(stream, handlers, idle_timeout)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client went away
    except Exception:
        _log().exception("api.connection_failed")


async def _request_loop(
    stream: trio.SocketStream, handlers: Mapping[str, Handler], idle_timeout: float
) -> None:
    reader = _LineReader(stream, MAX_REQUEST_LINE)
    while True:
        line: bytes | None = None
        with trio.move_on_after(idle_timeout) as idle:
            try:
                line = await reader.next_line()
            except _LineTooLongError:
                # The rest of the line is unread: no way to find the next request.
                message = f"request line is longer than {MAX_REQUEST_LINE} bytes; closing"
                await _send(stream, _encode(_error(None, BAD_REQUEST, message)), idle_timeout)
                return
        if idle.cancelled_caught or line is None:
            return
        if not line.strip():
            continue  # blank lines (e.g. `\r\n` from a terminal) are not requests
        response = await _answer(line, handlers)
        if not await _send(stream, response, idle_timeout):
            return


async def _send(stream: trio.SocketStream, data: bytes, idle_timeout: float) -> bool:
    """False if the client did not read the response within the idle timeout."""
    with trio.move_on_after(idle_timeout):
        await stream.send_all(data)
        return True
    return False


class _LineReader:
    """Newline-terminated lines of at most `limit` bytes from a stream."""

    def __init__(self, stream: trio.SocketStream, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no newline

    async def next_line(self) -> bytes | None:
        """The next line without its newline; at EOF a final unterminated line, or None."""
        while True:
            end = self._buf.find(b"\n", self._scanned)
            if end > self._limit or (end < 0 and len(self._buf) > self._limit):
                raise _LineTooLongError
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buf)
            chunk = await self._stream.receive_some(_CHUNK)
            if not chunk:
                line, self._buf = bytes(self._buf), bytearray()
                return line or None
            self._buf += chunk


async def _answer(line: bytes, handlers: Mapping[str, Handler]) -> bytes:
    """The encoded response to one request line."""
    try:
        request = json.loads(line)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return _encode(_error(None, BAD_REQUEST, f"request is not valid JSON: {exc}"))
    if not isinstance(request, dict):
        kind = type(request).__name__
        return _encode(_error(None, BAD_REQUEST, f"request must be a JSON object, not {kind}"))
    raw_id = request.get("id")
    request_id = raw_id if _is_int(raw_id) else None
    try:
        method, params = _check_request(request, handlers)
    except ApiError as exc:
        return _encode(_error(request_id, exc.code, exc.message))
    try:
        result = await handlers[method](params)
        # Encoded inside the try: a result JSON cannot carry is an `internal` error too.
        return _encode({"v": API_VERSION, "id": request_id, "result": _as_object(result)})
    except ApiError as exc:
        return _encode(_error(request_id, exc.code, exc.message))
    except Exception as exc:
        _log().exception("api.handler_failed", method=method, id=request_id)
        return _encode(_error(request_id, INTERNAL, repr(exc)[:_MAX_SHOWN]))


def _check_request(
    request: dict[str, Any], handlers: Mapping[str, Handler]
) -> tuple[str, dict[str, Any]]:
    """The method and params of a well-formed request, else ApiError."""
    # Version first: another version may shape every other field differently.
    if "v" not in request:
        raise ApiError(BAD_REQUEST, f'"v" is missing (this node speaks version {API_VERSION})')
    version = request["v"]
    if not _is_int(version) or version != API_VERSION:
        raise ApiError(
            UNSUPPORTED_VERSION,
            f"protocol version {_show(version)} is not supported; "
            f"this node speaks version {API_VERSION}",
        )
    if not _is_int(request.get("id")):
        raise ApiError(BAD_REQUEST, '"id" must be an integer')
    method = request.get("method")
    if not isinstance(method, str):
        raise ApiError(BAD_REQUEST, '"method" must be a string naming the method')
    if method not in handlers:
        known = ", ".join(sorted(handlers))
        raise ApiError(UNKNOWN_METHOD, f"unknown method {_show(method)} (known: {known})")
    params = request.get("params", {})
    if not isinstance(params, dict):
        raise ApiError(BAD_REQUEST, f'"params" must be an object, not {type(params).__name__}')
    return method, params


def _as_object(result: object) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise TypeError(f"the handler returned {type(result).__name__}, not a dict")
    return result


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: object) -> str:
    """A JSON value from the client, cut short: it may be long."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _error(request_id: int | None, code: str, message: str) -> dict[str, Any]:
    return {"v": API_VERSION, "id": request_id, "error": {"code": code, "message": message}}


def _encode(response: dict[str, Any]) -> bytes:
    return json.dumps(response, separators=(",", ":"), allow_nan=False).encode() + b"\n"
