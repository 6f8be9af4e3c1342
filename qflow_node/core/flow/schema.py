"""The flow language's JSON Schema (2020-12), as data.

`schemas/flow.v1.json` is this dictionary written out (a test keeps the two identical),
so editors and other implementations validate flows exactly as Qflow does. The schema
checks shape; `compiler.py` checks meaning (ids, references, CEL, capabilities …).
"""

from __future__ import annotations

from typing import Any, Final

SCHEMA_ID: Final = "urn:qflow:schema:flow.v1"
LANGUAGE_VERSION: Final = 1

# Step kinds, in the order documentation and messages list them.
LEAF_KINDS: Final = (
    "run",
    "transform",
    "validate",
    "http",
    "sleep",
    "wait_for",
    "approval",
    "flow",
)
CONTROL_KINDS: Final = ("if", "parallel", "foreach")
KINDS: Final = LEAF_KINDS + CONTROL_KINDS
# The kinds a compensation may be: the ones with side effects to undo.
COMPENSATION_KINDS: Final = ("run", "http", "flow")

# Keys a step of each kind may have besides `id`, `on_error` and its kind key.
# `critical` only on run steps: a critical step is re-executed by every validator, so it
# must be a deterministic wasm module (docs/consensus.md, "Split locks").
KIND_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "run": ("with", "retry", "timeout", "compensate", "critical", "capabilities"),
    "transform": (),
    "validate": (),
    "http": ("retry", "timeout", "compensate", "capabilities"),
    "sleep": (),
    "wait_for": (),
    "approval": (),
    "flow": ("with", "retry", "timeout", "compensate"),
    "if": ("timeout",),
    "parallel": ("timeout",),
    "foreach": ("timeout",),
}
STEP_KEYS: Final = (
    "id",
    "on_error",
    *KINDS,
    "with",
    "retry",
    "timeout",
    "compensate",
    "critical",
    "capabilities",
)

OPERATIONS: Final = ("http.fetch", "state.get", "state.set", "block.get", "block.put", "log")
# Keys a capability entry of each operation may have besides `op`.
OPERATION_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "http.fetch": ("hosts", "methods", "max_bytes", "max_response_bytes"),
    "state.get": ("key_prefix", "key_prefixes"),
    "state.set": ("key_prefix", "key_prefixes", "max_bytes"),
    "block.get": (),
    "block.put": ("codecs", "max_bytes"),
    "log": ("max_bytes",),
}
HTTP_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

# CEL keywords: not usable as step ids or branch names (`steps.in` does not parse).
RESERVED_WORDS: Final = (
    "as", "break", "const", "continue", "else", "false", "for", "function", "if", "import",
    "in", "let", "loop", "namespace", "null", "package", "return", "true", "var", "void",
    "while",
)  # fmt: skip

MAX_EXPR_CHARS: Final = 8192
MAX_STEPS: Final = 1000  # per list
MAX_BRANCHES: Final = 64
MAX_FOREACH_ITEMS: Final = 100_000
DEFAULT_MAX_ITEMS: Final = 1000
MAX_PARALLEL: Final = 1000
MAX_ATTEMPTS: Final = 100
MAX_APPROVERS: Final = 64
MAX_BYTES: Final = (1 << 63) - 1

_REF = "#/$defs/"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF + name}


def _keys_for(kind: str) -> list[str]:
    return ["id", "on_error", kind, *KIND_KEYS[kind]]


