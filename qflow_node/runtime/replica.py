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
from typing import Any, Final, Literal

from qflow_node.codec import CID
from qflow_node.codec.envelope_bodies import Control
from qflow_node.core import engine as eng
from qflow_node.core.control import control_event
from qflow_node.core.critical import CriticalKeys
from qflow_node.core.engine.records import PayloadError, event_of
from qflow_node.core.engine.state import TERMINAL
from qflow_node.core.flow import FlowIR
from qflow_node.core.ledger import Record
from qflow_node.core.scheduling import FINISH, START, Priority, Slot
from qflow_node.core.submission import Submission
from qflow_node.ledger_store import LedgerStore, LedgerStoreError
from qflow_node.runtime.replay import ReplayError, checked_flow, replay

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
    controls_since: dict[str, int] = field(default_factory=dict)  # accepted at (monotonic)
    # Unclaimed slots: (next re-announcement, round), monotonic ms; declined until.
    reannounce: dict[Slot, tuple[int, int]] = field(default_factory=dict)
    declined: dict[Slot, int] = field(default_factory=dict)
    hold_until: int = 0  # monotonic ms: watch, do not claim, before (after a restart)
    # After a restart, its own heads are "unchecked", then "checking" with peers (a record
    # lost in the crash is rewound), then "settled"; until then they are not announced.
    own_heads: Literal["unchecked", "checking", "settled"] = "settled"
    # `due` of the current state when no control is queued: (state, result). Valid until
    # the state changes (states are immutable: identity says it) or its wake time comes.
    due_cache: tuple[eng.ExecState, Due] | None = None

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


def open_replica(
    ledger: LedgerStore, submission: Submission, critical: CriticalKeys | None = None
) -> Replica:
    """A replica from a verified submission whose flow and inputs blocks are local;
    `critical`, the subnet policy's keys its critical steps' certificates are checked
    with (docs/consensus.md, "Replicas")."""
    store = ledger.store
    try:
        ir = checked_flow(ledger, submission.flow)
        inputs = json.loads(store.get(submission.inputs).decode("utf-8"))
    except Exception as exc:
        raise ReplicaError(
            f"execution {submission.cid.encode()}: flow or inputs unusable: {exc}"
        ) from None
    replica = Replica(
        submission.cid,
        submission,
        ir,
        inputs,
        eng.initial(ir, submission.cid.encode(), critical),
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
    """Bring the state up to the ledger's heads; whether they moved.

    The common case - one new record on top of the heads the state was folded from (a
    sequential flow, a record this node just wrote or merged) - applies that record's
    event alone. Anything else (concurrent branches, several new records) folds the
    whole verified ledger again, so the replay order decides, as everywhere.
    """
    heads = ledger.heads(replica.exec)
    if set(heads) == set(replica.heads):
        return False
    if not heads:  # rewound to nothing (its exec.started was lost with a crash)
        replica.state = eng.initial(replica.ir, replica.exec.encode(), replica.state.critical)
        replica.heads, replica.records = (), 0
        return True
    if replica.started and len(heads) == 1 and _extend(replica, ledger, heads[0]):
        return True
    try:
        folded = replay(ledger, replica.exec, critical=replica.state.critical)
    except ReplayError as exc:
        raise ReplicaError(str(exc)) from None
    replica.state = folded.state
    replica.heads = heads
    replica.records = folded.total
    return True


_EXTEND_DEPTH: Final = 4  # records applied one by one; a longer gap is folded again


def _extend(replica: Replica, ledger: LedgerStore, head: CID) -> bool:
    """Apply the records from the current heads up to `head` one by one, if they form a
    short chain right on them (a record written or merged alone, or a step's record
    and the end of the execution written together). Verified records only: the ledger
    holds `head` as a head after a commit or a verifying merge."""
    chain: list[tuple[CID, Record]] = []
    try:
        cid = head
        while len(chain) < _EXTEND_DEPTH:
            record = ledger.record(cid)
            chain.append((cid, record))
            if set(record.prev) == set(replica.heads):
                break
            if len(record.prev) != 1:
                return False
            cid = record.prev[0]
        else:
            return False
        events = [event_of(cid, record, ledger.store.get) for cid, record in reversed(chain)]
    except (LedgerStoreError, PayloadError):
        return False
    state = replica.state
    for event in events:
        applied = eng.apply(state, event)
        if isinstance(applied, eng.Rejection):
            return False  # the full fold will say what it makes of it
        state = applied
    replica.state = state
    replica.heads = (head,)
    replica.records += len(chain)
    return True


@dataclass(frozen=True, slots=True)
class Due:
    """What a replica has to do now: claimable slots and their actions, and when to
    look again for time-driven work (wall-clock ms, None if nothing is scheduled)."""

    slots: dict[Slot, tuple[eng.Action, ...]]
    wake_at: int | None


def due(replica: Replica, now_ms: int) -> Due:
    """The slots due at wall-clock `now_ms`. Without queued controls the answer depends
    only on the state until its wake time, so it is kept (the scheduler asks after
    every claim and record it hears)."""
    if not replica.started:
        return Due({Slot(replica.exec, START, 0): ()}, None)
    cached = replica.due_cache
    if (
        cached is not None
        and cached[0] is replica.state
        and not replica.controls
        and (cached[1].wake_at is None or now_ms < cached[1].wake_at)
    ):
        return cached[1]
    work = _due(replica, now_ms)
    replica.due_cache = None if replica.controls else (replica.state, work)
    return work


def _due(replica: Replica, now_ms: int) -> Due:
    # A control is due once it applies: a resume waits for its pause's record, which
    # may still be on its way here.
    slots: dict[Slot, list[eng.Action]] = {
        Slot(replica.exec, name, 0): []
        for name, control in replica.controls.items()
        if not isinstance(eng.apply(replica.state, control_event(control, now_ms)), eng.Rejection)
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
