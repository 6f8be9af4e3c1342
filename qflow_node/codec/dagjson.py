"""DAG-JSON: read it into the IPLD data model (`parse_dag_json`), render values as it
(`to_dag_json`) for display and JSON Schema validation.

DAG-JSON conventions (ipld.io/specs/codecs/dag-json): `{"/": "bafy…"}` is a link,
`{"/": {"bytes": "<base64>"}}` is a byte string (standard alphabet, padding optional),
and other maps whose first key is "/" in those shapes are refused (the reserved
namespace). A number with a fraction or exponent is a float, one without is an integer.
NaN, ±Infinity, integers outside the 64-bit range and duplicate keys are refused. Every
error names where: line and column for syntax, a JSON path (`$.a[2]`) for content.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, Final

from qflow_node.codec.cid import CID, CidError, parse_cid

_INT_MIN: Final = -(2**64)
_INT_MAX: Final = 2**64 - 1
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DagJsonError(ValueError):
    """Text that is not valid DAG-JSON for Qflow, with the place it went wrong."""


class _Pairs(list[tuple[str, Any]]):
    """A JSON object before checks: its pairs in document order, duplicates kept."""


class _Invalid:
    """A JSON constant the data model has no value for, reported once its path is known."""

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_float(text: str) -> float | _Invalid:
    value = float(text)
    return value if math.isfinite(value) else _Invalid(text)


def parse_dag_json(data: bytes | str) -> Any:
    """The data-model value of a DAG-JSON document (links as CIDs, bytes as bytes)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DagJsonError(f"input is not UTF-8 (byte {exc.start})") from None
    try:
        raw = json.loads(
            data,
            object_pairs_hook=_Pairs,
            parse_float=_parse_float,
            parse_constant=_Invalid,
        )
        return _convert(raw, "$")
    except json.JSONDecodeError as exc:
        raise DagJsonError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise DagJsonError("JSON nesting too deep") from None


def _convert(value: Any, path: str) -> Any:
    if isinstance(value, _Pairs):
        return _convert_map(value, path)
    if isinstance(value, list):
        return [_convert(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, _Invalid):
        raise DagJsonError(f"{path}: {value.text} is not a number in the IPLD data model")
    if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
        raise DagJsonError(f"{path}: integer {value} is outside the 64-bit range of dag-cbor")
    return value


def _convert_map(pairs: _Pairs, path: str) -> Any:
    obj = _unique(pairs, path)
    special = _reserved(obj, path)
    if special is not None:
        return special
    return {key: _convert(item, _child(path, key)) for key, item in obj.items()}


def _reserved(obj: dict[str, Any], path: str) -> Any:
    """The link or bytes `obj` encodes, None for an ordinary map; raise for a bad form."""
    if "/" not in obj or _first_key(obj) != "/":
        return None
    inner = obj["/"]
    here = _child(path, "/")
    if isinstance(inner, str):
        if len(obj) > 1:
            raise DagJsonError(f"{path}: a link {{'/': …}} cannot have other keys")
        try:
            return parse_cid(inner)
        except CidError as exc:
            raise DagJsonError(f"{here}: invalid link: {exc}") from None
    if not isinstance(inner, _Pairs):
        return None
    inner_obj = _unique(inner, here)
    encoded = inner_obj.get("bytes")
    if not isinstance(encoded, str) or _first_key(inner_obj) != "bytes":
        return None
    if len(obj) > 1 or len(inner_obj) > 1:
        raise DagJsonError(f"{path}: bytes {{'/': {{'bytes': …}}}} cannot have other keys")
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DagJsonError(f"{_child(here, 'bytes')}: invalid base64: {exc}") from None


def _unique(pairs: _Pairs, path: str) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, item in pairs:
        if key in obj:
            raise DagJsonError(f"{path}: duplicate key {key!r}")
        obj[key] = item
    return obj


def _first_key(obj: dict[str, Any]) -> str:
    # DAG-JSON orders keys by their UTF-8 bytes.
    return min(obj, key=lambda k: k.encode("utf-8", "surrogatepass"))


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if _IDENT.fullmatch(key) else f"{path}[{json.dumps(key)}]"


def to_dag_json(value: Any) -> Any:
    """A JSON-serialisable copy of a dag-cbor data-model value.

    Links become {"/": "<base32 CID>"}, bytes {"/": {"bytes": "<base64, unpadded>"}};
    serialise with sorted keys to match DAG-JSON's canonical form.
    """
    if isinstance(value, CID):
        return {"/": value.encode()}
    if isinstance(value, bytes):
        return {"/": {"bytes": base64.b64encode(value).decode("ascii").rstrip("=")}}
    if isinstance(value, dict):
        return {key: to_dag_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_dag_json(item) for item in value]
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    raise TypeError(f"{type(value).__name__} is not in the dag-cbor data model")
