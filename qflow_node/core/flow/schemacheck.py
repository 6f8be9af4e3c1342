"""Validate a parsed flow against FLOW_SCHEMA and say what is wrong in plain words.

jsonschema's messages are written for schema authors (`'x' is not valid under any of
the given schemas`); each error is rewritten here to name the key, the allowed values
or the expected form, and placed on the key or value it is about.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from qflow_node.codec import CidError, parse_cid
from qflow_node.core.flow.errors import FlowError
from qflow_node.core.flow.schema import FLOW_SCHEMA, KINDS
from qflow_node.core.flow.source import Document

_VALIDATOR: Final = Draft202012Validator(FLOW_SCHEMA)
_DEFS: Final[dict[str, Any]] = FLOW_SCHEMA["$defs"]
_STEP_DEFS: Final = (_DEFS["step"], _DEFS["compensation"])
_EXPR_DEFS: Final = (_DEFS["expr"], _DEFS["template"])
_JOIN: Final = _DEFS["parallel"]["properties"]["join"]

_PATTERN_HELP: Final = {
    "id": "is not a valid id: use letters, digits and _, not starting with a digit, at most 64",
    "name": 'is not a valid name: use letters, digits, ".", "_" and "-", at most 128 characters',
    "duration": "is not a duration: a number and a unit (ms, s, m, h, d), e.g. 500ms, 30s, 1h30m",
    "did_key": "is not a did:key (expected did:key:z6Mk…)",
}
_TYPE_NAMES: Final = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def schema_errors(doc: Document) -> list[FlowError]:
    errors: list[FlowError] = []
    for error in _VALIDATOR.iter_errors(doc.value):
        errors.extend(_translate(doc, error))
    return errors


def show(value: Any) -> str:
    """A short JSON rendering of a value for messages."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "…"


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "null"


def _def_name(schema: Any) -> str | None:
    for name, definition in _DEFS.items():
        if definition is schema:
            return name
    return None


def _translate(doc: Document, error: ValidationError) -> Iterator[FlowError]:
    path = tuple(error.absolute_path)
    instance, schema, validator = _parts(error)
    on_key = "propertyNames" in error.absolute_schema_path
    if on_key:  # `instance` is a key of the mapping at `path`
        yield from _key_error(doc, error, path)
        return
    if validator == "additionalProperties" and isinstance(instance, dict):
        known = list(schema.get("properties", {}))
        step = schema in _STEP_DEFS
        no_kind = step and not any(k in instance for k in KINDS)
        for key in instance:
            if key in known:
                continue
            if no_kind:
                kinds = ", ".join(k for k in KINDS if k in known)
                message = f"unknown step kind {show(key)} (a step is one of: {kinds})"
            else:
                message = f"unknown key {show(key)}{_suggest(key, known)}"
            yield doc.error((*path, key), message, at_key=True)
        return
    if validator == "oneOf" and _only_required(schema["oneOf"]):
        yield from _one_of_keys(doc, error, path)
        return
    if validator == "anyOf" and schema is _JOIN:
        if isinstance(instance, dict):
            for sub in error.context or []:
                if sub.relative_schema_path[0] == 1:
                    yield from _translate(doc, sub)
        else:
            yield doc.error(path, f'must be "all", "any" or {{n_of_m: N}}, got {show(instance)}')
        return
    yield doc.error(path, _message(error, path))


def _message(error: ValidationError, path: tuple[str | int, ...]) -> str:
    instance, schema, validator = _parts(error)
    value: Any = error.validator_value
    if validator == "type":
        if schema in _EXPR_DEFS:
            return f"expected a CEL expression (a string), got {kind_of(instance)}"
        if schema is _DEFS["duration"]:
            return f'expected a duration with a unit (e.g. "30s"), got {kind_of(instance)}'
        wanted = [value] if isinstance(value, str) else list(value)
        return f"expected {' or '.join(_TYPE_NAMES[t] for t in wanted)}, got {kind_of(instance)}"
    if validator == "required":
        missing = [k for k in value if k not in instance]
        return (
            f"missing required key {show(missing[0])}"
            if len(missing) == 1
            else ("missing required keys " + ", ".join(show(k) for k in missing))
        )
    if validator == "enum":
        return f"{show(instance)} is not one of: {', '.join(str(v) for v in value)}"
    if validator == "const":
        return f"must be {show(value)}, got {show(instance)}"
    if validator in ("minimum", "maximum"):
        sign = "≥" if validator == "minimum" else "≤"
        return f"must be {sign} {value} (got {show(instance)})"
    if validator in ("minItems", "minProperties", "minLength") and value == 1:
        return "must not be empty"
    if validator == "minItems":
        return f"must have at least {value} items"
    if validator == "maxItems":
        return f"must have at most {value} items (got {len(instance)})"
    if validator == "maxProperties":
        return f"must have at most {value} entries (got {len(instance)})"
    if validator == "maxLength":
        return f"is longer than {value} characters"
    if validator == "uniqueItems":
        return "has duplicate items"
    if validator == "pattern":
        name = _def_name(schema)
        if name == "cid":
            return f"not a CID: {_cid_problem(instance)}"
        if name in _PATTERN_HELP:
            return f"{show(instance)} {_PATTERN_HELP[name]}"
        return f"{show(instance)} does not match {value}"
    if validator == "not" and _def_name(schema) == "id":
        return f"{show(instance)} is a CEL keyword and cannot be used as an id"
    return re.sub(r"\s+", " ", error.message)


