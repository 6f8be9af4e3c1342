"""What the engine folds (events, decoded from records) and what it refuses (Rejection)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

# Record kinds the engine understands (all of qflow_node.core.ledger.KINDS).
EXEC_STARTED: Final = "exec.started"
EXEC_PAUSED: Final = "exec.paused"
EXEC_RESUMED: Final = "exec.resumed"
EXEC_ABORTED: Final = "exec.aborted"
EXEC_COMPLETED: Final = "exec.completed"
EXEC_FAILED: Final = "exec.failed"
STEP_STARTED: Final = "step.started"
STEP_COMPLETED: Final = "step.completed"
STEP_FAILED: Final = "step.failed"
STEP_SKIPPED: Final = "step.skipped"
APPROVAL_GRANTED: Final = "approval.granted"
APPROVAL_DENIED: Final = "approval.denied"
TIMER_FIRED: Final = "timer.fired"
EVENT_RECEIVED: Final = "event.received"


@dataclass(frozen=True, slots=True)
class Event:
    """One record as the engine sees it: its fields plus its decoded payload.

    `value` by kind: exec.started {"flow": CID text, "inputs": JSON}; step.completed,
    exec.completed: the output (JSON); step.failed, exec.failed: {"kind", "message"};
    event.received: {"topic", "event"}; timer.fired: {"due": ms}; others: null.
    `delta` is the step's CRDT update (the record's `state` block), if any.
    `quorum` is the validators' certificate of a critical step's step.completed or
    step.failed: its map (`Certificate.to_obj()` form) as the record holds it, which the
    engine parses, or a `qflow_node.core.critical.Certificate`; None otherwise.
    """

    kind: str
    step: str | None = None
    attempt: int = 0
    ts: int = 0
    value: Any = None
    actor: str | None = None
    delta: bytes | None = None
    ref: str = ""  # the record's CID, for messages
    quorum: Any = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event the engine refused: it is not applied. `reason` says why."""

    reason: str
    event: Event

    def __str__(self) -> str:
        where = f" ({self.event.ref})" if self.event.ref else ""
        step = f" {self.event.step}" if self.event.step else ""
        return f"{self.event.kind}{step} attempt {self.event.attempt}{where}: {self.reason}"


def error(kind: str, message: str) -> dict[str, Any]:
    """A step or execution error as stored in payloads and exposed as steps.<id>.error."""
    return {"kind": kind, "message": message}
