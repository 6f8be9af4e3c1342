"""The engine, construct by construct (docs/flows.md run-time semantics, docs/engine.md)."""

from __future__ import annotations

from typing import Any

import pytest

from qflow_node.core.engine import (
    AwaitApproval,
    AwaitEvent,
    CompleteExecution,
    CompleteStep,
    Event,
    ExecState,
    FailExecution,
    Rejection,
    RunStep,
    StartStep,
    Wake,
    apply,
    fold,
    initial,
    next_actions,
)
from qflow_node.core.engine.testing import completed, failed, flow, simulate, started
from qflow_node.core.flow import retry_delay_ms

RUN2 = """
name: two
steps:
  - id: a
    run: a.wasm
    with: {x: inputs.x}
  - id: b
    run: b.wasm
    with: {y: steps.a.output.y}
output: steps.b.output
"""


def ok(state: ExecState | Rejection) -> ExecState:
    assert isinstance(state, ExecState), str(state)
    return state


def test_sequence_resolves_inputs_from_earlier_outputs() -> None:
    ir = flow(RUN2)
    state = ok(apply(initial(ir, "e1"), started({"x": 5})))
    [action] = next_actions(state, 1000)
    assert isinstance(action, RunStep)
    assert (action.instance, action.attempt, action.input) == ("a", 1, {"x": 5})
    state = ok(apply(state, completed("a", {"y": 7})))
    [action] = next_actions(state, 1000)
    assert isinstance(action, RunStep) and action.input == {"y": 7}
    state = ok(apply(state, completed("b", "done")))
    assert next_actions(state, 1000) == [CompleteExecution("done")]
    state = ok(apply(state, Event("exec.completed", value="done")))
    assert (state.status, state.output) == ("completed", "done")
    assert next_actions(state, 1000) == []


def test_transform_and_validate_are_evaluated_by_the_engine() -> None:
    ir = flow("""
name: tv
steps:
  - id: check
    validate:
      schema: {type: object, required: [n], properties: {n: {type: integer, minimum: 1}}}
      data: inputs
  - id: double
    transform: {n2: steps.check.output.n * 2}
""")
    sim = simulate(ir, {"n": 4})
    assert (sim.state.status, sim.state.output) == ("completed", {"n2": 8})
    bad = simulate(ir, {"n": 0})
    assert bad.state.status == "failed"
    assert bad.state.error == {
        "kind": "validation",
        "message": "n: 0 is less than the minimum of 1",
    }


def test_a_recorded_transform_output_must_be_the_engines() -> None:
    ir = flow("name: t\nsteps:\n  - {id: t, transform: inputs.a + 1}\n")
    state = ok(apply(initial(ir, "e"), started({"a": 1})))
    assert next_actions(state, 0) == [CompleteStep("t", 1, 2)]
    rejected = apply(state, completed("t", 3))
    assert isinstance(rejected, Rejection)
    assert rejected.reason == "the recorded output differs from the engine's"


@pytest.mark.parametrize(("weight", "carrier"), [(40.0, "freight"), (3.0, "parcel")])
def test_if_runs_one_branch(weight: float, carrier: str) -> None:
    ir = flow("""
name: route
steps:
  - id: route
    if:
      condition: inputs.w > 30.0
      then: [{id: freight, transform: '"freight"'}]
      else: [{id: parcel, transform: '"parcel"'}]
  - id: summary
    transform: steps.route.output + "!"
""")
    sim = simulate(ir, {"w": weight})
    assert sim.state.output == carrier + "!"
    steps = [e.step for e in sim.events if e.kind == "step.completed"]
    assert steps == [carrier, "route", "summary"]


PARALLEL = """
name: quotes
steps:
  - id: quotes
    parallel:
      join: {n_of_m: 2}
      branches:
        north: [{id: north, run: n.wasm}]
        south: [{id: south, run: s.wasm}]
        east: [{id: east, run: e.wasm}]
"""


def test_parallel_n_of_m_succeeds_at_n_and_cancels_the_rest() -> None:
    ir = flow(PARALLEL)
    state = ok(apply(initial(ir, "e"), started({})))
    assert {a.instance for a in next_actions(state, 0) if isinstance(a, RunStep)} == {
        "east",
        "north",
        "south",
    }
    state = ok(apply(state, completed("north", 1)))
    state = ok(apply(state, failed("east")))
    state = ok(apply(state, completed("south", 2)))
    assert next_actions(state, 0) == [CompleteStep("quotes", 1, {"north": 1, "south": 2})]
    state = ok(apply(state, completed("quotes", {"north": 1, "south": 2})))
    late = apply(state, completed("east", 3))
    assert isinstance(late, Rejection)
    assert late.reason == "step east has already failed"