def _parts(error: ValidationError) -> tuple[Any, Any, Any]:
    """instance, schema, validator (jsonschema types them as possibly unset)."""
    return error.instance, error.schema, error.validator


def _key_error(
    doc: Document, error: ValidationError, path: tuple[str | int, ...]
) -> Iterator[FlowError]:
    key = error.instance
    owner = doc.value_at(path)
    if not isinstance(key, str) or not isinstance(owner, dict):
        return
    where = (*path, key)
    if error.validator == "enum":  # the keys one step kind (or capability op) allows
        if _is_step_like(owner):
            kinds = [k for k in KINDS if k in owner]
            if key in KINDS or len(kinds) != 1 or key not in _DEFS["step"]["properties"]:
                return  # reported as an unknown key or as the wrong number of kinds
            if key == "critical":
                yield doc.error(where, _not_critical(doc, path, owner, kinds[0]), at_key=True)
                return
            yield doc.error(where, f"{show(key)} is not allowed in a {kinds[0]} step", at_key=True)
        elif key in _DEFS["capability"]["properties"]:
            yield doc.error(where, f"{show(key)} is not allowed for {owner.get('op')}", at_key=True)
        return
    if _def_name(error.schema) == "id":  # parallel branch names
        if error.validator == "not":
            message = f"{show(key)} is a CEL keyword and cannot be used as a branch name"
        else:
            message = (
                f"{show(key)} is not a valid branch name: "
                "use letters, digits and _, not starting with a digit"
            )
    elif error.validator == "pattern" and "headers" in path:
        message = f"{show(key)} is not a valid HTTP header name"
    else:
        message = _message(error, where)
    yield doc.error(where, message, at_key=True)


def _not_critical(
    doc: Document, path: tuple[str | int, ...], owner: dict[str, Any], kind: str
) -> str:
    """Why `critical` is refused on a step of `kind` (anything but run), naming the step."""
    name = owner.get("id")
    if path and path[-1] == "compensate":  # a compensation is addressed <id>/compensate
        parent = doc.value_at(path[:-1])
        parent_id = parent.get("id") if isinstance(parent, dict) else None
        name = f"{parent_id}/compensate" if isinstance(parent_id, str) else None
    step = f"step {show(name)}" if isinstance(name, str) else "this step"
    article = "an" if kind in ("http", "approval", "if") else "a"
    return (
        f"{step} is {article} {kind} step and cannot be critical: only a run step "
        "(a deterministic wasm module, which every validator re-executes) may set critical"
    )


def _is_step_like(owner: dict[str, Any]) -> bool:
    return any(k in owner for k in KINDS)


def _only_required(alternatives: list[Any]) -> bool:
    return all(set(alt) == {"required"} and len(alt["required"]) == 1 for alt in alternatives)


def _one_of_keys(
    doc: Document, error: ValidationError, path: tuple[str | int, ...]
) -> Iterator[FlowError]:
    instance, schema, _ = _parts(error)
    if not isinstance(instance, dict):
        return  # `required` holds for anything else: the type error says what is wrong
    keys = [alt["required"][0] for alt in schema["oneOf"]]
    present = [k for k in keys if k in instance]
    if schema in _STEP_DEFS:
        if not present:
            if any(k not in schema["properties"] for k in instance):
                return  # the unknown key error already names the kinds
            yield doc.error(path, f"a step needs one of: {', '.join(keys)}")
        else:
            yield doc.error(path, f"a step has exactly one kind, found {_and(present)}")
        return
    if not present:
        owner = f"{instance['op']} " if isinstance(instance.get("op"), str) else ""
        yield doc.error(path, f"{owner}needs {' or '.join(keys)}")
    else:
        yield doc.error(path, f"{_and(present)} cannot be used together")


def _and(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f'; did you mean "{close[0]}"?' if close else ""


def _cid_problem(text: Any) -> str:
    try:
        parse_cid(text)
    except CidError as exc:
        return str(exc)
    return f"{show(text)} is not a CIDv1 in base32"
