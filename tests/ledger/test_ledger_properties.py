"""Property tests: whatever replicas do, the ledger verifies; any tamper is found and
located; replay order does not depend on the order blocks arrived in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from qflow_node.codec import CID, DAG_CBOR, cid_for, encode_dag
from qflow_node.core.ledger import (
    Reason,
    Record,
    happened_before,
    replay_order,
    verify_execution,
)
from qflow_node.core.ledger.testing import KEYS, Replica, World

MAX_REPLICAS = 4

# (op, replica, other): "append" by replica, or "sync" replica <- other.
operations = st.lists(
    st.tuples(
        st.sampled_from(["append", "append", "sync"]),
        st.integers(min_value=0, max_value=MAX_REPLICAS - 1),
        st.integers(min_value=0, max_value=MAX_REPLICAS - 1),
    ),
    max_size=25,
)


@dataclass
class Run:
    world: World
    replicas: list[Replica]
    final: Replica


def play(ops: list[tuple[str, int, int]]) -> Run:
    """Replica 0 starts the execution; the others append, sync, and may also start it
    (concurrent exec.started records are allowed). A last replica merges every head
    and completes the execution."""
    world = World()
    replicas = [Replica(KEYS[i]) for i in range(MAX_REPLICAS)]
    world.append(replicas[0])
    for op, i, j in ops:
        if op == "append":
            world.append(replicas[i])
        elif replicas[j].heads:
            world.sync(replicas[i], replicas[j])
    final = Replica(KEYS[MAX_REPLICAS])
    for replica in replicas:
        world.sync(final, replica)
    world.append(final, "exec.completed")
    return Run(world, replicas, final)


def ancestors(records: dict[CID, Record], cid: CID) -> set[CID]:
    found: set[CID] = set()
    stack = list(records[cid].prev)
    while stack:
        parent = stack.pop()
        if parent not in found:
            found.add(parent)
            stack.extend(records[parent].prev)
    return found


@settings(max_examples=80, deadline=None)
@given(operations)
def test_any_history_of_appends_and_merges_verifies(ops: list[tuple[str, int, int]]) -> None:
    run = play(ops)
    world = run.world
    report = verify_execution(run.final.heads, world.lookup, exec=world.exec)
    assert report.ok, report.failure
    assert report.records == len(world.appended)
    assert report.heads == run.final.heads and len(report.heads) == 1
    # Parents before children, and exactly the documented order.
    position = {cid: i for i, cid in enumerate(report.order)}
    for cid, record in world.records.items():
        assert all(position[p] < position[cid] for p in record.prev)
        assert all(happened_before(world.records[p].clock, record.clock) for p in record.prev)
    assert list(report.order) == replay_order(world.records)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_merged_heads_are_the_antichain_of_the_union(ops: list[tuple[str, int, int]]) -> None:
    run = play(ops)
    world = run.world
    union = {head for replica in run.replicas for head in replica.heads}
    below = set().union(*(ancestors(world.records, head) for head in union))
    expected = sorted(union - below, key=lambda c: c.cid_bytes)
    merged = Replica(KEYS[5])
    for replica in run.replicas:
        world.sync(merged, replica)
    assert list(merged.heads) == expected
    report = verify_execution(list(union), world.lookup)
    assert report.ok and list(report.heads) == expected
    # The completing record linked exactly that set.
    assert list(world.records[run.final.heads[0]].prev) == expected


@settings(max_examples=60, deadline=None)
@given(operations, st.randoms(use_true_random=False))
def test_replay_order_ignores_arrival_order(ops: list[tuple[str, int, int]], rnd: Any) -> None:
    run = play(ops)
    world = run.world
    expected = verify_execution(run.final.heads, world.lookup).order
    items = list(world.blocks.items())
    rnd.shuffle(items)
    arrived = dict(items)
    report = verify_execution(run.final.heads, lambda cid: arrived.get(cid.cid_bytes))
    assert report.order == expected
    shuffled = list(world.records.items())
    rnd.shuffle(shuffled)
    assert replay_order(dict(shuffled)) == list(expected)


@settings(max_examples=100, deadline=None)
@given(operations, st.data())
def test_a_flipped_bit_in_a_stored_block_is_located(
    ops: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    run = play(ops)
    world = run.world
    target = data.draw(st.sampled_from(world.appended), label="record")
    stored = bytearray(world.blocks[target.cid_bytes])
    bit = data.draw(st.integers(min_value=0, max_value=len(stored) * 8 - 1), label="bit")
    stored[bit // 8] ^= 1 << (bit % 8)
    world.blocks[target.cid_bytes] = bytes(stored)
    report = verify_execution(run.final.heads, world.lookup, exec=world.exec)
    assert not report.ok and report.failure is not None
    assert report.failure.reason is Reason.HASH_MISMATCH
    assert report.failure.cid == target


@settings(max_examples=100, deadline=None)
@given(operations, st.data())
def test_a_flipped_bit_in_a_head_rehashed_is_located(
    ops: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    # The attacker cannot keep the CID, so they offer the tampered head under its own.
    run = play(ops)
    world = run.world
    head = run.final.heads[0]
    stored = bytearray(world.blocks[head.cid_bytes])
    bit = data.draw(st.integers(min_value=0, max_value=len(stored) * 8 - 1), label="bit")
    stored[bit // 8] ^= 1 << (bit % 8)
    forged = cid_for(bytes(stored), DAG_CBOR)
    world.blocks[forged.cid_bytes] = bytes(stored)
    report = verify_execution([forged], world.lookup, exec=world.exec)
    assert not report.ok and report.failure is not None
    assert forged in (report.failure.cid, report.failure.linked_from), report.failure


FIELD_TAMPERS = ["sig", "ts", "payload", "clock", "prev"]


def tamper(obj: dict[str, Any], how: str) -> dict[str, Any]:
    obj = dict(obj)
    if how == "sig":
        obj["sig"] = bytes([obj["sig"][0] ^ 0x01]) + obj["sig"][1:]
    elif how == "ts":
        obj["ts"] ^= 1
    elif how == "payload":
        obj["payload"] = cid_for(b"another output", DAG_CBOR)
    elif how == "clock":
        obj["clock"] = {**obj["clock"], obj["node"]: obj["clock"][obj["node"]] + 1}
    else:
        raw = bytearray(obj["prev"][0].cid_bytes)
        raw[-1] ^= 0x01
        obj["prev"] = sorted([CID(bytes(raw)), *obj["prev"][1:]], key=lambda c: c.cid_bytes)
    return obj


EXPECTED = {
    "sig": Reason.BAD_SIGNATURE,
    "ts": Reason.BAD_SIGNATURE,
    "payload": Reason.BAD_SIGNATURE,
    "clock": Reason.CLOCK_INCONSISTENT,
    "prev": Reason.MISSING_BLOCK,
}


@settings(max_examples=100, deadline=None)
@given(operations, st.data())
def test_a_tampered_field_is_located(ops: list[tuple[str, int, int]], data: st.DataObject) -> None:
    """A record altered and re-encoded replaces the original in the store. Inside the
    DAG the link to the original no longer resolves; as a head it is refused itself."""
    run = play(ops)
    world = run.world
    how = data.draw(st.sampled_from(FIELD_TAMPERS), label="field")
    candidates = [c for c in world.appended if how != "prev" or world.records[c].prev]
    target = data.draw(st.sampled_from(candidates), label="record")
    forged_data = encode_dag(tamper(world.records[target].to_obj(), how))
    forged = cid_for(forged_data, DAG_CBOR)
    del world.blocks[target.cid_bytes]
    world.blocks[forged.cid_bytes] = forged_data

    head = run.final.heads[0]
    if target == head:
        report = verify_execution([forged], world.lookup, exec=world.exec)
        assert report.failure is not None
        assert report.failure.reason is EXPECTED[how], report.failure
        located = report.failure.linked_from if how == "prev" else report.failure.cid
        assert located == forged
    else:
        report = verify_execution([head], world.lookup, exec=world.exec)
        assert report.failure is not None
        assert report.failure.reason is Reason.MISSING_BLOCK
        assert report.failure.cid == target
        assert report.failure.linked_from is not None
        assert target in world.records[report.failure.linked_from].prev