def test_parallel_fails_as_soon_as_the_join_cannot_be_met() -> None:
    ir = flow(PARALLEL)
    state = ok(apply(initial(ir, "e"), started({})))
    state = ok(apply(state, failed("north")))
    assert not any(a for a in next_actions(state, 0) if getattr(a, "instance", "") == "quotes")
    state = ok(apply(state, failed("south")))
    [fail] = [a for a in next_actions(state, 0) if getattr(a, "instance", "") == "quotes"]
    assert fail.error == {  # type: ignore[union-attr]
        "kind": "parallel",
        "message": "2 branch(es) failed: branch north: north broke; branch south: south broke",
    }


FOREACH = """
name: each
steps:
  - id: each
    foreach:
      items: inputs.items
      max_parallel: 2
      on_item_error: {policy}
      steps:
        - {{id: work, run: w.wasm, with: {{v: item, i: index}}}}
"""


def _items_executor(action: RunStep) -> tuple[str, Any]:
    value = action.input["v"]
    if value < 0:
        return "fail", {"kind": "trap", "message": f"negative {value}"}
    return "ok", value * 10


def test_foreach_bounds_parallelism_and_names_instances() -> None:
    ir = flow(FOREACH.format(policy="stop"))
    state = ok(apply(initial(ir, "e"), started({"items": [1, 2, 3]})))
    runs = [a for a in next_actions(state, 0) if isinstance(a, RunStep)]
    assert [(a.instance, a.input) for a in runs] == [
        ("each[0]/work", {"v": 1, "i": 0}),
        ("each[1]/work", {"v": 2, "i": 1}),
    ]
    state = ok(apply(state, completed("each[1]/work", 20)))
    runs = [a for a in next_actions(state, 0) if isinstance(a, RunStep)]
    assert [a.instance for a in runs] == ["each[0]/work", "each[2]/work"]
    early = apply(
        ok(apply(initial(ir, "e"), started({"items": [1, 2, 3]}))), completed("each[2]/work", 1)
    )
    assert isinstance(early, Rejection) and early.reason == "step each[2]/work is not runnable now"


@pytest.mark.parametrize(
    ("policy", "status", "result"),
    [
        ("continue", "completed", [10, None, 30]),
        (
            "collect",
            "failed",
            {"kind": "foreach", "message": "1 of 3 items failed: [1] trap: negative -2"},
        ),
        ("stop", "failed", {"kind": "trap", "message": "each[1]: negative -2"}),
    ],
)
def test_foreach_item_error_policies(policy: str, status: str, result: Any) -> None:
    sim = simulate(
        flow(FOREACH.format(policy=policy)), {"items": [1, -2, 3]}, executor=_items_executor
    )
    assert sim.state.status == status
    assert (sim.state.output if status == "completed" else sim.state.error) == result
    ran = {e.step for e in sim.events if e.kind.startswith("step.") and e.step and "/" in e.step}
    expected = {"each[0]/work", "each[1]/work"} | ({"each[2]/work"} if policy != "stop" else set())
    assert ran == expected


RETRY = """
name: retry
steps:
  - id: call
    run: c.wasm
    retry: {max_attempts: 3, backoff: exponential, delay: 1s, jitter: 250ms}
"""


def test_retry_due_times_come_from_the_failure_record() -> None:
    ir = flow(RETRY)
    state = ok(apply(initial(ir, "exec1"), started({})))
    state = ok(apply(state, failed("call", ts=5000)))
    delay = retry_delay_ms(ir["steps"][0]["retry"], exec_id="exec1", step="call", attempt=1)
    assert 1000 <= delay <= 1250
    assert next_actions(state, 5000 + delay - 1) == [Wake(5000 + delay)]
    [run] = next_actions(state, 5000 + delay)
    assert isinstance(run, RunStep) and (run.attempt, run.due) == (2, 5000 + delay)
    too_early = apply(state, completed("call", 1, attempt=2, ts=5000 + delay - 1))
    assert isinstance(too_early, Rejection)
    wrong_attempt = apply(state, completed("call", 1, attempt=3, ts=99_999))
    assert isinstance(wrong_attempt, Rejection)
    state = ok(apply(state, failed("call", attempt=2, ts=8000)))
    state = ok(apply(state, failed("call", attempt=3, ts=20_000)))
    assert next_actions(state, 10**9) == [FailExecution({"kind": "trap", "message": "call broke"})]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ('b"raw"', "Object of type bytes is not JSON serializable"),
        ("0.0 / 0.0", "Out of range float values are not JSON compliant"),
    ],
)
def test_values_that_are_not_json_fail_the_step(expression: str, message: str) -> None:
    sim = simulate(flow(f"name: j\nsteps:\n  - {{id: t, transform: '{expression}'}}\n"), {})
    assert sim.state.error == {
        "kind": "expression",
        "message": f"{expression}: the value is not JSON ({message})",
    }


