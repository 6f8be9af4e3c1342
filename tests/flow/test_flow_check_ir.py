"""check_ir: a compiled flow from elsewhere is accepted exactly when it is what
compiling its own source gives."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qflow_node.codec import dag_block, decode_block, parse_cid
from qflow_node.core.flow import FlowCompileError, check_ir, decompile
from qflow_node.flow_loader import load_flow

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "flows").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_ir_checks(path: Path) -> None:
    compiled = load_flow(path).compiled
    received = decode_block(compiled.cid, compiled.block.data)
    assert check_ir(received) == compiled.ir
    assert decompile(received)["steps"][0]["id"] == compiled.ir["steps"][0]["id"]


def errors(obj: Any) -> list[str]:
    with pytest.raises(FlowCompileError) as info:
        check_ir(obj)
    return [str(e) for e in info.value.errors]


ORDER = load_flow(EXAMPLES[0].parent / "order-processing.yaml").compiled.ir


def order() -> Any:
    return copy.deepcopy(ORDER)


def test_tampered_irs_are_refused_with_a_reason() -> None:
    assert errors([]) == ["1:1: not a compiled flow (format must be 'qflow.flow/1')"]
    ir = order()
    del ir["steps"][1]["retry"]
    assert errors(ir) == ["1:1: malformed compiled flow: KeyError 'retry'"]
    ir = order()
    ir["steps"][1]["retry"]["max_attempts"] = 0
    assert errors(ir) == ["1:1: steps[1].retry.max_attempts: must be ≥ 1 (got 0)"]
    ir = order()
    ir["steps"][2]["with"]["values"] = "steps.confirm.output"
    assert errors(ir)[0].startswith('1:1: steps[2].with.values: step "confirm" has not run yet')
    ir = order()
    ir["steps"][0]["retry"]["max_attempts"] = 5  # validate steps take no retry
    assert errors(ir) == ["1:1: not in compiled form: compiling it again gives a different flow"]
    ir = order()
    ir["steps"][4]["branches"]["payment"][0]["capabilities"][0]["hosts"] = ["LOCALHOST"]
    assert errors(ir) == ["1:1: not in compiled form: compiling it again gives a different flow"]
    ir = order()
    ir["steps"][1]["module"] = parse_cid(
        "bafyreigmz63lcwqi3l5tvvwdgbpjovfkn2zd2clwm63pd45q4jg3n2vzs4"
    )
    assert errors(ir) == [
        "1:1: steps[1].run: not a module CID or a .wasm path: "
        "bafyreigmz63lcwqi3l5tvvwdgbpjovfkn2zd2clwm63pd45q4jg3n2vzs4 "
        "is a dag-cbor CID; a wasm module is a raw block (bafkrei…)"
    ]


LEAVES: st.SearchStrategy[Any] = (
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5) | st.just([]) | st.just({})
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_tampering_never_crashes(data: st.DataObject) -> None:
    ir = order()
    node: Any = ir
    while isinstance(node, dict | list) and node and data.draw(st.integers(0, 3)):
        key = data.draw(
            st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node)))
        )
        if not isinstance(node[key], dict | list) or not node[key]:
            break
        node = node[key]
    if isinstance(node, dict) and node:
        node[data.draw(st.sampled_from(sorted(node)))] = data.draw(LEAVES)
    try:
        assert dag_block(check_ir(ir)).cid == dag_block(ir).cid
    except FlowCompileError as exc:
        assert exc.errors
