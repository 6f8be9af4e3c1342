"""An execution as the control API shows it (`exec.status`, `exec.records`; docs/api.md):
its status, result and one row per step instance, computed from the verified ledger.

Pure apart from reading the repo: no trio, no network. The API runs these functions in
a worker thread.

Step timing (record `ts` values are the writers' wall clocks, informational only):

* `started_at`: the ts of the step's first `step.started` record if it has one (timed
  steps: sleep, wait_for, approval), else the ts of the record just before the step's
  first record in replay order (the record that made it due, or the one written while
  it ran). A container (foreach, parallel) gets its first record when it settles, so its
  start is that of its last child, not its first.
* `finished_at`: the ts of the record that settled it (completed, or failed for good).
* `duration_ms`: `finished_at - started_at`, at least 0 (clocks of different writers
  may disagree); null until the step has settled.
"""

from __future__ import annotations

import json
from typing import Any, Final, NoReturn

from qflow_node.codec import CID, RAW, cid_codec
from qflow_node.core.engine import events as ev
from qflow_node.core.engine.records import read_submission
from qflow_node.core.engine.state import COMPLETED, FAILED, TERMINAL
from qflow_node.core.ledger import Record
from qflow_node.ledger_store import LedgerStore
from qflow_node.runtime.replay import Replay, replay
from qflow_node.store import BlockStore, StoreError

PENDING: Final = "pending"  # known by its submission, no record yet
REJECTED: Final = "rejected"  # a refused submission: no ledger, never will be one
MAX_INLINE_PAYLOAD: Final = 4096  # bytes of a JSON payload shown inline by exec.records
_SETTLED: Final = frozenset({COMPLETED, FAILED})
_EXEC_ENDS: Final = frozenset({ev.EXEC_COMPLETED, ev.EXEC_FAILED, ev.EXEC_ABORTED})


class ExecNotFoundError(LookupError):
    """This repo holds no record of the execution."""

    def __init__(self, exec: CID) -> None:
        super().__init__(f"this node holds no records of execution {exec.encode()}")
        self.exec = exec


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def exec_view(ledger: LedgerStore, exec: CID) -> dict[str, Any]:
    """The `exec.status` result of `exec`, from the verified ledger.

    `heads` are read just before replaying, so they never name a record the view lacks.
    Raises ExecNotFoundError (no records here), ReplayError (an invalid ledger or an
    unusable flow), LedgerStoreError/StoreError (an unreadable repo).
    """
    heads = ledger.heads(exec)
    if not heads:
        raise ExecNotFoundError(exec)
    result = replay(ledger, exec)
    state = result.state
    return {
        "exec": exec.encode(),
        "status": state.status,
        "flow": result.flow.encode(),
        "records": result.total,
        "heads": [h.encode() for h in heads],
        "started_at": result.applied[0][1].ts if result.applied else None,
        "finished_at": _finished_at(result),
        "output": state.output,
        "error": state.error,
        "steps": step_rows(result),
    }


def pending_view(ledger: LedgerStore, exec: CID) -> dict[str, Any]:
    """The `exec.status` result of an execution the node drives but has no record of yet
    (its `exec.started` is still to be written): status `pending`."""
    return {
        "exec": exec.encode(),
        "status": PENDING,
        "flow": _submitted_flow(ledger.store, exec),
        "records": 0,
        "heads": [],
        "started_at": None,
        "finished_at": None,
        "output": None,
        "error": None,
        "steps": [],
    }


def rejected_view(exec: CID, *, reason: str, message: str, by: str) -> dict[str, Any]:
    """The `exec.status` result of a submission refused by this node or, as a peer's
    `rejection` said, by `by`: status `rejected`, terminal, with the reason code and
    message, and as `error` too (for clients that only read that)."""
    return {
        "exec": exec.encode(),
        "status": REJECTED,
        "reason": reason,
        "message": message,
        "by": by,
        "flow": None,
        "records": 0,
        "heads": [],
        "started_at": None,
        "finished_at": None,
        "output": None,
        "error": {"kind": reason, "message": message},
        "steps": [],
    }


def step_rows(result: Replay) -> list[dict[str, Any]]:
    """One row per step instance, in the order they first appear in the ledger."""
    before: dict[str, int | None] = {}  # step -> ts of the record before its first
    started: dict[str, int] = {}  # step -> ts of its first step.started
    last: dict[str, Record] = {}
    previous_ts: int | None = None
    for _, record in result.applied:
        step = record.step
        if step is not None:
            before.setdefault(step, previous_ts)
            if record.kind == ev.STEP_STARTED:
                started.setdefault(step, record.ts)
            last[step] = record
        previous_ts = record.ts
    rows = []
    for step, previous in before.items():
        inst = result.state.instances.get(step)
        if inst is None:
            continue  # a record of a step the engine refused (not an instance)
        start = started.get(step, previous)
        finish = inst.ts if inst.status in _SETTLED else None
        duration = None if start is None or finish is None else max(0, finish - start)
        rows.append(
            {
                "step": step,
                "status": inst.status,
                "attempt": inst.attempt,
                "node": last[step].node,
                "started_at": start,
                "finished_at": finish,
                "duration_ms": duration,
                "error": inst.error,
            }
        )
    return rows


def record_json(store: BlockStore, index: int, cid: CID, record: Record) -> dict[str, Any]:
    """One `exec.records` entry."""
    return {
        "index": index,
        "cid": cid.encode(),
        "kind": record.kind,
        "step": record.step,
        "attempt": record.attempt,
        "node": record.node,
        "actor": record.actor,
        "ts": record.ts,
        "payload": payload_json(store, record.payload),
    }


def payload_json(store: BlockStore, cid: CID) -> Any:
    """A raw JSON payload of at most MAX_INLINE_PAYLOAD bytes as its value; any other
    payload (large, dag-cbor like exec.started's submission, missing) as {"cid", "size"}
    (size null when the block is not here)."""
    try:
        size = store.stat(cid).size
    except StoreError:
        return {"cid": cid.encode(), "size": None}
    if cid_codec(cid) == RAW and size <= MAX_INLINE_PAYLOAD:
        try:
            # NaN/Infinity are not JSON: the response encoder would refuse them.
            return json.loads(store.get(cid).decode("utf-8"), parse_constant=_not_json)
        except (StoreError, ValueError, RecursionError):
            pass
    return {"cid": cid.encode(), "size": size}


def _not_json(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finished_at(result: Replay) -> int | None:
    if not is_terminal(result.state.status):
        return None
    ends = [record.ts for _, record in result.applied if record.kind in _EXEC_ENDS]
    return ends[-1] if ends else None


def _submitted_flow(store: BlockStore, exec: CID) -> str | None:
    try:
        flow: CID = read_submission(store.get(exec))["flow"]
    except Exception:  # not here, or not a submission: the status says pending either way
        return None
    return flow.encode()