def test_an_expression_error_is_not_retried() -> None:
    ir = flow(RETRY.replace("run: c.wasm", "run: c.wasm\n    with: {x: inputs.missing}"))
    sim = simulate(ir, {})
    assert [(e.kind, e.step, e.attempt) for e in sim.events[1:]] == [
        ("step.failed", "call", 1),
        ("exec.failed", None, 0),
    ]
    assert sim.state.error == {"kind": "expression", "message": "inputs.missing: 'missing'"}


def test_of_concurrent_starts_of_a_timer_the_earliest_counts_in_any_order() -> None:
    """Regression (found by the simulator, seed 3084/3/hostile): two nodes started `nap`
    on two sides of a partition; replayed after the later start, the earlier branch's
    timer was "not due" and the merged execution hung with `nap` open for good."""
    ir = flow("""
name: timed
steps:
  - {id: nap, sleep: 2s}
""")
    begun = ok(apply(initial(ir, "e"), started({}, ts=0)))
    early, late = (Event("step.started", "nap", 1, ts) for ts in (100, 80_000))
    fired = Event("timer.fired", "nap", 1, 2100, {"due": 2100})
    in_order = ok(apply(begun, early))
    refused = apply(in_order, late)  # a later start than the one applied is refused (the
    assert isinstance(refused, Rejection)  # fold skips it, and nobody writes one)
    out_of_order = ok(apply(ok(apply(begun, late)), early))  # the earlier one counts
    for state in (in_order, out_of_order):
        assert state.instances["nap"].ts == 100
        assert next_actions(state, 500) == [Wake(2100)]
        assert ok(apply(state, fired)).instances["nap"].status == "completed"


def test_timers_sleep_and_wait_for_timeout() -> None:
    ir = flow("""
name: timed
steps:
  - {id: nap, sleep: 2s}
  - id: settled
    wait_for: {topic: pay, match: event.id == inputs.id, timeout: 1m}
    on_error: continue
  - {id: result, transform: 'steps.settled.error == null ? "paid" : steps.settled.error.kind'}
""")
    state = ok(apply(initial(ir, "e"), started({"id": 7}, ts=0)))
    assert next_actions(state, 0) == [StartStep("nap", 1)]
    state = ok(apply(state, Event("step.started", "nap", 1, 100)))
    assert next_actions(state, 500) == [Wake(2100)]
    early = apply(state, Event("timer.fired", "nap", 1, 2099, {"due": 2100}))
    assert isinstance(early, Rejection) and early.reason == "the timer is not due before 2100"
    state = ok(apply(state, Event("timer.fired", "nap", 1, 2100, {"due": 2100})))
    state = ok(apply(state, Event("step.started", "settled", 1, 3000)))
    actions = next_actions(state, 3000)
    assert actions == [
        AwaitEvent("settled", 1, "pay", "event.id == inputs.id", 63_000),
        Wake(63_000),
    ]
    other = apply(
        state, Event("event.received", "settled", 1, 4000, {"topic": "pay", "event": {"id": 8}})
    )
    assert isinstance(other, Rejection) and other.reason == "the event does not match"
    timed_out = ok(apply(state, Event("timer.fired", "settled", 1, 63_000, {"due": 63_000})))
    assert next_actions(timed_out, 63_000) == [CompleteStep("result", 1, "timeout")]
    paid = ok(
        apply(
            state, Event("event.received", "settled", 1, 4000, {"topic": "pay", "event": {"id": 7}})
        )
    )
    assert next_actions(paid, 4000) == [CompleteStep("result", 1, "paid")]


A = "did:key:z6MkA"


