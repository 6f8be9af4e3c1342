"""`critical: true`: only on run steps, never with http.fetch, false everywhere else in
the IR; and flows that do not use it keep the CIDs they had before it was restricted."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from qflow_node.codec import decode_block
from qflow_node.core.flow import FlowCompileError, check_ir, compile_flow, walk
from qflow_node.core.flow.testing import FakeModules
from qflow_node.flow_loader import load_flow

MODULE = "bafkreihu3kd5uwpw3lhxfz2xclgoz5sqfrq6ypfiq4jseprbwcxvnn2bjq"
DID = "did:key:z6MkjEvoemobV2cbn4c6ha61qSckQMjefQKuoRBnNCRakjpR"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "flows"
NOT_RUN = "cannot be critical: only a run step (a deterministic wasm module, which every "
NOT_RUN += "validator re-executes) may set critical"

# The examples' CIDs from before `critical` was limited to run steps (every step's IR has
# carried `critical: false` since the language's first version, so a flow that does not
# set it compiles to the same bytes). saga.yaml is not here: it set `critical: true` on an
# http step, which is refused now.
GOLDEN = {
    "approval.yaml": "bafyreiaimclb3eg5bdibpah6kri2phrqhabaibpzmjv7xr4x64udquyt5q",
    "foreach.yaml": "bafyreih6o5647gim2avjdzvnf5qos7jixlx6idz22krg5qokrwzestv46y",
    "greet.json": "bafyreidy63ak75ge5w3uujyzmic5pe6ycij6fpzh4sszncacdth4stmcmq",
    "greet.yaml": "bafyreidy63ak75ge5w3uujyzmic5pe6ycij6fpzh4sszncacdth4stmcmq",
    "http.yaml": "bafyreianq3fjitp5yuhkaca7jb6oxa6fq3qkmf22w7ggsjrzp6icjkb2bu",
    "if.yaml": "bafyreieozt6vifuuh6oj43ss34wdns4p5hvzho4qwkl7biot3iw6aracsq",
    "order-processing.yaml": "bafyreifhpr3jkgmznpxjhjq5dfsy7wxh472nznfc4ben26j7cvvwkqvx24",
    "parallel.yaml": "bafyreiahuvtun2dbvhhfawzpbzqavl6s4pwojuijupvwdeztgsa5tmyw6a",
    "run.yaml": "bafyreibjsp6wqger5x65up3az5ustt4vse62y4waorzhhsuv7fdjkwxwk4",
    "sleep.yaml": "bafyreihnabp7p6gmg7vwzyvxty5nrwasv653yksw3lkpnettksukf45ydu",
    "spin-chain.yaml": "bafyreigdsx4mkil5lco2cdgrkvujclqdcv2yc4zgjivv5dp5trp6tj75ie",
    "subflow.yaml": "bafyreifkchirixkrghina4nlg2mljgwxuylrrxk33ozgen567qngba7s6m",
    "validate.yaml": "bafyreiff774jcyz2g74weqmr43gtxetyvwtmi7wcwyurktsixq7mwvrddm",
    "wait-for.yaml": "bafyreihrzgfecb43crmxyyrkztvpec2ygquzs7dldooxmvt4ji5zyjifke",
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_flows_without_critical_keep_their_cids(name: str) -> None:
    compiled = load_flow(EXAMPLES / name).compiled
    assert compiled.cid.encode() == GOLDEN[name]
    assert all(step["critical"] is False for step in walk(compiled.ir["steps"]))


def errors(text: str) -> list[str]:
    with pytest.raises(FlowCompileError) as info:
        compile_flow(text, resolve_module=FakeModules())
    return [str(e) for e in info.value.errors]


def steps_of(text: str) -> list[Any]:
    return list(walk(compile_flow(text, resolve_module=FakeModules()).ir["steps"]))


def test_a_run_step_may_be_critical_and_defaults_to_not() -> None:
    steps = steps_of(f"""
