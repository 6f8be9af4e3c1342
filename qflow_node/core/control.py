"""Who may steer an execution, and what a control becomes in the ledger.

A control (`pause`, `resume`, `abort`, `approve`, `deny`) is signed by an actor's did:key
(docs/protocol.md, "Wire envelopes", control). Allowed:

* `pause`, `resume`, `abort`: the execution's submitter, or a subnet admin;
* `approve`, `deny`: an approver the waiting approval step names, or a subnet admin
  (the engine then counts the actor toward the step's quorum only if it is one of the
  step's approvers: an admin's `approve` unblocks nothing by itself, its `deny` does).

Pure: the caller passes who submitted, which approvals are waiting (step instance →
approvers) and the subnet's admins.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from qflow_node.codec.envelope_bodies import Control
from qflow_node.core.engine import events as ev
from qflow_node.core.engine.events import Event

_EXEC_EVENTS = {"pause": ev.EXEC_PAUSED, "resume": ev.EXEC_RESUMED, "abort": ev.EXEC_ABORTED}
_APPROVAL_EVENTS = {"approve": ev.APPROVAL_GRANTED, "deny": ev.APPROVAL_DENIED}


def refusal(
    control: Control,
    *,
    submitter: str,
    waiting: Mapping[str, Collection[str]],
    admins: Collection[str],
) -> str | None:
    """Why `control.actor` may not do this, or None if it may."""
    actor = control.actor
    if control.action in _EXEC_EVENTS:
        if actor == submitter or actor in admins:
            return None
        return f"{control.action}: only the submitter or a subnet admin may ({actor} is neither)"
    step = control.step
    if step is None or step not in waiting:
        return f"{control.action}: step {step!r} is not waiting for an approval"
    if actor in waiting[step] or actor in admins:
        return None
    return f"{control.action} {step}: {actor} is not one of its approvers nor a subnet admin"


def control_event(control: Control, now_ms: int) -> Event:
    """The engine event an allowed control becomes (approvals are attempt 1, as locally)."""
    if control.action in _EXEC_EVENTS:
        return Event(_EXEC_EVENTS[control.action], ts=now_ms, actor=control.actor)
    return Event(
        _APPROVAL_EVENTS[control.action], control.step, 1, now_ms, None, actor=control.actor
    )
