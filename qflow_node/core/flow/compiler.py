"""Flow source → checked, normalised IR → CID.

One pass collects every step id with its location (for duplicate ids and for the
scope rule), a second builds the IR while checking what the schema cannot: CEL,
references and scope, durations, CIDs, approvers, capabilities, join counts. It reads
the document defensively — shape errors are the schema's to report — and every problem
is collected; the IR is kept only when there are none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, cast

from jsonschema import Draft202012Validator

from qflow_node.codec import CID, MAX_BLOCK_SIZE, Block, CidError, CodecError, dag_block
from qflow_node.core.flow import expr as cel_expr
from qflow_node.core.flow.capabilities import normalise_capabilities
from qflow_node.core.flow.errors import FlowCompileError, FlowError, Path, ResolveError, format_path
from qflow_node.core.flow.ir import FORMAT, FlowIR, RetryIR, StepIR, Template
from qflow_node.core.flow.schema import (
    DEFAULT_MAX_ITEMS,
    HTTP_METHODS,
    KINDS,
    RESERVED_WORDS,
)
from qflow_node.core.flow.schemacheck import schema_errors, show
from qflow_node.core.flow.scope import Loc, StepDef, after, why_not_visible
from qflow_node.core.flow.source import Document, Syntax, parse_source
from qflow_node.core.flow.subflows import FlowResolver, subflow_errors
from qflow_node.core.flow.values import (
    MAX_DURATION_MS,
    duration_ms,
    flow_cid,
    format_duration,
    integer,
    is_module_path,
    module_cid,
    url_host,
)
from qflow_node.identity.keys import IdentityError, public_key_from_did

# Resolves a local module path (as written in `run:`) to the CID of its raw block.
ModuleResolver = Callable[[str], CID]

_ID: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_CID_SHAPE: Final = re.compile(r"b[a-z2-7]{58}")
_DID_SHAPE: Final = re.compile(r"did:key:z[1-9A-HJ-NP-Za-km-z]{1,128}")
_URL_LIKE: Final = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")
_DEFAULT_RETRY: Final[RetryIR] = {
    "max_attempts": 1,
    "backoff": "exponential",
    "delay_ms": 1000,
    "max_delay_ms": None,
    "jitter_ms": 0,
}
_META: Final = Draft202012Validator(Draft202012Validator.META_SCHEMA)


class _At(NamedTuple):
    loc: Loc  # the step's location
    here: Loc  # where its expressions run
    loop: bool  # inside a foreach body


@dataclass(frozen=True, slots=True)
class CompiledFlow:
    ir: FlowIR
    block: Block  # dag_block(ir): the flow's canonical bytes

    @property
    def cid(self) -> CID:
        return self.block.cid


def compile_flow(
    text: str,
    *,
    syntax: Syntax = "auto",
    resolve_module: ModuleResolver | None = None,
    resolve_flow: FlowResolver | None = None,
) -> CompiledFlow:
    """Parse, validate and compile a flow. Raises FlowCompileError listing every problem.

    `resolve_module(path)` turns a `run: ./x.wasm` path into a module CID (raise
    ResolveError to report why it cannot); without it only module CIDs are accepted.
    `resolve_flow(cid)` returns a compiled sub-flow (its decoded IR) or None if unknown;
    with it, sub-flow references are checked to exist and to form no cycle.
    """
    return compile_document(
        parse_source(text, syntax), resolve_module=resolve_module, resolve_flow=resolve_flow
    )


def compile_document(
    doc: Document,
    *,
    resolve_module: ModuleResolver | None = None,
    resolve_flow: FlowResolver | None = None,
) -> CompiledFlow:
    errors = schema_errors(doc)
    compiler = _Compiler(doc, resolve_module)
    ir = compiler.flow()
    errors += compiler.errors
    block: Block | None = None
    if not errors:
        try:
            block = dag_block(ir)
        except CodecError as exc:
            errors.append(FlowError(1, 1, "", f"the compiled flow cannot be encoded: {exc}"))
        else:
            if len(block.data) > MAX_BLOCK_SIZE:
                errors.append(
                    FlowError(
                        1,
                        1,
                        "",
                        f"the compiled flow is {len(block.data)} bytes; "
                        f"a block holds at most {MAX_BLOCK_SIZE}",
                    )
                )
    if resolve_flow is not None:
        root = block.cid if block is not None and not errors else None
        errors += subflow_errors(doc, compiler.subflows, resolve_flow, root)
    if errors or block is None:
        raise FlowCompileError(errors)
    return CompiledFlow(ir, block)


def _literal_source(value: Any) -> str | None:
    """A YAML/JSON scalar where an expression is expected, as CEL source."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if value is None:
        return "null"
    return None  # a list or mapping: the schema reported it


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_ID.fullmatch(value)) and value not in RESERVED_WORDS


