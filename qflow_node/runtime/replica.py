"""One execution as this node sees it: the submission, the flow, and the engine state
rebuilt from the verified ledger - and the slots (units of claimable work) due now.

Every node of the subnet keeps a replica of every active execution it hears of. The
state is never sent anywhere: it is the fold of the ledger (`runtime.replay`), which
every node holding the same records computes identically. A replica is cheap to
rebuild, so the runtime rebuilds it whenever the heads change (records are verified by
`LedgerStore.merge` before they become heads).

Slots (`core.scheduling.Slot`): `$start` before `exec.started` exists; then one slot per
(step instance, attempt) the engine has work for; `$finish` for completing or failing
the execution; `$ctl:<signature prefix>` for writing an allowed control (pause, resume,
abort, approve, deny) as a record. Timers, events and approvals are not claimable work:
a `Wake` only says when to look again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from qflow_node.codec import CID, decode_dag
from qflow_node.codec.envelope_bodies import Control
from qflow_node.core import engine as eng
from qflow_node.core.engine.state import TERMINAL
from qflow_node.core.flow import FlowIR, check_ir
from qflow_node.core.scheduling import FINISH, START, Priority, Slot
from qflow_node.core.submission import Submission
from qflow_node.ledger_store import LedgerStore
from qflow_node.runtime.replay import ReplayError, replay

CONTROL_PREFIX = "$ctl:"


class ReplicaError(Exception):
    """The execution's submission, flow or inputs cannot be used."""


@dataclass
class Replica:
    exec: CID
    submission: Submission
    ir: FlowIR
    inputs: Any
    state: eng.ExecState
    heads: tuple[CID, ...] = ()
    records: int = 0
    opened_ms: dict[Slot, int] = field(default_factory=dict)  # first seen due (monotonic)
    # Allowed controls not yet in the ledger, by slot name (`$ctl:` + signature prefix).
    controls: dict[str, Control] = field(default_factory=dict)
    # Unclaimed slots: (next re-announcement, round), monotonic ms; declined until.
    reannounce: dict[Slot, tuple[int, int]] = field(default_factory=dict)
    declined: dict[Slot, int] = field(default_factory=dict)

    @property
    def started(self) -> bool:
        return bool(self.heads)

    @property
    def finished(self) -> bool:
        return self.state.status in TERMINAL

    @property
    def priority(self) -> Priority:
        return self.submission.priority

    @property
    def subnet(self) -> str:
        return self.submission.subnet


def open_replica(ledger: LedgerStore, submission: Submission) -> Replica:
    """A replica from a verified submission whose flow and inputs blocks are local."""
    store = ledger.store
    try:
        ir = check_ir(decode_dag(store.get(submission.flow)))
        inputs = json.loads(store.get(submission.inputs).decode("utf-8"))
    except Exception as exc:
        raise ReplicaError(
            f"execution {submission.cid.encode()}: flow or inputs unusable: {exc}"
        ) from None
    replica = Replica(
        submission.cid, submission, ir, inputs, eng.initial(ir, submission.cid.encode())
    )
    refresh(replica, ledger)
    return replica


def control_slot(control: Control) -> str:
    """The slot that writes a control's record: one per control (its signature)."""
    return f"{CONTROL_PREFIX}{control.sig[:8].hex()}"


def waiting_approvals(replica: Replica, now_ms: int) -> dict[str, tuple[str, ...]]:
    """Approval steps waiting now, and their approvers."""
    if not replica.started:
        return {}
    return {
        action.instance: action.approvers
        for action in eng.next_actions(replica.state, now_ms)
        if isinstance(action, eng.AwaitApproval)
    }


def started_event(replica: Replica, now_ms: int) -> eng.Event:
    flow = replica.submission.flow.encode()
    return eng.Event(
        eng.events.EXEC_STARTED, ts=now_ms, value={"flow": flow, "inputs": replica.inputs}
    )


def refresh(replica: Replica, ledger: LedgerStore) -> bool:
    """Rebuild the state if the ledger's heads moved; whether they did."""
    heads = ledger.heads(replica.exec)
    if set(heads) == set(replica.heads):
        return False
    try:
        folded = replay(ledger, replica.exec)
    except ReplayError as exc:
        raise ReplicaError(str(exc)) from None
    replica.state = folded.state
    replica.heads = heads
    replica.records = folded.total
    return True


@dataclass(frozen=True, slots=True)
class Due:
    """What a replica has to do now: claimable slots and their actions, and when to
    look again for time-driven work (wall-clock ms, None if nothing is scheduled)."""

    slots: dict[Slot, tuple[eng.Action, ...]]
    wake_at: int | None


def due(replica: Replica, now_ms: int) -> Due:
    """The slots due at wall-clock `now_ms`."""
    if not replica.started:
        return Due({Slot(replica.exec, START, 0): ()}, None)
    slots: dict[Slot, list[eng.Action]] = {
        Slot(replica.exec, name, 0): [] for name in replica.controls
    }
    wake_at: int | None = None
    for action in eng.next_actions(replica.state, now_ms):
        if isinstance(action, eng.Wake):
            wake_at = action.at if wake_at is None else min(wake_at, action.at)
        elif isinstance(action, eng.AwaitEvent | eng.AwaitApproval):
            at = action.deadline
            wake_at = at if wake_at is None else min(wake_at, at)
        elif isinstance(action, eng.CompleteExecution | eng.FailExecution):
            slots.setdefault(Slot(replica.exec, FINISH, 0), []).append(action)
        else:
            slot = Slot(replica.exec, action.instance, action.attempt)
            slots.setdefault(slot, []).append(action)
    return Due({slot: tuple(actions) for slot, actions in slots.items()}, wake_at)
