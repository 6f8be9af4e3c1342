"""Each construct of the flow language, parsed and compiled to its exact IR."""

from __future__ import annotations

from typing import Any

import pytest

from qflow_node.codec import decode_dag, parse_cid
from qflow_node.core.flow import FORMAT, compile_flow
from qflow_node.core.flow.testing import FakeModules

RETRY0 = {
    "max_attempts": 1,
    "backoff": "exponential",
    "delay_ms": 1000,
    "max_delay_ms": None,
    "jitter_ms": 0,
}
DID1 = "did:key:z6MkjEvoemobV2cbn4c6ha61qSckQMjefQKuoRBnNCRakjpR"
DID2 = "did:key:z6MkkBPYdMyzcYZ82316KGBobVXJL619wybD692WpZaPQSBg"
SUB = "bafyreidy63ak75ge5w3uujyzmic5pe6ycij6fpzh4sszncacdth4stmcmq"
MODULE = "bafkreihu3kd5uwpw3lhxfz2xclgoz5sqfrq6ypfiq4jseprbwcxvnn2bjq"


def node(sid: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "kind": kind,
        "on_error": "fail",
        "timeout_ms": None,
        "retry": RETRY0,
        "compensate": None,
        "critical": False,
        "capabilities": [],
        **fields,
    }


def flow(steps: list[dict[str, Any]], output: Any, **top: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "name": "t",
        "subnet": None,
        "description": None,
        "inputs": {"type": "object"},
        "vars": {},
        "steps": steps,
        "output": output,
        **top,
    }


def ir_of(steps_yaml: str, **kwargs: Any) -> Any:
    compiled = compile_flow("name: t\nsteps:\n" + steps_yaml, **kwargs)
    assert decode_dag(compiled.block.data) == compiled.ir  # what is stored is the IR
    return compiled.ir


def test_transform_and_metadata() -> None:
    text = """
version: 1
name: meta
subnet: shop
description: A flow.
inputs: {type: object, required: [x]}
vars: {count: 0, tags: [a]}
steps:
  - id: double
    transform: inputs.x * 2
output: {twice: steps.double.output, fixed: 3}
"""
    assert compile_flow(text).ir == flow(
        [node("double", "transform", value="inputs.x * 2")],
        {"twice": "steps.double.output", "fixed": "3"},
        name="meta",
        subnet="shop",
        description="A flow.",
        inputs={"type": "object", "required": ["x"]},
        vars={"count": 0, "tags": ["a"]},
    )


def test_run_by_cid_and_by_path() -> None:
    modules = FakeModules()
    ir = ir_of(
        f"""
  - id: a
    run: {MODULE}
  - id: b
    run: ../steps/x.wasm
    with:
      n: 1
      nested: {{flag: true, none: null, name: inputs.name}}
    timeout: 1m30s
    critical: true
""",
        resolve_module=modules,
    )
    assert modules.asked == ["../steps/x.wasm"]
    assert ir["steps"] == [
        node("a", "run", module=parse_cid(MODULE), **{"with": {}}),
        node(
            "b",
            "run",
            module=FakeModules.cid("../steps/x.wasm"),
            timeout_ms=90_000,
            critical=True,
            **{
                "with": {
                    "n": "1",
                    "nested": {"flag": "true", "none": "null", "name": "inputs.name"},
                }
            },
        ),
    ]
    assert ir["output"] == "steps.b.output"


def test_run_with_a_single_expression() -> None:
    ir = ir_of(f"  - id: a\n    run: {MODULE}\n    with: '{{\"k\": inputs}}'\n")
    assert ir["steps"][0]["with"] == '{"k": inputs}'


def test_validate() -> None:
    ir = ir_of("""
  - id: v
    validate:
      schema: {type: object, properties: {n: {type: integer, minimum: 0.5}}}
      data: inputs.payload
""")
    assert ir["steps"] == [
        node(
            "v",
            "validate",
            schema={"type": "object", "properties": {"n": {"type": "integer", "minimum": 0.5}}},
            data="inputs.payload",
        )
    ]


