"""Sub-flow references against a resolver: found, a flow, acyclic, not too deep."""

from __future__ import annotations

from typing import Any

import pytest

from qflow_node.codec import CID, dag_block
from qflow_node.core.flow import (
    FORMAT,
    MAX_SUBFLOW_DEPTH,
    FlowCompileError,
    ResolveError,
    compile_flow,
)
from qflow_node.core.flow.testing import DictFlows


def runs(*cids: CID) -> dict[str, Any]:
    """A minimal compiled flow running these sub-flows."""
    return {
        "format": FORMAT,
        "steps": [{"id": f"s{i}", "kind": "flow", "flow": c} for i, c in enumerate(cids)],
    }


def cid(n: int) -> CID:
    return dag_block({"n": n}).cid


def source(*cids: CID) -> str:
    steps = "".join(f"  - id: s{i}\n    flow: {c.encode()}\n" for i, c in enumerate(cids))
    return f"name: parent\nsteps:\n{steps}"


def errors(text: str, flows: Any) -> list[str]:
    with pytest.raises(FlowCompileError) as info:
        compile_flow(text, resolve_flow=flows)
    return [str(e) for e in info.value.errors]


def test_found_subflows_compile_and_links_are_kept() -> None:
    a, b = cid(1), cid(2)
    compiled = compile_flow(source(a, b), resolve_flow=DictFlows({a: runs(b), b: runs()}))
    assert [s["flow"] for s in compiled.ir["steps"]] == [a, b]  # type: ignore[typeddict-item]


def test_without_a_resolver_only_the_form_is_checked() -> None:
    compile_flow(source(cid(1)))


def test_missing_and_not_flows() -> None:
    a, b, c = cid(1), cid(2), cid(3)
    flows = DictFlows({a: runs(b), c: {"format": "something else"}})
    assert errors(source(a, c), flows) == [
        f"4:11: steps[0].flow: sub-flow {a.encode()} → {b.encode()}: not found",
        f"6:11: steps[1].flow: sub-flow {c.encode()}: "
        "not a compiled flow (no format 'qflow.flow/1')",
    ]


def test_resolver_errors_are_reported_at_the_reference() -> None:
    def broken(_: CID) -> Any:
        raise ResolveError("the store is corrupt")

    a = cid(1)
    assert errors(source(a), broken) == [
        f"4:11: steps[0].flow: sub-flow {a.encode()}: the store is corrupt"
    ]


def test_a_cycle_between_other_flows() -> None:
    a, b = cid(1), cid(2)
    assert errors(source(a), DictFlows({a: runs(b), b: runs(a)})) == [
        f"4:11: steps[0].flow: sub-flow cycle: {a.encode()} → {b.encode()} → {a.encode()}"
    ]


def test_a_path_back_to_the_flow_being_compiled() -> None:
    a = cid(1)
    parent = compile_flow(source(a), resolve_flow=DictFlows({a: runs()}))
    # A resolver that (wrongly or by another naming scheme) says `a` runs the parent.
    assert errors(source(a), DictFlows({a: runs(parent.cid)})) == [
        f"4:11: steps[0].flow: sub-flow cycle: this flow → {a.encode()} → this flow"
    ]


def test_nesting_depth_is_bounded() -> None:
    chain = [cid(n) for n in range(MAX_SUBFLOW_DEPTH + 1)]
    flows = DictFlows(
        {c: runs(chain[i + 1]) if i + 1 < len(chain) else runs() for i, c in enumerate(chain)}
    )
    (message,) = errors(source(chain[0]), flows)
    assert message.startswith(
        f"4:11: steps[0].flow: sub-flows nest deeper than {MAX_SUBFLOW_DEPTH} levels: "
    )
    compile_flow(source(chain[1]), resolve_flow=flows)  # one level less is fine


def test_shared_subflows_are_walked_once() -> None:
    leaf = cid(0)
    layers = [[cid(100 * d + i) for i in range(4)] for d in range(1, 10)]
    flows: dict[CID, Any] = {leaf: runs()}
    below = [leaf]
    for layer in reversed(layers):
        flows |= {c: runs(*below) for c in layer}
        below = layer
    asked: list[CID] = []
    resolver = DictFlows(flows)

    def counting(c: CID) -> Any:
        asked.append(c)
        return resolver(c)

    compile_flow(source(*layers[0]), resolve_flow=counting)
    assert len(asked) == len(flows)  # 4^9 paths, each flow resolved once
