"""Records ↔ engine events: what each record kind's payload block holds.

docs/protocol.md, "Execution events", is the spec. Every payload is a raw block of
UTF-8 JSON (a step's output exactly as the step wrote it; everything the engine writes
in `json_bytes` form), except exec.started, whose payload is the execution's
submission: a dag-cbor block whose CID is the execution id, with `flow` a link to the
compiled flow and `inputs` a link to a raw JSON block. Two formats are read: the local,
unsigned qflow.submission/0 {format, flow, inputs, submitter, nonce, ts} (`qflow run`)
and the signed qflow.submission/1 (`qflow_node.core.submission`, docs/submission.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from qflow_node.codec import (
    CID,
    DAG_CBOR,
    RAW,
    Block,
    CodecError,
    cid_codec,
    cid_for,
    dag_block,
    decode_dag,
    raw_block,
)
from qflow_node.core.engine import events as ev
from qflow_node.core.engine.events import Event
from qflow_node.core.ledger import Record
from qflow_node.core.submission import FORMAT as SIGNED_SUBMISSION_FORMAT
from qflow_node.core.submission import SubmissionError, verify_submission

SUBMISSION_FORMAT: Final = "qflow.submission/0"  # the local, unsigned submission (qflow run)

Fetch = Callable[[CID], bytes]


class PayloadError(Exception):
    """A record's payload or state block is missing or not what its kind requires."""


def json_bytes(value: Any) -> bytes:
    """The one JSON form the engine writes: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def json_block(value: Any) -> Block:
    return raw_block(json_bytes(value))


def submission_blocks(
    flow: CID, inputs: Any, *, submitter: str | None, nonce: bytes, ts: int
) -> tuple[Block, Block]:
    """(submission, inputs) blocks; the submission's CID is the execution id."""
    inputs_block = json_block(inputs)
    submission = dag_block(
        {
            "format": SUBMISSION_FORMAT,
            "flow": flow,
            "inputs": inputs_block.cid,
            "submitter": submitter,
            "nonce": nonce,
            "ts": ts,
        }
    )
    return submission, inputs_block


def read_submission(data: bytes) -> dict[str, Any]:
    """The submission map (v0, or v1 with its signature verified); PayloadError if not."""
    try:
        obj = decode_dag(data)
    except CodecError as exc:
        raise PayloadError(f"submission is not dag-cbor: {exc}") from None
    if isinstance(obj, dict) and obj.get("format") == SIGNED_SUBMISSION_FORMAT:
        try:
            # The CID is computed from the bytes: callers read them by CID from a store.
            verify_submission(cid_for(data, DAG_CBOR), data)
        except SubmissionError as exc:
            raise PayloadError(f"invalid {SIGNED_SUBMISSION_FORMAT} block: {exc}") from None
        return obj
    if (
        not isinstance(obj, dict)
        or obj.get("format") != SUBMISSION_FORMAT
        or not isinstance(obj.get("flow"), CID)
        or not isinstance(obj.get("inputs"), CID)
    ):
        raise PayloadError(f"not a {SUBMISSION_FORMAT} or {SIGNED_SUBMISSION_FORMAT} block")
    return obj


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"{what} is not UTF-8 JSON: {exc}") from None


def _fetch(fetch: Fetch, cid: CID, what: str) -> bytes:
    try:
        return fetch(cid)
    except Exception as exc:
        raise PayloadError(f"{what} block {cid.encode()} cannot be read: {exc}") from None


def event_of(cid: CID, record: Record, fetch: Fetch) -> Event:
    """The engine event of a verified record; PayloadError if its blocks are unusable."""
    data = _fetch(fetch, record.payload, "payload")
    if record.kind == ev.EXEC_STARTED:
        if cid_codec(record.payload) != DAG_CBOR or record.payload != record.exec:
            raise PayloadError("exec.started's payload must be the submission (the exec id)")
        submission = read_submission(data)
        inputs = _json(_fetch(fetch, submission["inputs"], "inputs"), "inputs")
        value: Any = {"flow": submission["flow"].encode(), "inputs": inputs}
    else:
        if cid_codec(record.payload) != RAW:
            raise PayloadError(f"{record.kind}'s payload must be a raw JSON block")
        value = _json(data, "payload")
    delta = None
    if record.state is not None:
        delta = _fetch(fetch, record.state, "state")
    return Event(
        kind=record.kind,
        step=record.step,
        attempt=record.attempt,
        ts=record.ts,
        value=value,
        actor=record.actor,
        delta=delta,
        ref=cid.encode(),
        quorum=record.quorum,
    )