def _step_schema(*, compensation: bool) -> dict[str, Any]:
    kinds = COMPENSATION_KINDS if compensation else KINDS
    props: dict[str, Any] = {
        "id": _ref("id"),
        "on_error": {
            "enum": ["fail", "continue"] if compensation else ["fail", "continue", "compensate"],
            "default": "fail",
        },
        "run": _ref("run"),
        "transform": _ref("template"),
        "validate": _ref("validate"),
        "http": _ref("http"),
        "sleep": _ref("duration"),
        "wait_for": _ref("wait_for"),
        "approval": _ref("approval"),
        "flow": _ref("cid"),
        "if": _ref("if"),
        "parallel": _ref("parallel"),
        "foreach": _ref("foreach"),
        "with": _ref("template"),
        "retry": _ref("retry"),
        "timeout": _ref("duration"),
        "compensate": _ref("compensation"),
        "critical": {
            "type": "boolean",
            "default": False,
            "description": "run steps only: commit through the subnet's validator quorum",
        },
        "capabilities": {"type": "array", "maxItems": len(OPERATIONS), "items": _ref("capability")},
    }
    if compensation:
        del props["id"], props["compensate"]
        for kind in KINDS:
            if kind not in kinds:
                del props[kind]
    return {
        "type": "object",
        "properties": props,
        "additionalProperties": False,
        **({} if compensation else {"required": ["id"]}),
        "oneOf": [{"required": [kind]} for kind in kinds],
        "allOf": [
            {
                "if": {"required": [kind]},
                "then": {"propertyNames": {"enum": [k for k in _keys_for(kind) if k in props]}},
            }
            for kind in kinds
        ],
    }


def _capability_schema() -> dict[str, Any]:
    strings = {
        "type": "array",
        "items": {"type": "string"},
        "minItems": 1,
        "maxItems": 256,
        "uniqueItems": True,
    }
    byte_bound = {"type": "integer", "minimum": 0, "maximum": MAX_BYTES}
    then: list[dict[str, Any]] = []
    for op, keys in OPERATION_KEYS.items():
        rule: dict[str, Any] = {"propertyNames": {"enum": ["op", *keys]}}
        if op == "http.fetch":
            rule["required"] = ["hosts"]
        elif op.startswith("state."):
            rule["oneOf"] = [{"required": ["key_prefix"]}, {"required": ["key_prefixes"]}]
        then.append({"if": {"properties": {"op": {"const": op}}, "required": ["op"]}, "then": rule})
    return {
        "type": "object",
        "required": ["op"],
        "additionalProperties": False,
        "properties": {
            "op": {"enum": list(OPERATIONS)},
            "hosts": {
                **strings,
                "description": "http.fetch: exact host names or IP literals, no port",
            },
            "methods": {**strings, "items": {"enum": list(HTTP_METHODS)}, "default": ["GET"]},
            "key_prefix": {"type": "string", "description": "state.*: keys must start with this"},
            "key_prefixes": {**strings, "minItems": 1},
            "codecs": {
                **strings,
                "items": {"enum": ["dag-cbor", "raw"]},
                "default": ["dag-cbor", "raw"],
            },
            "max_bytes": byte_bound,
            "max_response_bytes": byte_bound,
        },
        "allOf": then,
    }


def _steps(min_items: int = 1) -> dict[str, Any]:
    return {"type": "array", "minItems": min_items, "maxItems": MAX_STEPS, "items": _ref("step")}


