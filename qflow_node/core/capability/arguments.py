"""Validation and normalisation of the arguments the sandbox passes to `authorize`.

Both engines see the same normalised arguments, so they decide on the same facts: hosts
are lowercased ASCII (never Unicode-lowercased: `K` (U+212A) must not become `k`),
methods uppercased, byte counts non-negative i64, strings valid UTF-8 of bounded size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from qflow_node.core.capability import vocabulary as v

MAX_ARG_LEN: Final = 8192


class ArgumentError(ValueError):
    """Arguments that do not fit the operation (the sandbox's bug or a hostile guest)."""


def _string(args: Mapping[str, str | int], name: str) -> str:
    value = args[name]
    if not isinstance(value, str):
        raise ArgumentError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > MAX_ARG_LEN:
        raise ArgumentError(f"{name} is longer than {MAX_ARG_LEN} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ArgumentError(f"{name} is not valid Unicode text") from None
    return value


def _count(args: Mapping[str, str | int], name: str) -> int:
    value = args[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= v.MAX_INT:
        raise ArgumentError(f"{name} must be an integer in 0..2^63-1, got {value!r}")
    return value


def normalise(operation: str, args: Mapping[str, str | int]) -> dict[str, str | int]:
    """The arguments as facts will state them; raises ArgumentError."""
    spec = v.ARGUMENTS.get(operation) if isinstance(operation, str) else None
    if spec is None:
        raise ArgumentError(f"unknown operation {operation!r}")
    required, optional = spec
    names = args.keys()
    if missing := required - names:
        raise ArgumentError(f"{operation} needs {', '.join(sorted(missing))}")
    if unknown := names - required - optional:
        raise ArgumentError(f"{operation} takes no {', '.join(sorted(map(str, unknown)))}")
    if operation == v.HTTP_FETCH and not names & v.INT_ARGUMENTS:
        raise ArgumentError("http.fetch needs bytes (request) or response_bytes (response)")
    out: dict[str, str | int] = {}
    for name in names:
        # `level` may be the ABI's integer (0-3) or a name; byte counts are integers.
        if name in v.INT_ARGUMENTS or (name == "level" and not isinstance(args[name], str)):
            out[name] = _count(args, name)
        else:
            out[name] = _string(args, name)
    if operation == v.HTTP_FETCH:
        out["host"] = _host(str(out["host"]), str(out["url"]))
        method = str(out["method"])
        if not (method.isascii() and method.isalpha() and len(method) <= 16):
            raise ArgumentError(f"method {method!r} is not an HTTP method")
        out["method"] = method.upper()
    return out


def _host(host: str, url: str) -> str:
    if not host.isascii():
        raise ArgumentError(f"host {host!r} is not ASCII (pass IDNs in their xn-- form)")
    host = host.lower()
    # The host the call is checked against must be the one the URL goes to.
    try:
        url_host = urlsplit(url).hostname
    except ValueError:
        raise ArgumentError(f"url {url[:80]!r} is not a URL") from None
    if url_host != host:
        raise ArgumentError(f"host {host!r} is not the host of url {url[:80]!r}")
    return host
