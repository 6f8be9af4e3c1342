"""Strict readers for the decoded maps of this package: each refusal names the field.

Messages, certificates and persisted locks arrive as decoded dag-cbor, i.e. hostile
until read through here. Types are tested with `type(x) is …` (a bool is not an int)
and every size is bounded; an error reads `vote.signed.partial: expected 96 bytes, got
12`, so a peer's bad message can be told from a bug.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from qflow_node.codec import CID, DAG_CBOR, CidError, check_cid


class FormatError(ValueError):
    """A statement, certificate, message or lock that breaks the format (what, where, why)."""


def show(value: object) -> str:
    """A short rendering of a hostile value: never a deep or huge repr."""
    if value is None or isinstance(value, bool | int | str | bytes):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(value).__name__}"


def fields(obj: object, path: str, keys: frozenset[str]) -> dict[str, Any]:
    """`obj` if it is a map with exactly `keys` (absent values are null, never missing)."""
    if type(obj) is not dict:
        raise FormatError(f"{path}: expected a map, got {show(obj)}")
    if obj.keys() != keys:
        missing = sorted(keys - obj.keys())
        unknown = sorted(show(k) for k in obj.keys() - keys)
        parts = [f"missing field(s) {missing}"] if missing else []
        parts += [f"unknown field(s) {unknown}"] if unknown else []
        raise FormatError(f"{path}: {'; '.join(parts)}")
    return obj


def text(
    value: object,
    path: str,
    *,
    max_len: int,
    min_len: int = 1,
    pattern: re.Pattern[str] | None = None,
) -> str:
    if type(value) is not str:
        raise FormatError(f"{path}: expected a string, got {show(value)}")
    if not min_len <= len(value) <= max_len:
        raise FormatError(f"{path}: length {len(value)} is outside {min_len}..{max_len}")
    if pattern is not None and pattern.match(value) is None:
        raise FormatError(f"{path}: {show(value)} does not match {pattern.pattern}")
    return value


def choice(value: object, path: str, options: Collection[str]) -> str:
    if type(value) is not str or value not in options:
        raise FormatError(f"{path}: expected one of {sorted(options)}, got {show(value)}")
    return value


def integer(value: object, path: str, low: int, high: int) -> int:
    if type(value) is not int:
        raise FormatError(f"{path}: expected an int, got {show(value)}")
    if not low <= value <= high:
        raise FormatError(f"{path}: {value} is outside {low}..{high}")
    return value


def blob(value: object, path: str, *, size: int | None = None, max_len: int | None = None) -> bytes:
    if type(value) is not bytes:
        raise FormatError(f"{path}: expected bytes, got {show(value)}")
    if size is not None and len(value) != size:
        raise FormatError(f"{path}: expected {size} bytes, got {len(value)}")
    if max_len is not None and len(value) > max_len:
        raise FormatError(f"{path}: {len(value)} bytes exceeds the {max_len}-byte cap")
    return value


def link(value: object, path: str, *, dag_cbor_only: bool = False) -> CID:
    """A CIDv1 sha2-256 link, dag-cbor or raw (only dag-cbor with `dag_cbor_only`)."""
    if type(value) is not CID:
        raise FormatError(f"{path}: expected a CID link, got {show(value)}")
    try:
        check_cid(value)
    except CidError as exc:
        raise FormatError(f"{path}: {exc}") from None
    if dag_cbor_only and value.cid_bytes[1] != DAG_CBOR:
        raise FormatError(f"{path}: {value.encode()} must be a dag-cbor link")
    return value


def listing(value: object, path: str, max_len: int) -> list[Any]:
    if type(value) is not list:
        raise FormatError(f"{path}: expected a list, got {show(value)}")
    if len(value) > max_len:
        raise FormatError(f"{path}: {len(value)} items exceeds the cap of {max_len}")
    return value
