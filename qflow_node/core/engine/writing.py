"""An accepted engine event as the blocks that record it: payload, state delta, record.

One place for the event → record mapping, so the local runner and the distributed
executor write byte-identical ledgers for the same events (docs/protocol.md,
"Execution events").
"""

from __future__ import annotations

from collections.abc import Mapping

from qflow_node.codec import CID, Block, raw_block
from qflow_node.core.engine import actions as act
from qflow_node.core.engine import events as ev
from qflow_node.core.engine.events import Event
from qflow_node.core.engine.records import json_block
from qflow_node.core.ledger import Record, new_record
from qflow_node.identity.keys import SigningKey


def event_blocks(
    exec: CID,
    event: Event,
    *,
    parents: Mapping[CID, Mapping[str, int]],
    key: SigningKey,
    payload: CID | None = None,
    output: bytes | None = None,
) -> tuple[list[Block], Block, Record]:
    """(blocks to store before the record, the signed record block, the record).

    The payload is `payload` when given (exec.started: the submission), else `output`
    as a raw block (a step's exact output bytes), else the event's value as JSON.
    `parents` are the writer's current heads with their clocks. The event's `quorum` (a
    `Certificate` or its map) goes into the record's; RecordError if it is no certificate
    of this record's slot.
    """
    blocks: list[Block] = []
    if payload is None:
        block = raw_block(output) if output is not None else json_block(event.value)
        blocks.append(block)
        payload = block.cid
    state = None
    if event.delta:
        delta = raw_block(event.delta)
        blocks.append(delta)
        state = delta.cid
    record_block, record = new_record(
        exec,
        event.kind,
        parents=parents,
        payload=payload,
        key=key,
        ts=event.ts,
        step=event.step,
        attempt=event.attempt,
        state=state,
        actor=event.actor,
        quorum=event.quorum,
    )
    return blocks, record_block, record


def action_event(action: act.Action, now: int) -> Event:
    """The event an action that runs nothing produces at `now` (bookkeeping: a step
    started, settled by the engine itself, a timer fired, the execution's end)."""
    if isinstance(action, act.StartStep):
        return Event(ev.STEP_STARTED, action.instance, action.attempt, now)
    if isinstance(action, act.CompleteStep):
        return Event(ev.STEP_COMPLETED, action.instance, action.attempt, now, action.output)
    if isinstance(action, act.FailStep):
        return Event(ev.STEP_FAILED, action.instance, action.attempt, now, action.error)
    if isinstance(action, act.FireTimer):
        return Event(ev.TIMER_FIRED, action.instance, action.attempt, now, {"due": action.due})
    if isinstance(action, act.CompleteExecution):
        return Event(ev.EXEC_COMPLETED, ts=now, value=action.output)
    if isinstance(action, act.FailExecution):
        return Event(ev.EXEC_FAILED, ts=now, value=action.error)
    raise TypeError(f"{type(action).__name__} is not a bookkeeping action")
