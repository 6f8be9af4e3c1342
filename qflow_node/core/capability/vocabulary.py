"""The words of Qflow capability tokens: operations, their arguments, and value rules.

Every string that goes into a token is restricted to a safe alphabet (no `"`, `\\` or
control characters): biscuit prints strings without escaping, and the compiled fast path
(`scope.py`) only accepts blocks whose printed Datalog it can read back unambiguously.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Final

from qflow_node.core.capability.errors import GrantError

HTTP_FETCH: Final = "http.fetch"
STATE_GET: Final = "state.get"
STATE_SET: Final = "state.set"
BLOCK_GET: Final = "block.get"
BLOCK_PUT: Final = "block.put"
LOG: Final = "log"

# The host functions a token can grant, in the order tokens list them.
OPERATIONS: Final = (HTTP_FETCH, STATE_GET, STATE_SET, BLOCK_GET, BLOCK_PUT, LOG)
STATE_OPERATIONS: Final = frozenset({STATE_GET, STATE_SET})
CODECS: Final = ("raw", "dag-cbor")

# Arguments the sandbox passes per operation: (required, optional). http.fetch is checked
# twice: before the request with `bytes`, after the response with `response_bytes` (and
# the request's arguments); it needs at least one of the two.
ARGUMENTS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    HTTP_FETCH: (frozenset({"host", "method", "url"}), frozenset({"bytes", "response_bytes"})),
    STATE_GET: (frozenset({"key"}), frozenset()),
    STATE_SET: (frozenset({"key", "bytes"}), frozenset()),
    BLOCK_GET: (frozenset({"cid"}), frozenset()),
    BLOCK_PUT: (frozenset({"codec", "bytes"}), frozenset()),
    LOG: (frozenset({"level", "bytes"}), frozenset()),
}
INT_ARGUMENTS: Final = frozenset({"bytes", "response_bytes"})

MAX_INT: Final = (1 << 63) - 1  # Biscuit integers are i64
MAX_NAME_LEN: Final = 256
MAX_PREFIX_LEN: Final = 1024
MAX_HOST_LEN: Final = 253
MAX_SET_SIZE: Final = 256

# Safe text: no quote, backslash or control character (C0, DEL, C1).
SAFE_TEXT: Final = r'[^"\\\x00-\x1f\x7f-\x9f]'
_SAFE_TEXT_RE: Final = re.compile(f"{SAFE_TEXT}*")
# DNS names and IPv4 literals (lowercase ASCII), or bare IPv6 literals as urllib gives them.
_HOST_RE: Final = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?|[0-9a-f:.]*:[0-9a-f:.]*")
_METHOD_RE: Final = re.compile(r"[A-Z]{1,16}")


def operation(name: str) -> str:
    if name not in ARGUMENTS:
        raise GrantError(f"unknown operation {name!r}; expected one of {', '.join(OPERATIONS)}")
    return name


def host(name: str) -> str:
    """A host name as tokens store it: ASCII, lowercased (IDNs in their xn-- form)."""
    if not isinstance(name, str) or not name.isascii():
        raise GrantError(f"host {name!r} must be ASCII (write IDNs in their xn-- form)")
    lowered = name.lower()
    if len(lowered) > MAX_HOST_LEN or not _HOST_RE.fullmatch(lowered):
        raise GrantError(f"host {name!r} is not a host name or IP literal (no scheme, no port)")
    return lowered


def method(name: str) -> str:
    upper = name.upper() if isinstance(name, str) and name.isascii() else ""
    if not _METHOD_RE.fullmatch(upper):
        raise GrantError(f"HTTP method {name!r} must be 1-16 ASCII letters")
    return upper


def codec(name: str) -> str:
    if name not in CODECS:
        raise GrantError(f"unknown codec {name!r}; expected one of {', '.join(CODECS)}")
    return name


def text(value: str, what: str, *, max_len: int, allow_empty: bool = False) -> str:
    """A string safe to print in Datalog (see the module docstring)."""
    if not isinstance(value, str):
        raise GrantError(f"{what} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise GrantError(f"{what} must not be empty")
    if len(value) > max_len:
        raise GrantError(f"{what} is longer than {max_len} characters")
    if not _SAFE_TEXT_RE.fullmatch(value) or not _encodable(value):
        raise GrantError(f"{what} {value!r} contains a quote, backslash or control character")
    return value


def key_prefix(value: str) -> str:
    return text(value, "key prefix", max_len=MAX_PREFIX_LEN, allow_empty=True)


def label(value: str, what: str) -> str:
    """An execution, flow or step name."""
    return text(value, what, max_len=MAX_NAME_LEN)


def byte_bound(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise GrantError(f"{what} must be an integer in 0..2^63-1, got {value!r}")
    return value


def positive(value: int, what: str) -> int:
    if byte_bound(value, what) == 0:
        raise GrantError(f"{what} must be positive")
    return value


def value_set(values: Iterable[str], check: Callable[[str], str], what: str) -> frozenset[str]:
    """Validate each value; refuse a bare string (a classic `set("GET")` mistake)."""
    if isinstance(values, str):
        raise GrantError(f"{what} must be a collection of strings, not a string")
    result = frozenset(check(v) for v in values)
    if len(result) > MAX_SET_SIZE:
        raise GrantError(f"at most {MAX_SET_SIZE} {what}")
    return result


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True
