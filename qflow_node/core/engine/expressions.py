"""CEL evaluation for the engine: programs compiled once per source, templates filled.

Pure and deterministic: an expression sees only the values passed in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import cel

from qflow_node.core.flow import Template, step_references


class EvalError(Exception):
    """An expression failed at run time (unknown function, bad types, missing field)."""


@lru_cache(maxsize=4096)
def program(source: str) -> Any:
    return cel.compile(source)


@lru_cache(maxsize=4096)
def uses_vars(template: str) -> bool:
    return "vars" in program(template).variables()


def template_uses_vars(template: Template) -> bool:
    if isinstance(template, str):
        return uses_vars(template)
    return any(template_uses_vars(value) for value in template.values())


@lru_cache(maxsize=4096)
def references(source: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(step_references(source)))


def evaluate(source: str, names: Mapping[str, Any]) -> Any:
    """The value of one expression; EvalError with the CEL message on failure."""
    context = cel.Context()
    for name, value in names.items():
        context.add_variable(name, value)
    try:
        return program(source).execute(context)
    except Exception as exc:
        raise EvalError(f"{source}: {exc}") from None


def template_references(template: Template) -> tuple[str, ...]:
    if isinstance(template, str):
        return references(template)
    found: dict[str, None] = {}
    for value in template.values():
        found.update(dict.fromkeys(template_references(value)))
    return tuple(found)


def fill(template: Template, names: Mapping[str, Any]) -> Any:
    """A template's value: every expression replaced by its value, mappings kept.
    EvalError unless the value is plain JSON (steps exchange JSON, records store it)."""
    value = _fill(template, names)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EvalError(f"{_show(template)}: the value is not JSON ({exc})") from None
    return value


def _fill(template: Template, names: Mapping[str, Any]) -> Any:
    if isinstance(template, str):
        return evaluate(template, names)
    return {key: _fill(value, names) for key, value in template.items()}


def _show(template: Template) -> str:
    text = template if isinstance(template, str) else json.dumps(template)
    return text if len(text) <= 80 else text[:77] + "..."
