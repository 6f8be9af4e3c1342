"""The record format: building, decoding, field rules and the signed bytes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qflow_node.codec import CID, DAG_CBOR, RAW, cid_for, dag_block, encode_dag, raw_block
from qflow_node.core.ledger import (
    FIELDS,
    KINDS,
    SIG_DOMAIN,
    Reason,
    Record,
    RecordError,
    check_record,
    decode_record,
    new_record,
    signing_message,
    unsigned_bytes,
)
from qflow_node.core.ledger.testing import (
    KEYS,
    PAYLOAD,
    SUBMISSION,
    World,
    chain,
    record_obj,
    sign_obj,
)
from qflow_node.identity.keys import verify


@contextmanager
def refused(fragment: str, reason: Reason = Reason.BAD_FIELD) -> Iterator[None]:
    """Expect a RecordError with this reason whose message contains `fragment`."""
    with pytest.raises(RecordError) as info:
        yield
    assert info.value.reason is reason
    assert fragment in str(info.value), str(info.value)


def genesis_obj(**changes: Any) -> dict[str, Any]:
    world, replica = chain(1)
    obj = record_obj(world, replica.heads[0])
    obj.update(changes)
    return obj


def step_obj(**changes: Any) -> dict[str, Any]:
    world, replica = chain(2)
    obj = record_obj(world, replica.heads[0])
    obj.update(changes)
    return obj


def test_new_record_round_trips_through_its_block() -> None:
    world, replica = chain(3)
    head = replica.heads[0]
    data = world.lookup(head)
    assert data is not None
    record = decode_record(head, data)
    assert record == world.records[head]
    assert dag_block(record.to_obj()).cid == head


def test_genesis_and_successor_fields() -> None:
    world, _ = chain(2)
    first, second = (world.records[c] for c in world.appended)
    node = KEYS[0].peer_id
    assert first.kind == "exec.started" and first.prev == () and first.clock == {node: 1}
    assert first.step is None and first.attempt == 0 and first.quorum is None and first.v == 1
    assert second.prev == (world.appended[0],) and second.clock == {node: 2}
    assert second.exec == SUBMISSION.cid and second.payload == PAYLOAD.cid
    assert second.node == node and len(second.sig) == 64


def test_signature_covers_the_domain_separated_unsigned_encoding() -> None:
    world, replica = chain(2)
    record = world.records[replica.heads[0]]
    message = SIG_DOMAIN + unsigned_bytes(record.to_obj())
    verify(KEYS[0].public_key, message, record.sig)
    assert SIG_DOMAIN == b"qflow/record/v1\x00"


BOUNDARY_TS = [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1]


@settings(max_examples=60, deadline=None)
@given(
    ts=st.sampled_from(BOUNDARY_TS) | st.integers(min_value=0, max_value=2**63 - 1),
    step=st.none() | st.text(min_size=1, max_size=40),
    extra_peers=st.integers(min_value=0, max_value=3),
)
def test_signed_bytes_and_signing_message_equal_plain_encodings(
    ts: int, step: str | None, extra_peers: int
) -> None:
    parents = {
        cid_for(bytes([i]), DAG_CBOR): {KEYS[i + 1].peer_id: i + 1} for i in range(extra_peers)
    }
    kind = "exec.started" if not parents else ("step.completed" if step else "exec.completed")
    block, record = new_record(
        SUBMISSION.cid,
        kind,
        parents=parents,
        payload=PAYLOAD.cid,
        key=KEYS[0],
        ts=ts,
        step=step if parents else None,
    )
    expected = SIG_DOMAIN + unsigned_bytes(record.to_obj())
    assert signing_message(block.data, ts) == expected
    assert block.data == encode_dag(record.to_obj())  # built by splicing, not encoding


def test_fields_set_is_exactly_the_documented_one() -> None:
    assert set(genesis_obj()) == FIELDS
    assert len(FIELDS) == 14
    assert {
        "exec.started",
        "exec.paused",
        "exec.resumed",
        "exec.aborted",
        "exec.completed",
        "exec.failed",
        "step.started",
        "step.completed",
        "step.failed",
        "step.skipped",
        "approval.granted",
        "approval.denied",
        "timer.fired",
        "event.received",
    } == KINDS


BAD_CID_LEN = CID(b"\x01\x71\x12\x20" + b"\x00" * 31)
RAW_CID = raw_block(b"x").cid


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "step.exploded"}, "'kind'"),
        ({"kind": 7}, "'kind'"),
        ({"exec": RAW_CID}, "'exec'"),
        ({"exec": "bafy"}, "'exec'"),
        ({"step": ""}, "'step'"),
        ({"step": "x" * 257}, "'step'"),
        ({"step": 5}, "'step'"),
        ({"attempt": -1}, "'attempt'"),
        ({"attempt": 2**32}, "'attempt'"),
        ({"attempt": True}, "'attempt'"),
        ({"attempt": 1.0}, "'attempt'"),
        ({"prev": "x"}, "'prev'"),
        ({"prev": [BAD_CID_LEN]}, "prev link"),
        ({"prev": ["bafy"]}, "'prev' entries"),
        ({"payload": None}, "'payload'"),
        ({"payload": BAD_CID_LEN}, "'payload'"),
        ({"state": b"x"}, "'state'"),
        ({"actor": "did:key:zNope"}, "'actor'"),
        ({"actor": KEYS[0].peer_id}, "'actor'"),
        ({"node": KEYS[0].did}, "'node'"),
        ({"node": None}, "'node'"),
        ({"ts": -1}, "'ts'"),
        ({"ts": 2**63}, "'ts'"),
        ({"ts": 1.5}, "'ts'"),
        ({"clock": {}}, "'clock'"),
        ({"clock": [1]}, "'clock'"),
        ({"quorum": b""}, "'quorum'"),
        ({"sig": b"x" * 63}, "'sig'"),
        ({"sig": "x" * 64}, "'sig'"),
    ],
)
def test_bad_fields_are_refused(changes: dict[str, Any], message: str) -> None:
    obj = step_obj(**changes)
    with pytest.raises(RecordError) as info:
        check_record(obj)
    assert info.value.reason is Reason.BAD_FIELD
    assert message in str(info.value)


def test_clock_values_must_be_positive_ints() -> None:
    obj = step_obj()
    obj["clock"] = {**obj["clock"], KEYS[1].peer_id: 0}
    with refused("clock"):
        check_record(obj)


def test_clock_must_contain_the_writer() -> None:
    obj = step_obj(clock={KEYS[1].peer_id: 1})
    with refused("includes 'node'"):
        check_record(obj)


def test_unknown_and_missing_fields_are_named() -> None:
    obj = step_obj(extra=1)
    del obj["ts"]
    with pytest.raises(RecordError) as info:
        check_record(obj)
    assert info.value.reason is Reason.BAD_FIELD
    assert "missing field(s) ['ts']" in str(info.value)
    assert "unknown field(s) ['extra']" in str(info.value)


@pytest.mark.parametrize("version", [0, 2, "1", None, True])
def test_other_versions_are_unsupported(version: object) -> None:
    with pytest.raises(RecordError) as info:
        check_record(step_obj(v=version))
    assert info.value.reason is Reason.UNSUPPORTED_VERSION


def test_a_record_is_a_map() -> None:
    with refused("a record is a map"):
        check_record([1, 2])


def test_prev_must_be_sorted_and_unique() -> None:
    a, b = sorted((cid_for(b"a", DAG_CBOR), cid_for(b"b", DAG_CBOR)), key=lambda c: c.cid_bytes)
    check_record(step_obj(prev=[a, b]))
    for prev in ([b, a], [a, a]):
        with refused("sorted by raw CID bytes"):
            check_record(step_obj(prev=prev))


def test_prev_has_at_most_1024_links() -> None:
    links = sorted((cid_for(i.to_bytes(2, "big"), DAG_CBOR) for i in range(1025)),
                   key=lambda c: c.cid_bytes)  # fmt: skip
    check_record(step_obj(prev=links[:1024]))
    with refused("at most 1024 links"):
        check_record(step_obj(prev=links))


def test_only_exec_started_has_no_prev() -> None:
    with refused("only exec.started may have empty 'prev'"):
        check_record(step_obj(prev=[]))
    with refused("exec.started record has empty 'prev'"):
        check_record(step_obj(kind="exec.started", step=None))


@pytest.mark.parametrize(
    ("kind", "changes", "message"),
    [
        ("step.completed", {"step": None}, "needs a 'step'"),
        ("approval.granted", {"actor": KEYS[1].did, "step": None}, "needs a 'step'"),
        ("approval.granted", {"actor": None}, "needs an 'actor'"),
        ("exec.paused", {"step": None, "actor": None}, "needs an 'actor'"),
        ("exec.completed", {}, "must have 'step' null"),
        ("exec.failed", {"step": None, "attempt": 1}, "'attempt' must be 0"),
    ],
)
def test_kind_rules(kind: str, changes: dict[str, Any], message: str) -> None:
    obj = step_obj(kind=kind, **changes)
    with pytest.raises(RecordError, match=message):
        check_record(obj)


@pytest.mark.parametrize("kind", ["timer.fired", "event.received"])
def test_timers_and_events_may_or_may_not_name_a_step(kind: str) -> None:
    check_record(step_obj(kind=kind))
    check_record(step_obj(kind=kind, step=None))


def test_new_record_refuses_what_the_format_forbids() -> None:
    world, replica = chain(1)
    parents = {replica.heads[0]: world.records[replica.heads[0]].clock}
    with refused("exec.started record has empty 'prev'"):
        new_record(SUBMISSION.cid, "exec.started", parents=parents, payload=PAYLOAD.cid,
                   key=KEYS[0], ts=1)  # fmt: skip
    with refused("'kind'"):
        new_record(SUBMISSION.cid, "nope", parents=parents, payload=PAYLOAD.cid, key=KEYS[0], ts=1)


def test_new_record_clock_merges_parents_and_ticks_the_writer() -> None:
    a, b = cid_for(b"a", DAG_CBOR), cid_for(b"b", DAG_CBOR)
    n0, n1, n2 = (k.peer_id for k in KEYS[:3])
    _, record = new_record(
        SUBMISSION.cid,
        "exec.completed",
        parents={a: {n0: 3, n1: 1}, b: {n0: 1, n1: 4, n2: 2}},
        payload=PAYLOAD.cid,
        key=KEYS[2],
        ts=5,
    )
    assert record.clock == {n0: 3, n1: 4, n2: 3}
    assert list(record.prev) == sorted([a, b], key=lambda c: c.cid_bytes)


def test_decode_record_checks_codec_hash_and_encoding() -> None:
    world, replica = chain(1)
    head = replica.heads[0]
    data = world.lookup(head)
    assert data is not None
    with pytest.raises(RecordError) as info:
        decode_record(CID(bytes([1, RAW]) + head.cid_bytes[2:]), data)
    assert info.value.reason is Reason.WRONG_CODEC
    with pytest.raises(RecordError) as info:
        decode_record(head, data + b"\x00")
    assert info.value.reason is Reason.HASH_MISMATCH
    truncated = data[:-1]
    with pytest.raises(RecordError) as info:
        decode_record(cid_for(truncated, DAG_CBOR), truncated)
    assert info.value.reason is Reason.NOT_CANONICAL
    assert "not enough bytes" in str(info.value)


def test_non_canonical_encoding_is_refused_even_if_signed() -> None:
    # A record whose integer is not minimally encoded: same value, different bytes.
    obj = genesis_obj(attempt=0)
    block = sign_obj(obj, KEYS[0])
    data = block.data.replace(b"gattempt\x00", b"gattempt\x18\x00")
    assert data != block.data
    with pytest.raises(RecordError) as info:
        decode_record(cid_for(data, DAG_CBOR), data)
    assert info.value.reason is Reason.NOT_CANONICAL
    assert "minimal" in str(info.value)


def test_record_to_obj_is_the_encoded_map() -> None:
    world, replica = chain(2)
    record: Record = world.records[replica.heads[0]]
    assert encode_dag(record.to_obj()) == world.lookup(replica.heads[0])


def test_world_helpers_build_valid_records() -> None:
    world = World()
    assert world.lookup(SUBMISSION.cid) == SUBMISSION.data
