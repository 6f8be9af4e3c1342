"""Check a compiled flow that came from elsewhere (a block fetched by CID).

A node runs flows it did not compile, so a decoded IR is hostile input like any block.
Rather than a second set of rules, `check_ir` writes the IR back as flow source in its
canonical spelling and compiles that: the IR is valid exactly when compiling gives the
same bytes back. Every rule of the language (schema, ids, CEL, scope, capabilities …)
is thus enforced the one way it is for source files.
"""

from __future__ import annotations

from typing import Any

from qflow_node.codec import CID, CodecError, encode_dag
from qflow_node.core.flow.compiler import compile_document
from qflow_node.core.flow.errors import FlowCompileError, FlowError
from qflow_node.core.flow.ir import FORMAT, FlowIR
from qflow_node.core.flow.schema import KIND_KEYS
from qflow_node.core.flow.source import Document
from qflow_node.core.flow.subflows import FlowResolver


def check_ir(obj: Any, *, resolve_flow: FlowResolver | None = None) -> FlowIR:
    """`obj` (a decoded dag-cbor block) as a compiled flow, or FlowCompileError saying why
    not. Error positions are 1:1; their paths name the flow source equivalent."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise _malformed(f"not a compiled flow (format must be {FORMAT!r})")
    try:
        data = encode_dag(obj)  # also bounds the nesting the checks below walk
    except CodecError as exc:
        raise _malformed(f"not a compiled flow: {exc}") from None
    try:
        source = decompile(obj)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _malformed(f"malformed compiled flow: {type(exc).__name__} {exc}") from None
    compiled = compile_document(Document("", source), resolve_flow=resolve_flow)
    if data != compiled.block.data:
        raise _malformed("not in compiled form: compiling it again gives a different flow")
    return compiled.ir


def _malformed(message: str) -> FlowCompileError:
    return FlowCompileError([FlowError(1, 1, "", message)])


def decompile(ir: dict[str, Any]) -> dict[str, Any]:
    """The flow source, as data, that compiles to `ir`: every default spelled out."""
    flow: dict[str, Any] = {"version": 1, "name": ir["name"]}
    for key in ("subnet", "description"):
        if ir[key] is not None:
            flow[key] = ir[key]
    flow.update(
        inputs=ir["inputs"], vars=ir["vars"], steps=_steps(ir["steps"]), output=ir["output"]
    )
    return flow


def _ms(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"a duration must be an integer, got {value!r}")
    return f"{value}ms"


def _cid(value: Any) -> str:
    if not isinstance(value, CID):
        raise TypeError(f"expected a link, got {type(value).__name__}")
    return str(value.encode())


def _steps(steps: Any) -> list[dict[str, Any]]:
    if not isinstance(steps, list):
        raise TypeError("steps must be a list")
    return [_step(s) for s in steps]


def _step(node: dict[str, Any], *, compensation: bool = False) -> dict[str, Any]:
    kind = node["kind"]
    keys = KIND_KEYS[kind]
    step: dict[str, Any] = {} if compensation else {"id": node["id"]}
    step["on_error"] = node["on_error"]
    step[kind] = _KIND[kind](node)
    if "with" in keys:
        step["with"] = node["with"]
    if "timeout" in keys and node["timeout_ms"] is not None:
        step["timeout"] = _ms(node["timeout_ms"])
    if "retry" in keys:
        retry = node["retry"]
        step["retry"] = {
            "max_attempts": retry["max_attempts"],
            "backoff": retry["backoff"],
            "delay": _ms(retry["delay_ms"]),
            "jitter": _ms(retry["jitter_ms"]),
        }
        if retry["max_delay_ms"] is not None:
            step["retry"]["max_delay"] = _ms(retry["max_delay_ms"])
    if "critical" in keys:
        step["critical"] = node["critical"]
    if "capabilities" in keys:
        step["capabilities"] = [
            {k: v for k, v in cap.items() if v is not None} for cap in node["capabilities"]
        ]
    if "compensate" in keys and node["compensate"] is not None:
        step["compensate"] = _step(node["compensate"], compensation=True)
    return step


def _http(node: dict[str, Any]) -> dict[str, Any]:
    body = {"method": node["method"], "url": node["url"], "headers": node["headers"]}
    if node["body"] is not None:
        body["body"] = node["body"]
    return body


def _approval(node: dict[str, Any]) -> dict[str, Any]:
    body = {
        "approvers": node["approvers"],
        "quorum": node["quorum"],
        "timeout": _ms(node["timeout_ms"]),
    }
    if node["message"] is not None:
        body["message"] = node["message"]
    return body


_KIND: dict[str, Any] = {
    "run": lambda n: _cid(n["module"]),
    "transform": lambda n: n["value"],
    "validate": lambda n: {"schema": n["schema"], "data": n["data"]},
    "http": _http,
    "sleep": lambda n: _ms(n["duration_ms"]),
    "wait_for": lambda n: {
        "topic": n["topic"],
        "match": n["match"],
        "timeout": _ms(n["timeout_ms"]),
    },
    "approval": _approval,
    "flow": lambda n: _cid(n["flow"]),
    "if": lambda n: {
        "condition": n["condition"],
        "then": _steps(n["then"]),
        "else": _steps(n["else"]),
    },
    "parallel": lambda n: {
        "join": {"n_of_m": n["join"]},
        "branches": {name: _steps(steps) for name, steps in n["branches"].items()},
    },
    "foreach": lambda n: {
        "items": n["items"],
        "max_parallel": n["max_parallel"],
        "max_items": n["max_items"],
        "on_item_error": n["on_item_error"],
        "steps": _steps(n["steps"]),
    },
}
