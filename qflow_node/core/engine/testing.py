"""A pure, simulated driver for tests and benchmarks: steps answered by a function,
time advanced by Wake actions (no clock), every event applied and kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    Wake,
)
from qflow_node.core.engine.events import Event, Rejection
from qflow_node.core.engine.reducer import apply, initial, next_actions
from qflow_node.core.engine.state import ExecState
from qflow_node.core.flow import FlowIR, compile_flow
from qflow_node.core.flow.testing import FakeModules

# RunStep -> ("ok", output) or ("fail", {"kind", "message"})
Executor = Callable[[RunStep], tuple[str, Any]]
# An await (event or approval) -> the events that answer it, or [] to let it time out.
Responder = Callable[[AwaitEvent | AwaitApproval], list[Event]]


def echo(action: RunStep) -> tuple[str, Any]:
    return "ok", action.input


def no_response(action: AwaitEvent | AwaitApproval) -> list[Event]:
    return []


@dataclass
class Simulation:
    state: ExecState
    events: list[Event] = field(default_factory=list)
    now: int = 0


def simulate(
    flow: FlowIR,
    inputs: Any,
    *,
    exec_id: str = "bafyexec",
    executor: Executor = echo,
    respond: Responder = no_response,
    start: int = 1_000,
    max_rounds: int = 100_000,
) -> Simulation:
    """Run the flow to its end; each action's event gets ts = simulated now."""
    sim = Simulation(initial(flow, exec_id), now=start)
    _push(sim, Event(ev.EXEC_STARTED, ts=sim.now, value={"flow": "", "inputs": inputs}))
    answered: set[str] = set()
    for _ in range(max_rounds):
        actions = next_actions(sim.state, sim.now)
        if not actions:
            return sim
        progressed = False
        wake: int | None = None
        for action in actions:
            if isinstance(action, Wake):
                wake = action.at
                continue
            if isinstance(action, AwaitEvent | AwaitApproval):
                if action.instance in answered:
                    continue
                answered.add(action.instance)
                for event in respond(action):
                    progressed |= _push(sim, event)
                continue
            progressed |= _push(sim, _settle(action, sim, executor))
        if not progressed:
            if wake is None:
                deadlines = [
                    a.deadline for a in actions if isinstance(a, AwaitEvent | AwaitApproval)
                ]
                if not deadlines:
                    return sim
                wake = min(deadlines)
            sim.now = max(sim.now + 1, wake)
    raise AssertionError("simulation did not end")


def _push(sim: Simulation, event: Event) -> bool:
    result = apply(sim.state, event)
    if isinstance(result, Rejection):
        return False  # e.g. a branch cancelled by an earlier event of the same round
    sim.state = result
    sim.events.append(event)
    return True


def _settle(action: Action, sim: Simulation, executor: Executor) -> Event:
    now = sim.now
    if isinstance(action, RunStep):
        verdict, value = executor(action)
        kind = ev.STEP_COMPLETED if verdict == "ok" else ev.STEP_FAILED
        return Event(kind, action.instance, action.attempt, now, value)
    if isinstance(action, StartStep):
        return Event(ev.STEP_STARTED, action.instance, action.attempt, now)
    if isinstance(action, CompleteStep):
        return Event(ev.STEP_COMPLETED, action.instance, action.attempt, now, action.output)
    if isinstance(action, FailStep):
        return Event(ev.STEP_FAILED, action.instance, action.attempt, now, action.error)
    if isinstance(action, FireTimer):
        return Event(ev.TIMER_FIRED, action.instance, action.attempt, now, {"due": action.due})
    if isinstance(action, CompleteExecution):
        return Event(ev.EXEC_COMPLETED, ts=now, value=action.output)
    assert isinstance(action, FailExecution)
    return Event(ev.EXEC_FAILED, ts=now, value=action.error)


# -- building flows and events in tests ------------------------------------------------


def flow(text: str) -> FlowIR:
    return compile_flow(text, resolve_module=FakeModules()).ir


def started(inputs: Any, ts: int = 1000) -> Event:
    return Event("exec.started", ts=ts, value={"flow": "", "inputs": inputs})


def completed(step: str, output: Any, *, attempt: int = 1, ts: int = 1000) -> Event:
    return Event("step.completed", step, attempt, ts, output)


def failed(step: str, kind: str = "trap", *, attempt: int = 1, ts: int = 1000) -> Event:
    return Event("step.failed", step, attempt, ts, {"kind": kind, "message": f"{step} broke"})
