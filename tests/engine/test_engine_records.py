"""Records ↔ events (docs/protocol.md, "Execution events")."""

from __future__ import annotations

import pytest

from qflow_node.codec import CID, dag_block, raw_block
from qflow_node.core.engine.records import (
    PayloadError,
    event_of,
    json_bytes,
    submission_blocks,
)
from qflow_node.core.ledger import new_record
from qflow_node.identity.keys import SigningKey

KEY = SigningKey(bytes([7]) * 32)
FLOW = dag_block({"format": "qflow.flow/1"}).cid


def test_json_bytes_is_one_canonical_form() -> None:
    assert json_bytes({"b": [1, 2.0], "a": "é"}) == '{"a":"é","b":[1,2.0]}'.encode()
    with pytest.raises(ValueError, match="Out of range float values"):
        json_bytes(float("nan"))


def blocks_of(*blocks: object) -> dict[CID, bytes]:
    return {b.cid: b.data for b in blocks}  # type: ignore[attr-defined]


def test_exec_started_and_step_events_decode() -> None:
    submission, inputs = submission_blocks(FLOW, {"who": "Ada"}, submitter=None, nonce=b"n", ts=5)
    start_block, start = new_record(
        submission.cid, "exec.started", parents={}, payload=submission.cid, key=KEY, ts=5
    )
    output = raw_block(b'{"ok": true}\n')
    delta = raw_block(b"\x01\x02")
    done_block, done = new_record(
        submission.cid, "step.completed", parents={start_block.cid: start.clock},
        payload=output.cid, state=delta.cid, key=KEY, ts=6, step="a[0]/b", attempt=2,
    )  # fmt: skip
    store = blocks_of(submission, inputs, output, delta)
    event = event_of(start_block.cid, start, store.__getitem__)
    assert (event.kind, event.value) == (
        "exec.started",
        {"flow": FLOW.encode(), "inputs": {"who": "Ada"}},
    )
    event = event_of(done_block.cid, done, store.__getitem__)
    assert (event.step, event.attempt, event.ts, event.value, event.delta) == (
        "a[0]/b", 2, 6, {"ok": True}, b"\x01\x02",
    )  # fmt: skip
    assert event.ref == done_block.cid.encode()


def test_bad_payloads_are_reported() -> None:
    submission, inputs = submission_blocks(FLOW, {}, submitter=None, nonce=b"n", ts=5)
    start_block, start = new_record(
        submission.cid, "exec.started", parents={}, payload=submission.cid, key=KEY, ts=5
    )
    with pytest.raises(PayloadError, match=r"^inputs block .* cannot be read: "):
        event_of(start_block.cid, start, blocks_of(submission).__getitem__)
    not_json = raw_block(b"\xff")
    _, bad = new_record(
        submission.cid, "step.completed", parents={start_block.cid: start.clock},
        payload=not_json.cid, key=KEY, ts=6, step="a", attempt=1,
    )  # fmt: skip
    with pytest.raises(PayloadError, match=r"^payload is not UTF-8 JSON: "):
        event_of(start_block.cid, bad, blocks_of(not_json).__getitem__)
    other = dag_block({"x": 1})
    _, cbor = new_record(
        submission.cid, "step.failed", parents={start_block.cid: start.clock},
        payload=other.cid, key=KEY, ts=6, step="a", attempt=1,
    )  # fmt: skip
    with pytest.raises(PayloadError, match=r"^step\.failed's payload must be a raw JSON block$"):
        event_of(start_block.cid, cbor, blocks_of(other).__getitem__)
    _, wrong = new_record(
        submission.cid, "exec.started", parents={}, payload=inputs.cid, key=KEY, ts=5
    )
    with pytest.raises(PayloadError, match=r"must be the submission"):
        event_of(start_block.cid, wrong, blocks_of(inputs).__getitem__)