name: t
steps:
  - id: quote
    run: {MODULE}
  - id: pay
    run: ./pay.wasm
    critical: true
    capabilities: [{{op: state.set, key_prefix: pay/}}, {{op: log}}, {{op: block.put}}]
    compensate:
      run: ./refund.wasm
      critical: true
  - id: note
    run: {MODULE}
    critical: false
  - id: total
    transform: steps.pay.output
""")
    assert [(s["id"], s["kind"], s["critical"]) for s in steps] == [
        ("quote", "run", False),
        ("pay", "run", True),
        ("pay/compensate", "run", True),
        ("note", "run", False),
        ("total", "transform", False),
    ]


def test_written_false_and_left_out_are_one_flow() -> None:
    text = "name: t\nsteps:\n  - id: a\n    run: " + MODULE + "\n"
    assert (
        compile_flow(text).cid
        == compile_flow(text + "    critical: false\n").cid
        != compile_flow(text + "    critical: true\n").cid
    )


@pytest.mark.parametrize(
    ("kind", "body", "article"),
    [
        ("http", "\n      url: '\"https://a.example/\"'", "an"),
        ("transform", " inputs.x", "a"),
        ("sleep", " 5s", "a"),
        ("flow", " bafyreidy63ak75ge5w3uujyzmic5pe6ycij6fpzh4sszncacdth4stmcmq", "a"),
        ("if", "\n      condition: 'true'\n      then: [{id: x, transform: '1'}]", "an"),
        ("approval", f"\n      approvers: [{DID}]\n      timeout: 1h", "an"),
    ],
)
def test_other_kinds_may_not_be_critical(kind: str, body: str, article: str) -> None:
    text = f"name: t\nsteps:\n  - id: s\n    {kind}:{body}\n"
    if kind == "http":
        text += "    capabilities: [{op: http.fetch, hosts: [a.example]}]\n"
    line = text.count("\n") + 1
    # Even `critical: false` is a key the kind does not take.
    for value in ("true", "false"):
        assert errors(text + f"    critical: {value}\n") == [
            f'{line}:5: steps[0].critical: step "s" is {article} {kind} step and {NOT_RUN}'
        ]


def test_a_critical_compensation_must_be_a_run_step() -> None:
    assert errors(f"""
name: t
steps:
  - id: pay
    run: {MODULE}
    compensate:
      http: {{method: DELETE, url: '"https://a.example/"'}}
      capabilities: [{{op: http.fetch, hosts: [a.example], methods: [DELETE]}}]
      critical: true
""") == [f'9:7: steps[0].compensate.critical: step "pay/compensate" is an http step and {NOT_RUN}']


def test_a_critical_step_may_not_fetch() -> None:
    assert errors(f"""
name: t
steps:
  - id: pay
    run: {MODULE}
    capabilities: [{{op: log}}, {{op: http.fetch, hosts: [rates.example]}}]
    critical: true
""") == [
        '7:5: steps[0].critical: step "pay" is critical, so it cannot use http.fetch '
        "(capabilities[1]): every validator re-executes a critical step and must get the "
        "same outcome"
    ]
    # Not critical: fetching is fine.
    assert (
        steps_of(f"""
name: t
steps:
  - id: pay
    run: {MODULE}
    capabilities: [{{op: http.fetch, hosts: [rates.example]}}]
""")[0]["critical"]
        is False
    )


def test_check_ir_keeps_critical_run_steps_and_refuses_critical_elsewhere() -> None:
    compiled = compile_flow(f"""
name: t
steps:
  - id: pay
    run: {MODULE}
    critical: true
  - id: notify
    http: {{url: '"https://a.example/"'}}
    capabilities: [{{op: http.fetch, hosts: [a.example]}}]
""")
    received = decode_block(compiled.cid, compiled.block.data)
    assert check_ir(received) == compiled.ir
    assert received["steps"][0]["critical"] is True
    tampered = copy.deepcopy(received)
    tampered["steps"][1]["critical"] = True  # an http step
    with pytest.raises(FlowCompileError, match="not in compiled form"):
        check_ir(tampered)