FLOW_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "Qflow flow definition (language version 1)",
    "description": (
        "A flow as written (YAML or JSON). See docs/flows.md for the meaning of each key, "
        "the expression scope rules and the compiled form. Expressions are CEL source "
        "strings; a number, boolean or null where an expression is expected is that literal."
    ),
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "steps"],
    "properties": {
        "version": {"const": LANGUAGE_VERSION, "default": LANGUAGE_VERSION},
        "name": _ref("name"),
        "subnet": _ref("name"),
        "description": {"type": "string", "maxLength": 4096},
        "inputs": {
            "type": "object",
            "description": "JSON Schema (2020-12) of the inputs",
            "default": {"type": "object"},
        },
        "vars": {"type": "object", "description": "initial flow variables", "default": {}},
        "steps": _steps(),
        "output": _ref("template"),
    },
    "$defs": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
        "id": {
            "type": "string",
            "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$",
            "not": {"enum": list(RESERVED_WORDS)},
        },
        "expr": {
            "type": ["string", "number", "boolean", "null"],
            "minLength": 1,
            "maxLength": MAX_EXPR_CHARS,
            "description": "a CEL expression",
        },
        "template": {
            "type": ["string", "number", "boolean", "null", "object"],
            "minLength": 1,
            "maxLength": MAX_EXPR_CHARS,
            "maxProperties": 256,
            "additionalProperties": _ref("template"),
            "description": "a CEL expression, or a mapping whose values are templates",
        },
        "duration": {"type": "string", "pattern": "^([0-9]{1,12}(ms|s|m|h|d))+$"},
        "cid": {"type": "string", "pattern": "^b[a-z2-7]{58}$"},
        "did_key": {"type": "string", "pattern": "^did:key:z[1-9A-HJ-NP-Za-km-z]{1,128}$"},
        "run": {
            "type": "string",
            "minLength": 1,
            "maxLength": 4096,
            "description": "a module CID (bafk…) or a path to a .wasm file",
        },
        "step": _step_schema(compensation=False),
        "compensation": _step_schema(compensation=True),
        "retry": {
            "type": "object",
            "additionalProperties": False,
            "required": ["max_attempts"],
            "properties": {
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS},
                "backoff": {"enum": ["fixed", "linear", "exponential"], "default": "exponential"},
                "delay": {**_ref("duration"), "default": "1s"},
                "max_delay": _ref("duration"),
                "jitter": {**_ref("duration"), "default": "0s"},
            },
        },
        "capability": _capability_schema(),
        "validate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["schema", "data"],
            "properties": {"schema": {"type": "object"}, "data": _ref("expr")},
        },
        "http": {
            "type": "object",
            "additionalProperties": False,
            "required": ["url"],
            "properties": {
                "method": {"enum": list(HTTP_METHODS), "default": "GET"},
                "url": _ref("expr"),
                "headers": {
                    "type": "object",
                    "maxProperties": 64,
                    "propertyNames": {"pattern": "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,256}$"},
                    "additionalProperties": _ref("expr"),
                    "default": {},
                },
                "body": _ref("expr"),
            },
        },
        "wait_for": {
            "type": "object",
            "additionalProperties": False,
            "required": ["topic", "timeout"],
            "properties": {
                "topic": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"},
                "match": {**_ref("expr"), "default": "true"},
                "timeout": _ref("duration"),
            },
        },
        "approval": {
            "type": "object",
            "additionalProperties": False,
            "required": ["approvers", "timeout"],
            "properties": {
                "approvers": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_APPROVERS,
                    "items": _ref("did_key"),
                },
                "quorum": {"type": "integer", "minimum": 1, "default": 1},
                "timeout": _ref("duration"),
                "message": {"type": "string", "maxLength": 4096},
            },
        },
        "if": {
            "type": "object",
            "additionalProperties": False,
            "required": ["condition", "then"],
            "properties": {
                "condition": _ref("expr"),
                "then": _steps(),
                "else": {**_steps(0), "default": []},
            },
        },
        "parallel": {
            "type": "object",
            "additionalProperties": False,
            "required": ["branches"],
            "properties": {
                "join": {
                    "anyOf": [
                        {"enum": ["all", "any"]},
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["n_of_m"],
                            "properties": {"n_of_m": {"type": "integer", "minimum": 1}},
                        },
                    ],
                    "default": "all",
                },
                "branches": {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": MAX_BRANCHES,
                    "propertyNames": _ref("id"),
                    "additionalProperties": _steps(),
                },
            },
        },
        "foreach": {
            "type": "object",
            "additionalProperties": False,
            "required": ["items", "steps"],
            "properties": {
                "items": _ref("expr"),
                "steps": _steps(),
                "max_parallel": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PARALLEL,
                    "default": 1,
                },
                "max_items": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_FOREACH_ITEMS,
                    "default": DEFAULT_MAX_ITEMS,
                },
                "on_item_error": {"enum": ["stop", "continue", "collect"], "default": "stop"},
            },
        },
    },
}