def _kind(step: dict[str, Any]) -> str | None:
    kinds = [k for k in KINDS if k in step]
    return kinds[0] if len(kinds) == 1 else None


def _children(step: dict[str, Any], kind: str, path: Path) -> list[tuple[str, Any, Path]]:
    """The nested step lists of a control step in the source: (slot, list, path)."""
    body = step.get(kind)
    if not isinstance(body, dict):
        return []
    here = (*path, kind)
    if kind == "if":
        return [(slot, body[slot], (*here, slot)) for slot in ("then", "else") if slot in body]
    if kind == "parallel" and isinstance(body.get("branches"), dict):
        return [(name, lst, (*here, "branches", name)) for name, lst in body["branches"].items()]
    if kind == "foreach" and "steps" in body:
        return [("do", body["steps"], (*here, "steps"))]
    return []


class _Compiler:
    def __init__(self, doc: Document, resolve_module: ModuleResolver | None) -> None:
        self.doc = doc
        self.resolve_module = resolve_module
        self.errors: list[FlowError] = []
        self.defs: dict[str, StepDef] = {}
        self.by_loc: dict[Loc, StepDef] = {}
        self.modules: dict[str, CID | None] = {}
        self.subflows: list[tuple[Path, CID]] = []

    def report(self, path: Path, message: str, *, at_key: bool = False) -> None:
        self.errors.append(self.doc.error(path, message, at_key=at_key))

    # -- the flow ----------------------------------------------------------------------

    def flow(self) -> FlowIR:
        top = self.doc.value if isinstance(self.doc.value, dict) else {}
        steps_src = top.get("steps")
        self._collect(steps_src, ("steps",), ())
        steps = self._steps(steps_src, ("steps",), (), loop=False)
        count = len(steps_src) if isinstance(steps_src, list) else 0
        if "output" in top:
            output = self._template(top["output"], ("output",), (count,), loop=False)
        else:
            last = steps_src[-1] if isinstance(steps_src, list) and steps_src else None
            last_id = last.get("id") if isinstance(last, dict) else None
            output = f"steps.{last_id}.output" if _valid_id(last_id) else "null"
        inputs = top.get("inputs", {"type": "object"})
        return {
            "format": FORMAT,
            "name": top.get("name", ""),
            "subnet": top.get("subnet"),
            "description": top.get("description"),
            "inputs": self._json_schema(inputs, ("inputs",)),
            "vars": top.get("vars", {}),
            "steps": steps,
            "output": output,
        }

    def _collect(self, steps: Any, path: Path, prefix: Loc) -> None:
        """Record every step id and location; report duplicate ids."""
        if not isinstance(steps, list):
            return
        for i, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            loc, here = (*prefix, i), (*path, i)
            kind = _kind(step) or "?"
            raw_id = step.get("id")
            sid = raw_id if isinstance(raw_id, str) else "?"
            definition = StepDef(sid, kind, loc, here)
            self.by_loc[loc] = definition
            if _valid_id(sid):
                first = self.defs.get(sid)
                if first is not None:
                    at = self.doc.pos((*first.path, "id"))
                    self.report(
                        (*here, "id"),
                        f"duplicate step id {show(sid)} (first at {at.line}:{at.column})",
                    )
                else:
                    self.defs[sid] = definition
            if kind in ("if", "parallel", "foreach"):
                for slot, nested, nested_path in _children(step, kind, here):
                    self._collect(nested, nested_path, (*loc, slot))

    # -- steps -------------------------------------------------------------------------

    def _steps(self, steps: Any, path: Path, prefix: Loc, *, loop: bool) -> list[StepIR]:
        if not isinstance(steps, list):
            return []
        out: list[StepIR] = []
        for i, step in enumerate(steps):
            node = self._step(step, (*path, i), (*prefix, i), (*prefix, i), loop=loop)
            if node is not None:
                out.append(node)
        return out

    def _step(
        self, src: Any, path: Path, loc: Loc, here: Loc, *, loop: bool, owner: str | None = None
    ) -> StepIR | None:
        """One step. `here` is where its expressions run (`loc`, or just after the step a
        compensation belongs to); `owner` is that step's id for a compensation."""
        if not isinstance(src, dict):
            return None
        kind = _kind(src)
        if kind is None:
            return None
        sid = f"{owner}/compensate" if owner is not None else src.get("id")
        sid = sid if isinstance(sid, str) else "?"
        on_error = src.get("on_error", "fail")
        node: dict[str, Any] = {
            "id": sid,
            "kind": kind,
            "on_error": on_error if on_error in ("fail", "continue", "compensate") else "fail",
            "timeout_ms": self._duration(src.get("timeout"), (*path, "timeout"), positive=True),
            "retry": self._retry(src.get("retry"), (*path, "retry")),
            "compensate": None,
            # Only a run step may be critical; the schema names any other that says so.
            "critical": kind == "run" and src.get("critical") is True,
            "capabilities": normalise_capabilities(
                src.get("capabilities"), (*path, "capabilities"), self.report
            ),
        }
        if "compensate" in src and owner is None:
            node["compensate"] = self._step(
                src["compensate"], (*path, "compensate"), loc, after(loc), loop=loop, owner=sid
            )
        build = getattr(self, f"_{kind}")
        node.update(build(src[kind], (*path, kind), _At(loc, here, loop), src, node))
        return cast(StepIR, node)

    def _run(
        self, src: Any, path: Path, at: _At, step: dict[str, Any], node: dict[str, Any]
    ) -> dict[str, Any]:
        if node["critical"]:
            self._check_critical(path[:-1], step, node)
        return {
            "module": self._module(src, path),
            "with": self._template(
                step.get("with", {}), (*path[:-1], "with"), at.here, loop=at.loop
            ),
        }

    def _check_critical(self, path: Path, step: dict[str, Any], node: dict[str, Any]) -> None:
        """A critical step is re-executed by every validator, which must all compute the
        same outcome (docs/consensus.md, "Split locks"): no network access."""
        caps = step.get("capabilities")
        for i, cap in enumerate(caps if isinstance(caps, list) else []):
            if isinstance(cap, dict) and cap.get("op") == "http.fetch":
                self.report(
                    (*path, "critical"),
                    f"step {show(node['id'])} is critical, so it cannot use http.fetch "
                    f"(capabilities[{i}]): every validator re-executes a critical step and "
                    "must get the same outcome",
                    at_key=True,
                )

    def _transform(
        self, src: Any, path: Path, at: _At, step: dict[str, Any], node: dict[str, Any]
    ) -> dict[str, Any]:
        return {"value": self._template(src, path, at.here, loop=at.loop)}

    def _validate(
        self, src: Any, path: Path, at: _At, step: dict[str, Any], node: dict[str, Any]
    ) -> dict[str, Any]:
        body = src if isinstance(src, dict) else {}
        return {
            "schema": self._json_schema(body.get("schema", {}), (*path, "schema")),
            "data": self._expr(body.get("data"), (*path, "data"), at.here, loop=at.loop)
            if "data" in body
            else "",
        }

    def _http(
        self, src: Any, path: Path, at: _At, step: dict[str, Any], node: dict[str, Any]
    ) -> dict[str, Any]:
        body = src if isinstance(src, dict) else {}
        method = body.get("method", "GET")
        method = method if method in HTTP_METHODS else "GET"
        url = (
            self._expr(body["url"], (*path, "url"), at.here, loop=at.loop, url=True)
            if "url" in body
            else ""
        )
        headers: dict[str, str] = {}
        raw_headers = body.get("headers", {})
        for name, value in raw_headers.items() if isinstance(raw_headers, dict) else ():
            lower = name.lower()
            if lower in headers:
                self.report(
                    (*path, "headers", name),
                    f"header {show(name)} is set twice (names are case-insensitive)",
                    at_key=True,
                )
            headers[lower] = self._expr(value, (*path, "headers", name), at.here, loop=at.loop)
        self._check_http_capability(url, method, path, node["capabilities"])
        return {
            "method": method,
            "url": url,
            "headers": headers,
            "body": self._expr(body["body"], (*path, "body"), at.here, loop=at.loop)
            if "body" in body
            else None,
        }

    def _check_http_capability(self, url: str, method: str, path: Path, caps: list[Any]) -> None:
        host: str | None = None
        if url:
            prefix = cel_expr.literal_prefix(url)
            if prefix is not None:
                host, problem = url_host(*prefix)
                if problem:
                    self.report((*path, "url"), problem)
        fetch = next((c for c in caps if c["op"] == "http.fetch"), None)
        if fetch is None:
            hosts = f"[{host}]" if host else "[<host>]"
            self.report(
                path,
                f"an http step needs an http.fetch capability; add "
                f"capabilities: [{{op: http.fetch, hosts: {hosts}, methods: [{method}]}}]",
                at_key=True,
            )
            return
        if host is not None and fetch["hosts"] and host not in fetch["hosts"]:
            self.report(
                (*path, "url"),
                f"host {show(host)} is not in this step's http.fetch capability "
                f"(hosts: {', '.join(fetch['hosts'])})",
            )
        if fetch["methods"] and method not in fetch["methods"]:
            where = (*path, "method") if "method" in (self.doc.value_at(path) or {}) else path
            self.report(
                where,
                f"method {method} is not in this step's http.fetch capability "
                f"(methods: {', '.join(fetch['methods'])})",
                at_key=where == path,
            )

    def _sleep(
        self, src: Any, path: Path, at: _At, step: dict[str, Any], node: dict[str, Any]
    ) -> dict[str, Any]:
        return {"duration_ms": self._duration(src, path, positive=True) or 0}

    def _wait_for(
        self, src: Any, path: Path, at: _At, step: dict[str, Any], node: dict[str, Any]
    ) -> dict[str, Any]:
        body = src if isinstance(src, dict) else {}
        match = body.get("match", "true")
        return {
            "topic": body.get("topic", ""),
            "match": self._expr(match, (*path, "match"), at.here, loop=at.loop, event=True),
            "timeout_ms": self._duration(body.get("timeout"), (*path, "timeout"), positive=True),
        }

    def _approval(
        self, src: Any, path: Path, at: _At, step: dict[str, Any], node: dict[str, Any]
    ) -> dict[str, Any]:
        body = src if isinstance(src, dict) else {}
        approvers: list[str] = []
        raw = body.get("approvers", [])
        for i, did in enumerate(raw if isinstance(raw, list) else []):
            if not isinstance(did, str) or not _DID_SHAPE.fullmatch(did):
                continue  # the schema reported it
            try:
                public_key_from_did(did)
            except IdentityError as exc:
                self.report((*path, "approvers", i), f"not a valid did:key: {exc}")
                continue
            if did in approvers:
                self.report((*path, "approvers", i), f"approver {did} is listed twice")
                continue
            approvers.append(did)
        quorum = integer(body.get("quorum", 1), 1)
        listed = len(raw) if isinstance(raw, list) else 0
        if quorum > listed > 0:
            self.report(
                (*path, "quorum"),
                f"quorum {quorum} is more than the number of approvers ({listed})",
            )
        return {
            "approvers": sorted(approvers),
            "quorum": quorum,
            "message": body.get("message"),
            "timeout_ms": self._duration(body.get("timeout"), (*path, "timeout"), positive=True),
        }

    def _flow(
        self, src: Any, path: Path, at: _At, step: dict[str, Any], node: dict[str, Any]
    ) -> dict[str, Any]:
        cid: CID | None = None
        if isinstance(src, str) and _CID_SHAPE.fullmatch(src):
            try:
                cid = flow_cid(src)
            except CidError as exc:
                self.report(path, f"not a sub-flow CID: {exc}")
            else:
                self.subflows.append((path, cid))
        return {
            "flow": cid,
            "with": self._template(
                step.get("with", {}), (*path[:-1], "with"), at.here, loop=at.loop
            ),
        }

    def _if(
        self, src: Any, path: Path, at: _At, step: dict[str, Any], node: dict[str, Any]
    ) -> dict[str, Any]:
        body = src if isinstance(src, dict) else {}
        return {
            "condition": self._expr(body["condition"], (*path, "condition"), at.here, loop=at.loop)
            if "condition" in body
            else "",
            "then": self._steps(body.get("then"), (*path, "then"), (*at.loc, "then"), loop=at.loop),
            "else": self._steps(
                body.get("else", []), (*path, "else"), (*at.loc, "else"), loop=at.loop
            ),
        }

    def _parallel(
        self, src: Any, path: Path, at: _At, step: dict[str, Any], node: dict[str, Any]
    ) -> dict[str, Any]:
        body = src if isinstance(src, dict) else {}
        raw = body.get("branches")
        branches = {
            name: self._steps(steps, (*path, "branches", name), (*at.loc, name), loop=at.loop)
            for name, steps in (raw.items() if isinstance(raw, dict) else ())
        }
        count = len(branches)
        join = body.get("join", "all")
        need = count if join == "all" else 1
        if isinstance(join, dict) and isinstance(join.get("n_of_m"), int | float):
            need = integer(join["n_of_m"], 1)
            if need > count > 0:
                self.report(
                    (*path, "join"),
                    f"n_of_m requires n ≤ number of branches (got {need} > {count})",
                )
        return {"join": need, "branches": branches}

    def _foreach(
        self, src: Any, path: Path, at: _At, step: dict[str, Any], node: dict[str, Any]
    ) -> dict[str, Any]:
        body = src if isinstance(src, dict) else {}
        return {
            "items": self._expr(body["items"], (*path, "items"), at.here, loop=at.loop)
            if "items" in body
            else "",
            "max_parallel": integer(body.get("max_parallel", 1), 1),
            "max_items": integer(body.get("max_items", DEFAULT_MAX_ITEMS), DEFAULT_MAX_ITEMS),
            "on_item_error": body.get("on_item_error", "stop"),
            "steps": self._steps(body.get("steps"), (*path, "steps"), (*at.loc, "do"), loop=True),
        }

    # -- values ------------------------------------------------------------------------

    def _module(self, src: Any, path: Path) -> CID | None:
        if not isinstance(src, str):
            return None
        if not is_module_path(src):
            try:
                return module_cid(src)
            except CidError as exc:
                self.report(path, f"not a module CID or a .wasm path: {exc}")
                return None
        if self.resolve_module is None:
            self.report(
                path,
                f"local module {show(src)} needs the flow loader to add it to a block store; "
                "give its CID (bafkrei…) instead",
            )
            return None
        if src not in self.modules:
            try:
                self.modules[src] = self.resolve_module(src)
            except ResolveError as exc:
                self.modules[src] = None
                self.report(path, str(exc))
        return self.modules[src]

    def _duration(self, src: Any, path: Path, *, positive: bool) -> int | None:
        if not isinstance(src, str):
            return None
        try:
            ms = duration_ms(src)
        except ValueError:
            return None  # the schema reported it
        if ms > MAX_DURATION_MS:
            self.report(
                path, f"{src} is longer than the maximum of {format_duration(MAX_DURATION_MS)}"
            )
        elif positive and ms == 0:
            self.report(path, "must be longer than 0")
        return ms

    def _retry(self, src: Any, path: Path) -> RetryIR:
        if not isinstance(src, dict):
            return _DEFAULT_RETRY.copy()
        attempts = src.get("max_attempts", 1)
        delay = self._duration(src.get("delay", "1s"), (*path, "delay"), positive=False)
        max_delay = self._duration(src.get("max_delay"), (*path, "max_delay"), positive=True)
        if delay is not None and max_delay is not None and max_delay < delay:
            self.report(
                (*path, "max_delay"),
                f"max_delay ({src['max_delay']}) is shorter than delay ({src.get('delay', '1s')})",
            )
        backoff = src.get("backoff", "exponential")
        return {
            "max_attempts": integer(attempts, 1),
            "backoff": backoff if backoff in ("fixed", "linear", "exponential") else "exponential",
            "delay_ms": delay if delay is not None else 1000,
            "max_delay_ms": max_delay,
            "jitter_ms": self._duration(src.get("jitter", "0s"), (*path, "jitter"), positive=False)
            or 0,
        }

    def _json_schema(self, schema: Any, path: Path) -> dict[str, Any]:
        """A JSON Schema (2020-12) embedded in the flow: valid, and self-contained (a
        remote `$ref` would make validation depend on the network)."""
        if not isinstance(schema, dict):
            return {}
        for error in _META.iter_errors(schema):
            self.report(
                (*path, *error.absolute_path),
                f"invalid JSON Schema: {' '.join(error.message.split())}",
            )
        stack: list[tuple[Any, Path]] = [(schema, path)]
        while stack:
            item, where = stack.pop()
            if isinstance(item, dict):
                for key, value in item.items():
                    if (
                        key in ("$ref", "$dynamicRef")
                        and isinstance(value, str)
                        and not value.startswith("#")
                    ):
                        self.report(
                            (*where, key),
                            f"{key} {show(value)} is not local; "
                            "only references inside the schema (#…) are allowed",
                        )
                    stack.append((value, (*where, key)))
            elif isinstance(item, list):
                stack.extend((value, (*where, i)) for i, value in enumerate(item))
        return schema

    # -- expressions -------------------------------------------------------------------

    def _template(self, src: Any, path: Path, here: Loc, *, loop: bool) -> Template:
        if isinstance(src, dict):
            return {
                key: self._template(value, (*path, key), here, loop=loop)
                for key, value in src.items()
            }
        return self._expr(src, path, here, loop=loop)

    def _expr(
        self, src: Any, path: Path, here: Loc, *, loop: bool, event: bool = False, url: bool = False
    ) -> str:
        """Check a CEL expression where it stands; return its normalised source."""
        source = _literal_source(src)
        if source is None:
            return ""
        if not source.strip():
            if source:  # "" is the schema's (minLength)
                self.report(path, "expression is empty")
            return ""
        problem = cel_expr.check_syntax(source)
        if problem is not None:
            if url and _URL_LIKE.match(source):
                self.report(
                    path,
                    "url is a CEL expression: write the URL as a CEL string literal, "
                    f"e.g. url: '{json.dumps(source.strip())}'",
                )
            else:
                self._at(
                    path, source, problem.line, problem.column, f"invalid CEL: {problem.message}"
                )
            return ""
        try:
            analysis = cel_expr.analyse(source)
        except ValueError as exc:  # the tokenizer disagrees with the CEL parser
            self.report(path, f"cannot analyse this expression: {exc}")
            return ""
        names = [
            *cel_expr.ROOT_NAMES,
            *(cel_expr.LOOP_NAMES if loop else ()),
            *((cel_expr.EVENT_NAME,) if event else ()),
        ]
        for name, offset in analysis.names:
            if name in names or name in cel_expr.BUILTIN_NAMES:
                continue
            if name in cel_expr.LOOP_NAMES:
                message = f"{show(name)} is only defined inside a foreach body"
            elif name == cel_expr.EVENT_NAME:
                message = f"{show(name)} is only defined in wait_for.match"
            else:
                message = f"unknown name {show(name)} (available here: {', '.join(names)})"
            self._at_offset(path, source, offset, message)
        for name, offset in analysis.rebound:
            self._at_offset(
                path,
                source,
                offset,
                f"{show(name)} cannot be used as a macro variable; choose another name",
            )
        for offset in analysis.dynamic:
            self._at_offset(
                path,
                source,
                offset,
                'steps must be followed by .<id> or ["<id>"]: step references must be static',
            )
        for ref in analysis.refs:
            self._check_ref(ref, path, source, here)
        return source.strip()

    def _check_ref(self, ref: cel_expr.StepRef, path: Path, source: str, here: Loc) -> None:
        target = self.defs.get(ref.step)
        if target is None:
            self._at_offset(
                path, source, ref.start, f"unknown step {show(ref.step)} in steps.{ref.step}"
            )
            return
        why = why_not_visible(target, here, self.by_loc)
        if why is not None:
            self._at_offset(path, source, ref.start, why)
        elif ref.field is not None and ref.field not in cel_expr.STEP_FIELDS:
            fields = " and ".join(cel_expr.STEP_FIELDS)
            self._at_offset(
                path,
                source,
                ref.start,
                f"steps.{ref.step} has no field {show(ref.field)} (a step has {fields})",
            )

    def _at_offset(self, path: Path, source: str, offset: int, message: str) -> None:
        before = source[:offset]
        line = before.count("\n") + 1
        self._at(
            path, source, line, offset - (before.rfind("\n") + 1) + 1, message, exact_only=True
        )

    def _at(
        self,
        path: Path,
        source: str,
        line: int,
        column: int,
        message: str,
        *,
        exact_only: bool = False,
    ) -> None:
        """Report at the exact character when the expression is on one line of the source."""
        lines = source.split("\n")
        offset = sum(len(text) + 1 for text in lines[: line - 1]) + column - 1
        pos = self.doc.inner_pos(path, offset)
        if pos is None:
            if not exact_only and len(lines) > 1:
                message += f" (line {line}, column {column} of the expression)"
            elif not exact_only:
                message += f" (column {column} of the expression)"
            self.report(path, message)
            return
        self.errors.append(FlowError(pos.line, pos.column, format_path(path), message))
