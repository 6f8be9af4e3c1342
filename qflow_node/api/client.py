"""A blocking client of the node's control API, for CLI commands (docs/api.md).

Standard library only: CLI commands are synchronous and must start fast. One connection
per call; the node answers on it and the client closes it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from qflow_node.api.errors import (
    API_VERSION,
    BAD_RESPONSE,
    CONNECTION_FAILED,
    CONNECTION_LOST,
    MAX_RESPONSE_LINE,
    TIMEOUT,
    ApiError,
    NodeNotRunning,
    check_socket_path,
)

DEFAULT_TIMEOUT: Final = 30.0
_REQUEST_ID: Final = 1  # one request per connection
_CHUNK: Final = 1 << 16


def call(
    socket_path: Path,
    method: str,
    params: Mapping[str, Any] | None = None,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    repo: Path | None = None,
) -> dict[str, Any]:
    """Call `method` on the node listening on `socket_path` and return its result.

    `timeout` bounds the whole call (None: wait for the node's answer however long).
    Raises NodeNotRunning (its message names `repo` when given), ApiError for an error
    response or a client-side failure (`timeout`, `connection_failed`,
    `connection_lost`, `bad_response`), SocketPathTooLongError for an impossible path.
    """
    check_socket_path(socket_path)
    request = {"v": API_VERSION, "id": _REQUEST_ID, "method": method, "params": dict(params or {})}
    line = json.dumps(request, separators=(",", ":")).encode() + b"\n"
    deadline = None if timeout is None else time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise NodeNotRunning(socket_path, repo) from None
        except TimeoutError:
            raise ApiError(
                TIMEOUT, f"the node at {socket_path} did not accept within {timeout} s"
            ) from None
        except OSError as exc:
            raise ApiError(
                CONNECTION_FAILED, f"cannot connect to {socket_path}: {exc.strerror or exc}"
            ) from None
        try:
            sock.sendall(line)
            raw = _read_line(sock, deadline)
        except TimeoutError:
            raise ApiError(TIMEOUT, f"no answer to {method} within {timeout} s") from None
        except OSError as exc:
            raise ApiError(
                CONNECTION_LOST, f"connection to {socket_path} failed: {exc.strerror or exc}"
            ) from None
    return _result(raw, method)


def _read_line(sock: socket.socket, deadline: float | None) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
        chunk = sock.recv(_CHUNK)
        if not chunk:
            raise ApiError(CONNECTION_LOST, "the node closed the connection without answering")
        buf += chunk
        if len(buf) > MAX_RESPONSE_LINE + 1:
            raise ApiError(BAD_RESPONSE, f"response is longer than {MAX_RESPONSE_LINE} bytes")
    return bytes(buf[: buf.index(b"\n")])


def _result(raw: bytes, method: str) -> dict[str, Any]:
    try:
        response = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(BAD_RESPONSE, f"response to {method} is not valid JSON: {exc}") from None
    if not isinstance(response, dict) or response.get("v") != API_VERSION:
        raise ApiError(BAD_RESPONSE, f"response to {method} is not a version {API_VERSION} reply")
    error = response.get("error")
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        if isinstance(code, str) and isinstance(message, str):
            raise ApiError(code, message)
        raise ApiError(BAD_RESPONSE, f"malformed error in the response to {method}: {error!r}")
    # Id checked after errors: the node answers an unparseable request with id null.
    if response.get("id") != _REQUEST_ID:
        raise ApiError(BAD_RESPONSE, f"response to {method} has the wrong id")
    result = response.get("result")
    if not isinstance(result, dict):
        raise ApiError(BAD_RESPONSE, f"response to {method} has no result object")
    return result
