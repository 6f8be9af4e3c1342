"""Properties: replaying the recorded events of a run gives the live state; the order in
which concurrent branch records arrive does not change the final state."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from qflow_node.core.engine import Event, RunStep, fold
from qflow_node.core.engine.testing import completed, failed, flow, simulate, started

FLOWS = {
    "mixed": """
name: mixed
steps:
  - id: first
    run: a.wasm
    with: {n: inputs.n}
    retry: {max_attempts: 3, backoff: linear, delay: 1s, jitter: 100ms}
    on_error: continue
    compensate: {run: undo.wasm}
  - id: fan
    parallel:
      join: {n_of_m: 2}
      branches:
        a: [{id: pa, run: p.wasm, on_error: continue}, {id: pa2, transform: '1'}]
        b: [{id: pb, run: p.wasm}]
        c: [{id: pc, run: p.wasm, retry: {max_attempts: 2}}]
  - id: each
    foreach:
      items: inputs.items
      max_parallel: 3
      on_item_error: continue
      steps:
        - {id: w, run: w.wasm, with: {v: item}}
        - id: pick
          if:
            condition: steps.w.output == null
            then: [{id: none, transform: '0'}]
            else: [{id: some, transform: steps.w.output}]
  - {id: last, run: l.wasm, on_error: compensate}
""",
}


@settings(max_examples=60, deadline=None)
@given(
    failures=st.sets(st.text(alphabet="abcdefghijklmnopqrstuvwxyz[]/0123456789", max_size=12)),
    pattern=st.lists(st.booleans(), min_size=1, max_size=40),
    items=st.lists(st.integers(0, 9), max_size=6),
)
def test_replay_gives_the_live_state(
    failures: set[str], pattern: list[bool], items: list[int]
) -> None:
    ir = flow(FLOWS["mixed"])
    calls = iter(pattern * 100)

    def executor(action: RunStep) -> tuple[str, Any]:
        if next(calls) or action.instance in failures:
            return "fail", {"kind": "trap", "message": action.instance}
        return "ok", {"at": action.instance, "attempt": action.attempt}

    live = simulate(ir, {"n": 1, "items": items}, executor=executor)
    assert live.state.status in ("completed", "failed")
    replayed, rejected = fold(ir, "bafyexec", live.events)
    assert rejected == []
    assert replayed.snapshot() == live.state.snapshot()


PARALLEL = """
name: fan
steps:
  - id: fan
    parallel:
      branches:
        a: [{id: a1, run: x.wasm}, {id: a2, run: x.wasm}]
        b: [{id: b1, run: x.wasm, on_error: continue}]
        c: [{id: c1, run: x.wasm}, {id: c2, transform: steps.c1.output + 1}]
  - id: each
    foreach:
      items: '[1, 2, 3, 4]'
      max_parallel: 4
      on_item_error: collect
      steps: [{id: w, run: x.wasm}]
"""

BRANCHES: dict[str, list[Event]] = {
    "a": [completed("a1", 1), completed("a2", 2)],
    "b": [failed("b1")],
    "c": [completed("c1", 10), completed("c2", 11)],
}
ITEMS = [completed(f"each[{i}]/w", i * i) for i in range(4)]


@settings(max_examples=80, deadline=None)
@given(st.permutations(["a", "a", "b", "c", "c"]), st.permutations(ITEMS))
def test_arrival_order_of_concurrent_branches_does_not_matter(
    order: list[str], items: list[Event]
) -> None:
    ir = flow(PARALLEL)
    queues = {name: list(events) for name, events in BRANCHES.items()}
    branch_events = [queues[name].pop(0) for name in order]
    fan_output = {"a": 2, "b": None, "c": 11}
    events = [
        started({}),
        *branch_events,
        completed("fan", fan_output),
        *items,
        completed("each", [0, 1, 4, 9]),
        Event("exec.completed", value=[0, 1, 4, 9]),
    ]
    state, rejected = fold(ir, "e", events)
    assert rejected == []
    assert state.status == "completed"
    reference, _ = fold(
        ir,
        "e",
        [
            started({}),
            *BRANCHES["a"],
            *BRANCHES["b"],
            *BRANCHES["c"],
            completed("fan", fan_output),
            *ITEMS,
            completed("each", [0, 1, 4, 9]),
            Event("exec.completed", value=[0, 1, 4, 9]),
        ],
    )
    assert state.snapshot() == reference.snapshot()