def test_approval_quorum_and_bad_approvals() -> None:
    ir = flow("""
name: approve
steps:
  - id: ok
    approval:
      approvers:
        - did:key:z6MkjEvoemobV2cbn4c6ha61qSckQMjefQKuoRBnNCRakjpR
        - did:key:z6MkkBPYdMyzcYZ82316KGBobVXJL619wybD692WpZaPQSBg
      quorum: 2
      timeout: 1h
""")
    one, two = sorted(ir["steps"][0]["approvers"])  # type: ignore[typeddict-item]
    state = ok(apply(initial(ir, "e"), started({}, ts=0)))
    state = ok(apply(state, Event("step.started", "ok", 1, 0)))
    [wait, wake] = next_actions(state, 0)
    assert isinstance(wait, AwaitApproval) and wait.quorum == 2 and wake == Wake(3_600_000)
    stranger = apply(state, Event("approval.granted", "ok", 1, 5, actor=A))
    assert isinstance(stranger, Rejection) and stranger.reason == f"{A} is not an approver of ok"
    state = ok(apply(state, Event("approval.granted", "ok", 1, 5, actor=one)))
    again = apply(state, Event("approval.granted", "ok", 1, 6, actor=one))
    assert isinstance(again, Rejection) and again.reason == f"{one} has already approved ok"
    done = ok(apply(state, Event("approval.granted", "ok", 1, 7, actor=two)))
    assert done.instances["ok"].output == {"approved": True, "approvers": [one, two]}
    denied = ok(apply(state, Event("approval.denied", "ok", 1, 7, actor=two)))
    assert denied.instances["ok"].error == {
        "kind": "rejected",
        "message": f"ok was rejected by {two}",
    }
    late = ok(apply(state, Event("timer.fired", "ok", 1, 3_600_000, {"due": 3_600_000})))
    assert late.instances["ok"].status == "failed"


SAGA = """
name: saga
steps:
  - id: one
    run: one.wasm
    compensate: {run: undo.wasm, with: {undo: steps.one.output}}
  - id: two
    run: two.wasm
    compensate: {run: undo.wasm, with: {undo: steps.two.output}}
  - {id: three, run: three.wasm, on_error: compensate}
"""


def test_compensation_runs_in_reverse_completion_order_then_fails() -> None:
    def executor(action: RunStep) -> tuple[str, Any]:
        if action.instance == "three":
            return "fail", {"kind": "http", "message": "declined"}
        return "ok", action.input

    sim = simulate(flow(SAGA), {}, executor=executor)
    order = [(e.kind, e.step) for e in sim.events[1:]]
    assert order == [
        ("step.completed", "one"),
        ("step.completed", "two"),
        ("step.failed", "three"),
        ("step.completed", "two/compensate"),
        ("step.completed", "one/compensate"),
        ("exec.failed", None),
    ]
    assert sim.events[4].value == {"undo": {}}
    assert sim.state.error == {"kind": "http", "message": "declined"}


def test_compensations_inside_a_foreach_see_their_item() -> None:
    ir = flow("""
name: each-saga
steps:
  - id: each
    foreach:
      items: inputs.items
      steps:
        - id: book
          run: book.wasm
          with: {v: item}
          compensate: {run: undo.wasm, with: {undo: item, at: index, got: steps.book.output}}
  - {id: pay, run: pay.wasm, on_error: compensate}
""")

    def executor(action: RunStep) -> tuple[str, Any]:
        if action.instance == "pay":
            return "fail", {"kind": "http", "message": "declined"}
        return "ok", action.input

    sim = simulate(ir, {"items": ["a", "b"]}, executor=executor)
    undo = [(e.step, e.value) for e in sim.events if e.step and e.step.endswith("/compensate")]
    assert undo == [
        ("each[1]/book/compensate", {"undo": "b", "at": 1, "got": {"v": "b"}}),
        ("each[0]/book/compensate", {"undo": "a", "at": 0, "got": {"v": "a"}}),
    ]


def test_on_error_continue_exposes_the_error() -> None:
    ir = flow("""
name: cont
steps:
  - {id: a, run: a.wasm, on_error: continue}
  - {id: b, transform: 'steps.a.error.kind + ":" + (steps.a.output == null ? "null" : "set")'}
""")
    sim = simulate(ir, {}, executor=lambda a: ("fail", {"kind": "trap", "message": "x"}))
    assert sim.state.output == "trap:null"


