"""`apply(state, event)`: the next state, or a Rejection saying why the event is illegal.
`fold(events)`: apply them in order. `next_actions(state, now)`: what is due.

A critical step (`critical: true`) is settled only by a record whose quorum certificate
verifies under the subnet policy's keys given to `initial` (docs/consensus.md,
"Replicas"), or by a failure the engine decided itself; no other event may carry a
certificate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Final

import jsonschema

from qflow_node.core.critical import DECISION_KINDS, CriticalKeys, decision_problem, quorum_problem
from qflow_node.core.engine import events as ev
from qflow_node.core.engine.actions import (
    Action,
    AwaitApproval,
    AwaitEvent,
    CompleteExecution,
    CompleteStep,
    FailExecution,
    FailStep,
    FireTimer,
    RunStep,
    StartStep,
    StepAction,
    Wake,
)
from qflow_node.core.engine.events import Event, Rejection
from qflow_node.core.engine.expressions import EvalError, evaluate, references
from qflow_node.core.engine.index import FlowIndex, parse_instance
from qflow_node.core.engine.plan import EXECUTED, is_decision, is_done, plan, step_uses_vars
from qflow_node.core.engine.state import (
    ABORTED,
    COMPLETED,
    FAILED,
    FAILED_EXEC,
    NEW,
    PAUSED,
    RETRY,
    RUNNING,
    STARTED,
    SUCCEEDED,
    TERMINAL,
    ExecState,
    Instance,
    initial_vars_update,
)
from qflow_node.core.flow import FlowIR, StepIR, instance_id

# The static index of recently seen flows, by the flow object (kept with it, so its id is
# not reused meanwhile): a node builds a state for every execution it hears of, mostly
# of the same few flows, and analysing a flow's expressions is the costly part.
_STATIC: dict[int, tuple[FlowIR, FlowIndex]] = {}
_STATIC_MAX: Final = 256


def initial(flow: FlowIR, exec_id: str, critical: CriticalKeys | None = None) -> ExecState:
    """The state before the execution's first record.

    `critical`: the subnet policy's keys, to check the certificates of critical steps'
    records with (`exec_id` must then be the execution's CID, as text). Without them a
    critical step's completion or failure is refused.
    """
    cached = _STATIC.get(id(flow))
    if cached is None or cached[0] is not flow:
        template = FlowIndex.of(flow, step_uses_vars)
        template.initial_vars = initial_vars_update(flow)
        if len(_STATIC) >= _STATIC_MAX:
            _STATIC.clear()
        _STATIC[id(flow)] = cached = (flow, template)
    return ExecState(cached[1].fresh(), exec_id, critical=critical)


def fold(
    flow: FlowIR,
    exec_id: str,
    events: Iterable[Event],
    critical: CriticalKeys | None = None,
) -> tuple[ExecState, list[Rejection]]:
    """The state after `events` (in replay order), and the events refused on the way."""
    state = initial(flow, exec_id, critical)
    rejected: list[Rejection] = []
    for event in events:
        result = apply(state, event)
        if isinstance(result, Rejection):
            rejected.append(result)
        else:
            state = result
    return state, rejected


def next_actions(state: ExecState, now: int) -> list[Action]:
    """What the driver should do at `now` (ms): due step actions, the execution's end,
    and a Wake for the earliest retry or timer still in the future."""
    if state.status != RUNNING:
        return []
    due: list[Action] = []
    wake: int | None = None
    for action in plan(state).actions:
        # Only retries (RunStep.due) and timers wait for a time; the rest is due now.
        if type(action) is RunStep or type(action) is FireTimer:
            at = action.due
            if at > now:
                wake = at if wake is None else min(wake, at)
                continue
        due.append(action)
    if wake is not None:
        due.append(Wake(wake))
    return due


def apply(state: ExecState, event: Event) -> ExecState | Rejection:
    """The state after `event`, or why it cannot be applied. In a replica that knows its
    subnet's policy (`state.critical`), a record that settles a decision step
    (`is_decision`) needs the validators' certificate of that decision, so that two sides
    of a partition never both take one (docs/consensus.md, "Decisions")."""
    result = _apply(state, event)
    if isinstance(result, Rejection) or event.step is None or event.kind not in DECISION_KINDS:
        return result
    problem = _decision_problem(state, result, event, certified=True)
    return result if problem is None else Rejection(problem, event)


def decision_refusal(state: ExecState, event: Event) -> str | None:
    """Why `event` does not settle a decision step in `state`, certificate aside: what a
    validator checks before it certifies a proposed decision (with `event.ts` its own
    clock, so a timeout is certified only once it is due there too). None if it does."""
    if event.step is None or event.kind not in DECISION_KINDS:
        return f"{event.kind} does not decide a step"
    bare = replace(event, quorum=None)
    result = _apply(state, bare)
    if isinstance(result, Rejection):
        return result.reason
    return _decision_problem(state, result, bare, certified=False)


def settles_decision(state: ExecState, event: Event) -> bool:
    """Whether writing `event` settles a decision step of a replica that knows its
    subnet's policy: the writer must get it certified first (`decision_refusal`)."""
    if state.critical is None or event.step is None or event.kind not in DECISION_KINDS:
        return False
    if parse_instance(event.step) is None or not is_decision(_step_of(state, event.step)):
        return False  # a transform's result, a sleep's timer: no decision to certify
    return decision_refusal(state, event) is None


def _decision_problem(
    before: ExecState, after: ExecState, event: Event, *, certified: bool
) -> str | None:
    assert event.step is not None
    step = _step_of(before, event.step)
    if not is_decision(step):
        if event.quorum is not None and event.kind not in (ev.STEP_COMPLETED, ev.STEP_FAILED):
            return f"step {event.step} decides nothing: its {event.kind} carries no certificate"
        return None  # a step.completed / step.failed: `_quorum_problem` judged it
    settled = after.instances.get(event.step)
    if settled is None or settled.status not in (COMPLETED, FAILED):
        if event.quorum is not None:
            return (
                f"{event.kind} on {event.step} does not settle it (only the record that does "
                "carries a certificate)"
            )
        return "it does not settle the step" if not certified else None
    if not certified or before.critical is None:
        return None  # no policy: decisions are taken without a quorum (docs/consensus.md)
    return decision_problem(before.critical, before.exec_id, event)


def _apply(state: ExecState, event: Event) -> ExecState | Rejection:
    def reject(reason: str) -> Rejection:
        return Rejection(reason, event)

    kind = event.kind
    if event.quorum is not None and kind not in DECISION_KINDS:
        return reject(f"{kind} carries no quorum certificate")
    if kind == ev.EXEC_STARTED:
        if state.status != NEW:
            # A concurrent start by another node: same submission, so nothing new
            # (docs/protocol.md, "Kinds").
            return state.evolve()
        return _start(state, event)
    if state.status == NEW:
        return reject("the execution has not started (its first record must be exec.started)")
    if state.status in TERMINAL:
        return reject(f"the execution has already ended ({state.status})")
    if kind == ev.EXEC_PAUSED:
        if state.status != RUNNING:
            return reject(f"cannot pause an execution that is {state.status}")
        return state.evolve(status=PAUSED)
    if kind == ev.EXEC_RESUMED:
        if state.status != PAUSED:
            return reject(f"cannot resume an execution that is {state.status}")
        return state.evolve(status=RUNNING)
    if kind == ev.EXEC_ABORTED:
        return state.evolve(status=ABORTED, error=ev.error("aborted", f"aborted by {event.actor}"))
    if kind in (ev.EXEC_COMPLETED, ev.EXEC_FAILED):
        return _finish(state, event)
    if kind == ev.STEP_SKIPPED:
        return reject("step.skipped is not used by this engine version")
    if event.step is None:
        return reject(f"{kind} must name a step")
    actions = plan(state).by_instance.get(event.step)
    if not actions:
        return reject(_not_runnable(state, event.step))
    return _step_event(state, event, actions)


def _start(state: ExecState, event: Event) -> ExecState | Rejection:
    value = event.value
    if not isinstance(value, dict) or "inputs" not in value:
        return Rejection("exec.started payload must hold the inputs", event)
    inputs = value["inputs"]
    problem = jsonschema.Draft202012Validator(state.flow["inputs"]).iter_errors(inputs)
    first = next(iter(problem), None)
    if first is not None:
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        return Rejection(
            f"the inputs do not match the flow's schema: {where}: {first.message}", event
        )
    return state.evolve(status=RUNNING, inputs=inputs)


def _finish(state: ExecState, event: Event) -> ExecState | Rejection:
    finish = plan(state).finish
    if event.kind == ev.EXEC_COMPLETED:
        if not isinstance(finish, CompleteExecution):
            return Rejection("the execution cannot complete yet", event)
        if event.value != finish.output:
            return Rejection("the recorded output differs from the flow's output", event)
        return state.evolve(status=SUCCEEDED, output=finish.output)
    if not isinstance(finish, FailExecution):
        return Rejection("the execution has not failed", event)
    return state.evolve(status=FAILED_EXEC, error=finish.error)


def _not_runnable(state: ExecState, name: str) -> str:
    parsed = parse_instance(name)
    if parsed is None or parsed[0] not in state.index.steps:
        return f"no step {name!r} in this flow"
    inst = state.instances.get(name)
    if inst is not None and inst.status in (COMPLETED, FAILED):
        return f"step {name} has already {inst.status}"
    return f"step {name} is not runnable now"


def _step_event(state: ExecState, event: Event, actions: list[StepAction]) -> ExecState | Rejection:
    kind = event.kind
    name = event.step
    assert name is not None
    started = state.instances.get(name)
    if (
        kind == ev.STEP_STARTED
        and started is not None
        and (started.status, started.attempt) == (STARTED, event.attempt)
        and event.ts < started.ts
    ):
        # Two nodes started the attempt on two sides of a partition. Of concurrent
        # starts the earliest counts, whatever the replay order: the branch that went on
        # from it (its timer fired, its deadline ran) stays valid when the other merges.
        return _set(state, name, started.evolve(ts=event.ts))
    for action in actions:
        if action.attempt != event.attempt and kind not in (
            ev.EVENT_RECEIVED,
            ev.APPROVAL_GRANTED,
            ev.APPROVAL_DENIED,
        ):
            continue
        if kind == ev.STEP_STARTED and isinstance(action, StartStep):
            return _set(state, name, Instance(STARTED, event.attempt, event.ts))
        if kind == ev.STEP_COMPLETED and isinstance(action, RunStep | CompleteStep):
            if isinstance(action, CompleteStep) and event.value != action.output:
                return Rejection("the recorded output differs from the engine's", event)
            if isinstance(action, RunStep) and event.ts < action.due:
                return Rejection(f"attempt {event.attempt} was not due before {action.due}", event)
            problem = _quorum_problem(state, name, event, action)
            if problem is not None:
                return Rejection(problem, event)
            done = Instance(COMPLETED, event.attempt, event.ts, output=event.value)
            return _set(state, name, done, delta=event.delta)
        if kind == ev.STEP_FAILED and isinstance(action, RunStep | FailStep):
            problem = _quorum_problem(state, name, event, action)
            if problem is not None:
                return Rejection(problem, event)
            return _failed(state, name, event)
        if kind == ev.TIMER_FIRED and isinstance(action, FireTimer):
            if event.ts < action.due:
                return Rejection(f"the timer is not due before {action.due}", event)
            return _timer(state, name, event)
        if kind == ev.EVENT_RECEIVED and isinstance(action, AwaitEvent):
            return _received(state, name, event, action)
        if kind in (ev.APPROVAL_GRANTED, ev.APPROVAL_DENIED) and isinstance(action, AwaitApproval):
            return _approval(state, name, event, action)
    expected = ", ".join(sorted({type(a).__name__ for a in actions}))
    return Rejection(
        f"{kind} attempt {event.attempt} does not settle what step {name} waits for "
        f"({expected}, attempt {actions[0].attempt})",
        event,
    )


def _quorum_problem(state: ExecState, name: str, event: Event, action: StepAction) -> str | None:
    """Why the step.completed / step.failed `event` of instance `name`, settling `action`,
    may not be applied for want of a valid quorum certificate, or None.

    A critical step's run needs one that verifies (`quorum_problem`: one pairing check).
    A failure the engine decided itself (FailStep: its input cannot be evaluated) ran
    nothing and is the same on every replica, so it needs none, but must be exactly the
    engine's. Any other step carries none, so a certificate has one meaning."""
    critical = _step_of(state, name)["critical"]
    if critical and isinstance(action, FailStep):
        where = f"critical step {name} attempt {event.attempt}"
        if event.value != action.error:
            return f"{where}: the recorded failure differs from the engine's"
        if event.quorum is not None:
            return f"{where}: the engine decided this failure, so it carries no quorum certificate"
        return None
    if not critical:
        if event.quorum is None or is_decision(_step_of(state, name)):
            return None  # a decision's certificate is `_decision_problem`'s to judge
        return f"step {name} is not critical: its {event.kind} cannot carry a quorum certificate"
    return quorum_problem(state.critical, state.exec_id, event)


def _step_of(state: ExecState, name: str) -> StepIR:
    parsed = parse_instance(name)
    assert parsed is not None
    return state.index.steps[parsed[0]]


def _failed(state: ExecState, name: str, event: Event) -> ExecState:
    step = _step_of(state, name)
    err = event.value if isinstance(event.value, dict) else ev.error("failed", str(event.value))
    # An expression error would recur (same inputs); anything else may pass next time,
    # an attempt the validators aborted (kind ABORTED, a critical step) included.
    retryable = err.get("kind") != "expression"
    if retryable and step["kind"] in EXECUTED and event.attempt < step["retry"]["max_attempts"]:
        return _set(state, name, Instance(RETRY, event.attempt, event.ts, error=err))
    return _set(state, name, Instance(FAILED, event.attempt, event.ts, error=err))


def _timer(state: ExecState, name: str, event: Event) -> ExecState:
    step = _step_of(state, name)
    if step["kind"] == "sleep":
        return _set(state, name, Instance(COMPLETED, 1, event.ts))
    why = ev.error("timeout", f"{name} timed out after {step['timeout_ms']} ms")
    return _set(state, name, Instance(FAILED, 1, event.ts, error=why))


def _received(
    state: ExecState, name: str, event: Event, action: AwaitEvent
) -> ExecState | Rejection:
    value = event.value
    if not isinstance(value, dict) or value.get("topic") != action.topic:
        return Rejection(f"not an event on topic {action.topic!r}", event)
    names: dict[str, Any] = {
        "inputs": state.inputs,
        "vars": state.vars(),
        "event": value.get("event"),
    }
    parsed = parse_instance(name)
    assert parsed is not None
    refs = references(action.match)
    current = dict(parsed[1])
    names["steps"] = {}
    for ref in refs:
        loops = [(loop, current.get(loop, 0)) for loop in state.index.loops.get(ref, ())]
        inst = state.instances.get(instance_id(ref, loops))
        ref_step = state.index.steps[ref]
        ok = is_done(ref_step, inst) and inst is not None
        names["steps"][ref] = {
            "output": inst.output if ok and inst is not None else None,
            "error": inst.error if ok and inst is not None else None,
        }
    try:
        matched = evaluate(action.match, names)
    except EvalError as exc:
        return Rejection(f"match failed: {exc}", event)
    if matched is not True:
        return Rejection("the event does not match", event)
    return _set(state, name, Instance(COMPLETED, 1, event.ts, output=value.get("event")))


def _approval(
    state: ExecState, name: str, event: Event, action: AwaitApproval
) -> ExecState | Rejection:
    if event.actor not in action.approvers:
        return Rejection(f"{event.actor} is not an approver of {name}", event)
    if event.actor in action.granted:
        return Rejection(f"{event.actor} has already approved {name}", event)
    if event.kind == ev.APPROVAL_DENIED:
        why = ev.error("rejected", f"{name} was rejected by {event.actor}")
        return _set(state, name, Instance(FAILED, 1, event.ts, error=why))
    granted = tuple(sorted((*action.granted, event.actor)))
    if len(granted) >= action.quorum:
        output = {"approved": True, "approvers": list(granted)}
        return _set(state, name, Instance(COMPLETED, 1, event.ts, output=output, granted=granted))
    previous = state.instances[name]
    return _set(state, name, previous.evolve(granted=granted))


def _set(state: ExecState, name: str, inst: Instance, *, delta: bytes | None = None) -> ExecState:
    instances = dict(state.instances)
    instances[name] = inst
    changes: dict[str, Any] = {"instances": instances}
    if delta:
        changes["deltas"] = (*state.deltas, delta)
    parsed = parse_instance(name)
    assert parsed is not None
    step_id, loops = parsed
    step = state.index.steps[step_id]
    if inst.status == COMPLETED and step["compensate"] is not None:
        changes["completed_order"] = (*state.completed_order, name)
    if inst.status == FAILED and step["on_error"] == "compensate" and state.saga is None:
        changes["saga"] = inst.error
    position = state.index.positions.get(step_id)
    if position is not None:  # not a compensation (those run one by one, unmemoised)
        if is_done(step, inst):
            changes["cursors"] = _advance(state, instances, position.siblings, loops)
        versions = dict(state.versions)
        for key in state.index.list_keys(step_id, loops):
            versions[key] = object()
        changes["versions"] = versions
    return state.evolve(**changes)


def _advance(
    state: ExecState,
    instances: dict[str, Instance],
    siblings: list[StepIR],
    loops: tuple[tuple[str, int], ...],
) -> dict[str, int]:
    key = instance_id(siblings[0]["id"], loops)
    i = state.cursors.get(key, 0)
    while i < len(siblings) and is_done(
        siblings[i], instances.get(instance_id(siblings[i]["id"], loops))
    ):
        i += 1
    if i == state.cursors.get(key, 0):
        return state.cursors
    cursors = dict(state.cursors)
    cursors[key] = i
    return cursors
