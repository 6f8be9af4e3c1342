"""What the engine asks its driver to do next (docs/engine.md, "Actions").

Each action names the record that settles it; the driver (local runner, network
runtime) performs the effect and appends that record. Actions carry no I/O handles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from qflow_node.core.flow import StepIR


@dataclass(frozen=True, slots=True)
class RunStep:
    """Execute attempt `attempt` of a run/http/flow step (or a compensation) with `input`;
    settle with step.completed (output, state delta) or step.failed. `due` is when it may
    start (a retry's backoff); next_actions only returns it once due."""

    instance: str
    attempt: int
    step: StepIR
    input: Any
    timeout_ms: int | None
    due: int = 0


@dataclass(frozen=True, slots=True)
class StartStep:
    """Record step.started for a timed step (sleep, wait_for, approval, or a control step
    with a timeout): its start time is the base of its deadline."""

    instance: str
    attempt: int


@dataclass(frozen=True, slots=True)
class CompleteStep:
    """Record step.completed with `output`, computed by the engine (transform, validate,
    and the end of an if, parallel or foreach)."""

    instance: str
    attempt: int
    output: Any


@dataclass(frozen=True, slots=True)
class FailStep:
    """Record step.failed with `error` ({kind, message}), decided by the engine."""

    instance: str
    attempt: int
    error: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FireTimer:
    """Record timer.fired: a sleep ended, or a deadline passed (due ≤ now)."""

    instance: str
    attempt: int
    due: int


@dataclass(frozen=True, slots=True)
class AwaitEvent:
    """Waiting for event.received on `topic` (matching `match`) until `deadline`."""

    instance: str
    attempt: int
    topic: str
    match: str
    deadline: int


@dataclass(frozen=True, slots=True)
class AwaitApproval:
    """Waiting for approval.granted/denied by `approvers` until `deadline`."""

    instance: str
    attempt: int
    approvers: tuple[str, ...]
    quorum: int
    granted: tuple[str, ...]
    message: str | None
    deadline: int


@dataclass(frozen=True, slots=True)
class Wake:
    """Nothing to do before `at` (ms): the earliest retry or timer."""

    at: int


@dataclass(frozen=True, slots=True)
class CompleteExecution:
    output: Any


@dataclass(frozen=True, slots=True)
class FailExecution:
    error: dict[str, Any]


StepAction: TypeAlias = (
    RunStep | StartStep | CompleteStep | FailStep | FireTimer | AwaitEvent | AwaitApproval
)
Action: TypeAlias = StepAction | Wake | CompleteExecution | FailExecution