def test_pause_resume_abort() -> None:
    ir = flow(RUN2)
    state = ok(apply(initial(ir, "e"), started({"x": 1})))
    paused = ok(apply(state, Event("exec.paused", actor=A)))
    assert next_actions(paused, 0) == []
    assert isinstance(apply(paused, Event("exec.paused", actor=A)), Rejection)
    paused = ok(apply(paused, completed("a", {"y": 1})))  # a running step may still finish
    resumed = ok(apply(paused, Event("exec.resumed", actor=A)))
    [run] = next_actions(resumed, 0)
    assert isinstance(run, RunStep) and run.instance == "b"
    aborted = ok(apply(resumed, Event("exec.aborted", actor=A)))
    assert (aborted.status, next_actions(aborted, 0)) == ("aborted", [])
    after = apply(aborted, completed("b", 1))
    assert (
        isinstance(after, Rejection) and after.reason == "the execution has already ended (aborted)"
    )


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        (
            [completed("a", 1)],
            "the execution has not started (its first record must be exec.started)",
        ),
        ([started({"x": 1}), completed("b", 1)], "step b is not runnable now"),
        ([started({"x": 1}), completed("nope", 1)], "no step 'nope' in this flow"),
        ([started({"x": 1}), completed("a", 1), completed("a", 2)], "step a has already completed"),
        (
            [started({"x": 1}), Event("exec.completed", value=None)],
            "the execution cannot complete yet",
        ),
        ([started({"x": 1}), Event("step.completed", None, 1)], "step.completed must name a step"),
        (
            [started({"x": 1}), Event("exec.resumed", actor=A)],
            "cannot resume an execution that is running",
        ),
        (
            [started({"x": 1}), completed("a", 1, attempt=2)],
            "step.completed attempt 2 does not settle what step a waits for (RunStep, attempt 1)",
        ),
    ],
)
def test_illegal_records_are_rejected_with_a_reason(events: list[Event], reason: str) -> None:
    state, rejected = fold(flow(RUN2), "e", events)
    assert [r.reason for r in rejected] == [reason]
    assert state.applied == len(events) - 1


def test_a_second_exec_started_is_a_no_op() -> None:
    ir = flow(RUN2)
    state, rejected = fold(
        ir, "e", [started({"x": 1}), completed("a", {"y": 1}), started({"x": 1})]
    )
    assert rejected == []
    assert (
        state.snapshot()
        == fold(ir, "e", [started({"x": 1}), completed("a", {"y": 1})])[0].snapshot()
    )


def test_inputs_must_match_the_flows_schema() -> None:
    ir = flow(
        "name: s\ninputs: {type: object, required: [who]}\nsteps:\n  - {id: t, transform: '1'}\n"
    )
    rejected = apply(initial(ir, "e"), started({}))
    assert isinstance(rejected, Rejection)
    assert (
        rejected.reason
        == "the inputs do not match the flow's schema: (root): 'who' is a required property"
    )


def test_vars_are_the_fold_of_crdt_deltas() -> None:
    from pycrdt import Doc, Map

    ir = flow(
        "name: v\nvars: {n: 1}\nsteps:\n  - {id: a, run: a.wasm}\n  - {id: b, transform: vars}\n"
    )
    state = ok(apply(initial(ir, "e"), started({})))
    doc: Doc[Any] = Doc()
    doc.apply_update(state.vars_update())
    before = doc.get_state()
    doc.get("vars", type=Map)["k"] = '{"v": 2}'
    delta = bytes(doc.get_update(before))
    state = ok(apply(state, Event("step.completed", "a", 1, 0, None, delta=delta)))
    assert state.vars() == {"n": 1, "k": {"v": 2}}
    assert next_actions(state, 0) == [CompleteStep("b", 1, {"n": 1, "k": {"v": 2}})]


def test_control_step_timeout_fails_the_whole_step() -> None:
    ir = flow("""
name: to
steps:
  - id: fan
    parallel:
      branches:
        a: [{id: slow, run: s.wasm}]
    timeout: 10s
""")
    state = ok(apply(initial(ir, "e"), started({}, ts=0)))
    assert next_actions(state, 0) == [StartStep("fan", 1)]
    state = ok(apply(state, Event("step.started", "fan", 1, 0)))
    actions = next_actions(state, 0)
    assert [type(a) for a in actions] == [RunStep, Wake]
    assert actions[1] == Wake(10_000)
    state = ok(apply(state, Event("timer.fired", "fan", 1, 10_000, {"due": 10_000})))
    assert next_actions(state, 10_000) == [
        FailExecution({"kind": "timeout", "message": "fan timed out after 10000 ms"})
    ]
    assert isinstance(apply(state, completed("slow", 1)), Rejection)
