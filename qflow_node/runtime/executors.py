"""The step executors a driver needs: wasm modules in the sandbox and HTTP requests.

They know nothing of where they run (one node or a network): a RunStep and the
execution's variables come in, a StepOutcome comes out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from qflow_node.codec import CID
from qflow_node.core.engine import RunStep, error
from qflow_node.core.engine.events import STEP_COMPLETED, STEP_FAILED, Event
from qflow_node.core.engine.records import json_bytes
from qflow_node.runtime.grants import LocalAuthority
from qflow_node.sandbox import HTTP_FETCH, Limits, Sandbox, StepState, client_id_for, derive_seed
from qflow_node.sandbox.httpcall import HttpResponse, parse_request, send

HTTP_TIMEOUT_S = 30.0
IDEMPOTENCY_HEADER = "idempotency-key"
MAX_HTTP_RESPONSE = 4 << 20


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """A finished attempt: `output` are the exact bytes of the output JSON (the payload
    block), `value` their parsed form; or `error` ({kind, message})."""

    output: bytes | None = None
    value: Any = None
    error: dict[str, Any] | None = None
    delta: bytes | None = None

    @classmethod
    def ok(
        cls, value: Any, *, output: bytes | None = None, delta: bytes | None = None
    ) -> StepOutcome:
        return cls(json_bytes(value) if output is None else output, value, None, delta)

    @classmethod
    def failed(cls, kind: str, message: str) -> StepOutcome:
        return cls(error=error(kind, message))

    def event(self, action: RunStep, now: int) -> Event:
        """The event that records this run of `action`: completed with its value, or
        failed."""
        if self.error is not None:
            return Event(STEP_FAILED, action.instance, action.attempt, now, self.error)
        return Event(
            STEP_COMPLETED, action.instance, action.attempt, now, self.value, delta=self.delta
        )


def run_wasm(
    sandbox: Sandbox,
    action: RunStep,
    *,
    exec_id: CID,
    vars_update: bytes,
    authority: LocalAuthority,
) -> StepOutcome:
    step = action.step
    assert step["kind"] == "run"
    seed = derive_seed(exec_id, action.instance, action.attempt)
    limits = None
    if action.timeout_ms is not None:
        limits = Limits(timeout=action.timeout_ms / 1000)
    authorizer = authority.authorizer(
        step["capabilities"], exec=exec_id.encode(), step=action.instance
    )
    result = sandbox.run(
        step["module"],
        json_bytes(action.input),
        limits=limits,
        authorizer=authorizer,
        seed=seed,
        state=StepState(vars_update, client_id=client_id_for(seed)),
    )
    if result.failure is not None:
        return StepOutcome.failed(str(result.failure.kind), result.failure.message)
    assert result.output is not None
    return StepOutcome.ok(result.output_value(), output=result.output, delta=result.state_delta)


def idempotency_key(exec_id: CID, instance: str, attempt: int) -> str:
    """The same on every node for one attempt, different for each retry."""
    return f"{exec_id.encode()}/{instance}/{attempt}"


def run_http(
    client: httpx.Client, action: RunStep, *, exec_id: CID, authority: LocalAuthority
) -> StepOutcome:
    """The request of an http step under its http.fetch capability. The outcome is
    recorded and never re-executed: HTTP is not deterministic.

    Unless the flow sets its own, the request carries `Idempotency-Key:
    <exec>/<step instance>/<attempt>`: if the node running it dies after sending and
    another node takes the attempt over, the service sees the same key twice and can
    answer the retry without acting twice (the IETF idempotency-key convention)."""
    step = action.step
    spec = action.input
    headers = {k: v if isinstance(v, str) else json.dumps(v) for k, v in spec["headers"].items()}
    if not any(name.lower() == IDEMPOTENCY_HEADER for name in headers):
        headers[IDEMPOTENCY_HEADER] = idempotency_key(exec_id, action.instance, action.attempt)
    body = ""
    if spec["body"] is not None:
        body = json_bytes(spec["body"]).decode()
        headers.setdefault("content-type", "application/json")
    request = parse_request(
        json.dumps({"method": spec["method"], "url": spec["url"], "headers": headers, "body": body})
    )
    if request is None:
        return StepOutcome.failed("http", f"not a valid request: {spec['method']} {spec['url']}")
    authorizer = authority.authorizer(
        step["capabilities"], exec=exec_id.encode(), step=action.instance
    )
    if authorizer is None:
        return StepOutcome.failed("capability_denied", "the step has no http.fetch capability")
    decision = authorizer.authorize(
        HTTP_FETCH,
        {
            "host": request.host,
            "method": request.method,
            "url": request.url_text,
            "bytes": len(request.body),
        },
    )
    if not decision.allowed:
        return StepOutcome.failed("capability_denied", decision.reason or "not allowed")
    seconds = HTTP_TIMEOUT_S if action.timeout_ms is None else action.timeout_ms / 1000
    outcome = send(client, request, seconds, MAX_HTTP_RESPONSE)
    if not isinstance(outcome, HttpResponse):
        return StepOutcome.failed("http", f"{request.method} {request.url_text}: no response")
    text = outcome.body.decode("utf-8", "replace")
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = text
    value = {"status": outcome.status, "headers": outcome.headers, "body": parsed}
    if outcome.status >= 400:
        return StepOutcome.failed(
            "http_status", f"{request.method} {request.url_text}: HTTP {outcome.status}"
        )
    return StepOutcome.ok(value)
