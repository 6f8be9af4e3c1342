"""Scalar values of the flow language: durations, module and flow references, URLs."""

from __future__ import annotations

import re
from typing import Final, overload
from urllib.parse import urlsplit

from qflow_node.codec import CID, DAG_CBOR, RAW, CidError, cid_codec, parse_cid

_PART: Final = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_DURATION_MS: Final = 366 * 86_400_000


def duration_ms(text: str) -> int:
    """Milliseconds in `500ms`, `30s`, `1h30m` …; ValueError if malformed or over 366d."""
    pos, total = 0, 0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += int(match[1]) * _UNIT_MS[match[2]]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{text!r} is not a duration")
    if total > MAX_DURATION_MS:
        raise ValueError(f"{text} is longer than the maximum of 366d")
    return total


def format_duration(ms: int) -> str:
    """The shortest spelling of a duration, for messages: 90000 → `1m30s`."""
    if ms == 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        count, ms = divmod(ms, _UNIT_MS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


@overload
def integer(value: object, default: int) -> int: ...
@overload
def integer(value: object, default: None) -> int | None: ...
def integer(value: object, default: int | None) -> int | None:
    """An integer field's value: JSON Schema's `integer` also accepts 3.0, which the IR
    stores as 3 (so `3` and `3.0` are one flow); `default` if it is not an integer."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return default


def is_module_path(text: str) -> bool:
    """`run:` takes a module CID or a local file: anything path-like is a file."""
    return "/" in text or "\\" in text or text.startswith(".") or text.endswith(".wasm")


def module_cid(text: str) -> CID:
    """A wasm module's CID: raw blocks only (CidError otherwise)."""
    cid = parse_cid(text)
    if cid_codec(cid) != RAW:
        raise CidError(f"{text} is a dag-cbor CID; a wasm module is a raw block (bafkrei…)")
    return cid


def flow_cid(text: str) -> CID:
    """A compiled flow's CID: dag-cbor blocks only (CidError otherwise)."""
    cid = parse_cid(text)
    if cid_codec(cid) != DAG_CBOR:
        raise CidError(f"{text} is a raw block CID; a compiled flow is a dag-cbor block (bafyrei…)")
    return cid


def url_host(prefix: str, whole: bool) -> tuple[str | None, str | None]:
    """(host, problem) for a URL or the static start of one. The host is known when the
    authority is complete: the whole URL is static, or `/`, `?` or `#` follows it."""
    scheme, sep, rest = prefix.partition("://")
    if not sep:
        return None, "must be an http or https URL" if whole else None
    if scheme.lower() not in ("http", "https"):
        return None, f"scheme {scheme!r} is not allowed; use http or https"
    authority_complete = whole or any(c in rest for c in "/?#")
    if not authority_complete:
        return None, None
    try:
        parts = urlsplit(prefix if whole else prefix.split("#", 1)[0])
        host = parts.hostname
        _ = parts.port  # ValueError on a malformed port
    except ValueError as exc:
        return None, f"invalid URL: {exc}"
    if not host:
        return None, "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return None, "credentials in the URL are not allowed; send them in a header"
    return host.lower(), None