def test_http() -> None:
    ir = ir_of("""
  - id: h
    http:
      method: POST
      url: '"https://API.example.com/v1/" + inputs.id'
      headers: {Content-Type: '"application/json"', X-Count: 2}
      body: inputs.payload
    capabilities:
      - op: http.fetch
        hosts: [API.Example.com, other.example]
        methods: [POST, GET]
        max_bytes: 1024
    retry: {max_attempts: 4, backoff: linear, delay: 250ms, max_delay: 2s, jitter: 100ms}
""")
    assert ir["steps"] == [
        node(
            "h",
            "http",
            method="POST",
            url='"https://API.example.com/v1/" + inputs.id',
            headers={"content-type": '"application/json"', "x-count": "2"},
            body="inputs.payload",
            capabilities=[
                {
                    "op": "http.fetch",
                    "hosts": ["api.example.com", "other.example"],
                    "methods": ["GET", "POST"],
                    "max_bytes": 1024,
                    "max_response_bytes": None,
                }
            ],
            retry={
                "max_attempts": 4,
                "backoff": "linear",
                "delay_ms": 250,
                "max_delay_ms": 2000,
                "jitter_ms": 100,
            },
        )
    ]


def test_sleep_wait_for_and_approval() -> None:
    ir = ir_of(f"""
  - id: pause
    sleep: 1h30m
  - id: paid
    wait_for: {{topic: payments/settled, match: event.order == inputs.order, timeout: 2h}}
  - id: any_event
    wait_for: {{topic: pings, timeout: 10s}}
    on_error: continue
  - id: ok
    approval:
      approvers: [{DID2}, {DID1}]
      quorum: 2
      timeout: 3d
      message: Approve?
  - id: one
    approval: {{approvers: [{DID1}], timeout: 1d}}
""")
    assert ir["steps"] == [
        node("pause", "sleep", duration_ms=5_400_000),
        node(
            "paid",
            "wait_for",
            topic="payments/settled",
            match="event.order == inputs.order",
            timeout_ms=7_200_000,
        ),
        node(
            "any_event",
            "wait_for",
            topic="pings",
            match="true",
            timeout_ms=10_000,
            on_error="continue",
        ),
        node(
            "ok",
            "approval",
            approvers=[DID1, DID2],
            quorum=2,
            message="Approve?",
            timeout_ms=259_200_000,
        ),
        node("one", "approval", approvers=[DID1], quorum=1, message=None, timeout_ms=86_400_000),
    ]


def test_subflow() -> None:
    ir = ir_of(
        f"  - id: sub\n    flow: {SUB}\n    with: {{who: inputs.name}}\n"
        "    retry: {max_attempts: 2}\n"
    )
    assert ir["steps"] == [
        node(
            "sub",
            "flow",
            flow=parse_cid(SUB),
            retry={**RETRY0, "max_attempts": 2},
            **{"with": {"who": "inputs.name"}},
        )
    ]


def test_if_else() -> None:
    ir = ir_of("""
  - id: route
    if:
      condition: inputs.n > 3
      then:
        - {id: big, transform: '"big"'}
      else:
        - {id: small, transform: '"small"'}
    timeout: 5s
  - id: only_then
    if: {condition: true, then: [{id: yes, transform: 1}]}
""")
    assert ir["steps"] == [
        node(
            "route",
            "if",
            condition="inputs.n > 3",
            then=[node("big", "transform", value='"big"')],
            timeout_ms=5000,
            **{"else": [node("small", "transform", value='"small"')]},
        ),
        node(
            "only_then",
            "if",
            condition="true",
            then=[node("yes", "transform", value="1")],
            **{"else": []},
        ),
    ]


@pytest.mark.parametrize(("join", "need"), [("all", 3), ("any", 1), ("{n_of_m: 2}", 2), (None, 3)])
def test_parallel_join(join: str | None, need: int) -> None:
    join_line = f"      join: {join}\n" if join else ""
    ir = ir_of(f"""
  - id: fan
    parallel:
{join_line}      branches:
        b: [{{id: b1, transform: 2}}]
        a: [{{id: a1, transform: 1}}, {{id: a2, transform: steps.a1.output}}]
        c: [{{id: c1, sleep: 1s}}]
""")
    assert ir["steps"] == [
        node(
            "fan",
            "parallel",
            join=need,
            branches={
                "a": [
                    node("a1", "transform", value="1"),
                    node("a2", "transform", value="steps.a1.output"),
                ],
                "b": [node("b1", "transform", value="2")],
                "c": [node("c1", "sleep", duration_ms=1000)],
            },
        )
    ]


def test_foreach() -> None:
    ir = ir_of("""
  - id: each
    foreach:
      items: inputs.list
      max_parallel: 4
      max_items: 50
      on_item_error: collect
      steps:
        - {id: square, transform: item * item}
        - {id: label, transform: 'string(index) + ":" + string(steps.square.output)'}
  - id: defaults
    foreach: {items: '[1]', steps: [{id: one, transform: item}]}
""")
    assert ir["steps"] == [
        node(
            "each",
            "foreach",
            items="inputs.list",
            max_parallel=4,
            max_items=50,
            on_item_error="collect",
            steps=[
                node("square", "transform", value="item * item"),
                node(
                    "label", "transform", value='string(index) + ":" + string(steps.square.output)'
                ),
            ],
        ),
        node(
            "defaults",
            "foreach",
            items="[1]",
            max_parallel=1,
            max_items=1000,
            on_item_error="stop",
            steps=[node("one", "transform", value="item")],
        ),
    ]


