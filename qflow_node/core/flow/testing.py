"""Helpers for tests of flows and of what runs them: stand-in resolvers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from qflow_node.codec import CID, raw_block
from qflow_node.core.flow.errors import ResolveError


class FakeModules:
    """Resolves any `run:` path to a made-up module (`\\0asm` + the path) and remembers
    which paths were asked for; `missing` paths fail as the loader's would."""

    def __init__(self, missing: tuple[str, ...] = ()) -> None:
        self.missing = missing
        self.asked: list[str] = []

    def __call__(self, path: str) -> CID:
        self.asked.append(path)
        if path in self.missing:
            raise ResolveError(f"module file not found: {path}")
        return raw_block(b"\0asm" + path.encode()).cid

    @staticmethod
    def cid(path: str) -> CID:
        return raw_block(b"\0asm" + path.encode()).cid


class DictFlows:
    """Resolves sub-flow CIDs from a mapping (CID bytes → decoded IR)."""

    def __init__(self, flows: Mapping[CID, Any] | None = None) -> None:
        self.flows = {bytes(cid.cid_bytes): ir for cid, ir in (flows or {}).items()}

    def __call__(self, cid: CID) -> Any:
        return self.flows.get(bytes(cid.cid_bytes))


def to_yaml(value: Any, *, comments: bool = False) -> str:
    """Block-style YAML for plain data, every string double-quoted (a JSON string is a
    valid YAML one), so it reads back as the same value. `comments` sprinkles comments."""
    lines: list[str] = []
    _emit(value, "", lines, comments)
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str | None:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    if value in ({}, []):
        return json.dumps(value)
    return None


def _emit(value: Any, pad: str, lines: list[str], comments: bool) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if comments:
                lines.append(f"{pad}# {key}")
            scalar = _scalar(item)
            name = json.dumps(key, ensure_ascii=False)
            if scalar is not None:
                lines.append(f"{pad}{name}: {scalar}")
            else:
                lines.append(f"{pad}{name}:")
                _emit(item, pad + "  ", lines, comments)
    else:
        for item in value:
            scalar = _scalar(item)
            if scalar is not None:
                lines.append(f"{pad}- {scalar}")
            else:
                lines.append(f"{pad}-")
                _emit(item, pad + "  ", lines, comments)


def reversed_keys(value: Any) -> Any:
    """The same data with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value
