"""What the control API's server (trio) and client (stdlib, for the CLI) share: the wire
constants, the error codes and the exceptions.

Kept free of trio so that CLI commands importing the client stay light (docs/api.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

API_VERSION: Final = 1
MAX_REQUEST_LINE: Final = 1 << 20  # bytes, newline excluded
# Responses carry block and file bytes (base64): larger than any request, still bounded.
MAX_RESPONSE_LINE: Final = 128 << 20
# Linux `sun_path` is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH: Final = 107

# Stable error codes (docs/api.md). Clients branch on these, never on messages.
BAD_REQUEST: Final = "bad_request"
UNKNOWN_METHOD: Final = "unknown_method"
UNSUPPORTED_VERSION: Final = "unsupported_version"
INTERNAL: Final = "internal"
UNAVAILABLE: Final = "unavailable"
TOO_LARGE: Final = "too_large"
STORE_ERROR: Final = "store_error"
REJECTED: Final = "rejected"  # a submission the node refuses (message: reason: why)
NOT_FOUND: Final = "not_found"  # an execution this node neither holds nor drives
# Raised by the client itself: the node did not answer, or not properly.
TIMEOUT: Final = "timeout"
CONNECTION_FAILED: Final = "connection_failed"
CONNECTION_LOST: Final = "connection_lost"
BAD_RESPONSE: Final = "bad_response"


class ApiError(Exception):
    """An expected failure of an API call: a stable `code` and a precise human message.

    Handlers raise it; the server sends it as the error response; the client raises it
    again from that response.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ApiError({self.code!r}, {self.message!r})"


class NodeNotRunning(Exception):
    """Nothing listens on the API socket: no socket file, or connection refused."""

    def __init__(self, socket_path: Path, repo: Path | None = None) -> None:
        if repo is not None:
            message = (
                f"no node is running for repo {repo} (start it with `qflow node run --repo {repo}`)"
            )
        else:
            message = f"no node is listening on {socket_path}"
        super().__init__(message)
        self.socket_path = socket_path
        self.repo = repo


class SocketPathTooLongError(ValueError):
    """The socket path does not fit in a Unix socket address."""


def check_socket_path(path: Path) -> None:
    """Raise SocketPathTooLongError unless `path` fits in `sun_path`."""
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise SocketPathTooLongError(
            f"the API socket path {path} is {size} bytes; Unix socket paths are limited to "
            f"{MAX_SOCKET_PATH} bytes (use a repo at a shorter path)"
        )