def test_retry_on_error_and_compensation() -> None:
    ir = ir_of(f"""
  - id: charge
    run: {MODULE}
    with: {{amount: inputs.amount}}
    retry: {{max_attempts: 5, backoff: fixed, delay: 2s, jitter: 1s}}
    compensate:
      run: {MODULE}
      with: {{refund: steps.charge.output}}
      retry: {{max_attempts: 3}}
      on_error: continue
  - id: ship
    run: {MODULE}
    on_error: compensate
""")
    cid = parse_cid(MODULE)
    assert ir["steps"] == [
        node(
            "charge",
            "run",
            module=cid,
            retry={
                "max_attempts": 5,
                "backoff": "fixed",
                "delay_ms": 2000,
                "max_delay_ms": None,
                "jitter_ms": 1000,
            },
            compensate=node(
                "charge/compensate",
                "run",
                module=cid,
                on_error="continue",
                retry={**RETRY0, "max_attempts": 3},
                **{"with": {"refund": "steps.charge.output"}},
            ),
            **{"with": {"amount": "inputs.amount"}},
        ),
        node("ship", "run", module=cid, on_error="compensate", **{"with": {}}),
    ]


def test_capabilities_are_normalised() -> None:
    ir = ir_of(f"""
  - id: r
    run: {MODULE}
    capabilities:
      - {{op: log, max_bytes: 100}}
      - {{op: block.put}}
      - {{op: state.set, key_prefixes: [b/, a/]}}
      - {{op: state.get, key_prefix: ""}}
      - {{op: block.get}}
      - {{op: http.fetch, hosts: [Example.COM]}}
""")
    assert ir["steps"][0]["capabilities"] == [
        {
            "op": "http.fetch",
            "hosts": ["example.com"],
            "methods": ["GET"],
            "max_bytes": None,
            "max_response_bytes": None,
        },
        {"op": "state.get", "key_prefixes": [""]},
        {"op": "state.set", "key_prefixes": ["a/", "b/"], "max_bytes": None},
        {"op": "block.get"},
        {"op": "block.put", "codecs": ["dag-cbor", "raw"], "max_bytes": None},
        {"op": "log", "max_bytes": 100},
    ]


def test_expressions_are_trimmed_and_scalars_become_cel_literals() -> None:
    ir = ir_of("""
  - id: a
    transform: |
      inputs.x
        + 1
  - id: b
    transform: 2.5
  - id: c
    transform: false
  - id: d
    transform: null
""")
    assert [s["value"] for s in ir["steps"]] == ["inputs.x\n  + 1", "2.5", "false", "null"]


def test_default_output_is_the_last_step_output() -> None:
    assert (
        ir_of("  - {id: a, transform: 1}\n  - {id: z, transform: 2}\n")["output"]
        == "steps.z.output"
    )


def test_integral_floats_in_integer_fields_are_integers() -> None:
    """JSON Schema's `integer` accepts 3.0; the IR must hold 3 (same flow as `3`)."""
    floats = f"""
  - id: a
    run: {MODULE}
    retry: {{max_attempts: 3.0}}
    capabilities: [{{op: log, max_bytes: 10.0}}]
  - id: b
    foreach: {{items: '[1]', max_parallel: 2.0, max_items: 5.0, steps: [{{id: c, transform: 1}}]}}
  - id: p
    parallel: {{join: {{n_of_m: 1.0}}, branches: {{x: [{{id: d, transform: 1}}]}}}}
  - id: ap
    approval: {{approvers: [{DID1}], quorum: 1.0, timeout: 1s}}
"""
    as_floats = compile_flow("name: t\nsteps:\n" + floats)
    as_ints = compile_flow("name: t\nsteps:\n" + floats.replace(".0", ""))
    assert as_floats.block == as_ints.block
    steps: Any = as_ints.ir["steps"]
    assert steps[0]["retry"]["max_attempts"] == 3
    assert steps[0]["capabilities"] == [{"op": "log", "max_bytes": 10}]
    assert (
        steps[1]["max_parallel"],
        steps[1]["max_items"],
        steps[2]["join"],
        steps[3]["quorum"],
    ) == (2, 5, 1, 1)
