"""Strict JSON for step inputs, outputs and state values, with a deterministic verdict.

`json.loads` accepts NaN and Infinity (not JSON) and fails on deep nesting at a depth
that depends on how deep the calling thread's stack already is. A step's output must be
judged the same on every node, so nesting has a fixed limit, checked on the parsed value.
"""

from __future__ import annotations

import json
from typing import Any, Final

MAX_DEPTH: Final = 512  # far below Python's recursion limit, from any caller


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str) -> Any:
    """One strict JSON value; raises ValueError (json.JSONDecodeError for syntax)."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    # Counting is cheap; walking the value is needed only when it could be that deep.
    if text.count("[") + text.count("{") > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists/objects nest more than `limit` deep (level by level: no recursion)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        deeper: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            deeper.extend(c for c in children if isinstance(c, dict | list))
        level = deeper
    return False
