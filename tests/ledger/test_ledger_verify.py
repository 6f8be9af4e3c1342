"""Verification of whole ledgers: each kind of bad input gives its own reason, located."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from qflow_node.codec import CID, DAG_CBOR, cid_for, encode_dag, raw_block
from qflow_node.core.ledger import (
    CorruptBlock,
    Failure,
    Reason,
    SignatureItem,
    VerifyReport,
    check_signatures,
    verify_execution,
)
from qflow_node.core.ledger.testing import (
    KEYS,
    OTHER_SUBMISSION,
    PAYLOAD,
    Replica,
    World,
    chain,
    diamond,
    put_obj,
    record_obj,
    sign_obj,
    store_raw,
)


def verify(world: World, heads: Sequence[CID], **options: Any) -> VerifyReport:
    return verify_execution(heads, world.lookup, **options)


def failed(report: VerifyReport, reason: Reason) -> Failure:
    assert not report.ok, report
    assert report.failure is not None
    assert report.failure.reason is reason, report.failure
    assert report.order == () and report.heads == ()
    return report.failure


# -- valid ledgers -----------------------------------------------------------------------


def test_a_chain_verifies_in_append_order() -> None:
    world, replica = chain(5)
    report = verify(world, replica.heads)
    assert report.ok and report.failure is None
    assert report.records == 5
    assert report.exec == world.exec
    assert report.heads == replica.heads
    assert list(report.order) == world.appended


def test_a_diamond_verifies_and_orders_by_clock_sum_then_cid() -> None:
    world, _a, b = diamond()
    genesis, a1, b1, merge = world.appended
    report = verify(world, b.heads)
    assert report.ok, report.failure
    assert report.records == 4
    middle = sorted([a1, b1], key=lambda c: c.cid_bytes)
    assert list(report.order) == [genesis, *middle, merge]
    assert world.records[merge].prev == tuple(middle)


def test_concurrent_heads_verify_together_and_redundant_heads_are_dropped() -> None:
    world, _a, _b = diamond()
    genesis, a1, b1, merge = world.appended
    both = verify(world, [a1, b1])
    assert both.ok and both.records == 3
    assert both.heads == tuple(sorted([a1, b1], key=lambda c: c.cid_bytes))
    redundant = verify(world, [genesis, a1, merge, merge])
    assert redundant.ok and redundant.heads == (merge,)


def test_signatures_can_be_batched_through_a_checker() -> None:
    world, _a, b = diamond()
    seen: list[int] = []

    def checker(items: Sequence[SignatureItem]) -> int | None:
        seen.append(len(items))
        return check_signatures(items)

    report = verify(world, b.heads, checker=checker)
    assert report.ok and seen == [4]


def test_resolve_links_accepts_a_complete_ledger() -> None:
    world, replica = chain(3)
    assert verify(world, replica.heads, resolve_links=True).ok


# -- caller errors -----------------------------------------------------------------------


def test_no_heads_or_a_non_cid_head_is_a_caller_error() -> None:
    world, _ = chain(1)
    with pytest.raises(ValueError, match="at least one head"):
        verify(world, [])
    with pytest.raises(ValueError, match="not a head CID"):
        verify(world, ["bafy"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="not a head CID"):
        verify(world, [CID(b"\x01\x71")])


# -- blocks that cannot be read --------------------------------------------------------


def test_missing_block_names_it_and_the_record_that_links_it() -> None:
    world, replica = chain(4)
    gone = world.appended[1]
    del world.blocks[gone.cid_bytes]
    report = verify(world, replica.heads)
    failure = failed(report, Reason.MISSING_BLOCK)
    assert failure.cid == gone
    assert failure.linked_from == world.appended[2]
    assert failure.depth == 2 and failure.index is None
    assert report.records == 2


def test_missing_head() -> None:
    world, _ = chain(1)
    absent = cid_for(b"nothing", DAG_CBOR)
    failure = failed(verify(world, [absent]), Reason.MISSING_BLOCK)
    assert failure.cid == absent and failure.linked_from is None and failure.depth == 0


def test_flipped_bit_on_disk_is_a_hash_mismatch_at_that_block() -> None:
    world, replica = chain(3)
    target = world.appended[0]
    data = bytearray(world.blocks[target.cid_bytes])
    data[40] ^= 0x01
    world.blocks[target.cid_bytes] = bytes(data)
    failure = failed(verify(world, replica.heads), Reason.HASH_MISMATCH)
    assert failure.cid == target and failure.linked_from == world.appended[1]


def test_truncated_block_under_its_cid_is_a_hash_mismatch() -> None:
    world, replica = chain(2)
    head = replica.heads[0]
    world.blocks[head.cid_bytes] = world.blocks[head.cid_bytes][:-10]
    assert failed(verify(world, [head]), Reason.HASH_MISMATCH).cid == head


def test_truncated_block_under_its_own_cid_is_not_canonical() -> None:
    world, replica = chain(2)
    cut = store_raw(world, world.blocks[replica.heads[0].cid_bytes][:-10])
    failure = failed(verify(world, [cut]), Reason.NOT_CANONICAL)
    assert failure.cid == cut and "not enough bytes" in failure.message


def test_store_reported_corruption_is_a_hash_mismatch() -> None:
    world, replica = chain(2)
    target = world.appended[0]

    def lookup(cid: CID) -> bytes | None:
        if cid == target:
            raise CorruptBlock("checksum mismatch on read")
        return world.lookup(cid)

    failure = failed(verify_execution(replica.heads, lookup), Reason.HASH_MISMATCH)
    assert failure.cid == target and "checksum mismatch on read" in failure.message


def test_head_of_the_wrong_codec() -> None:
    world, _ = chain(1)
    raw = raw_block(b"not a record")
    world.put(raw)
    failure = failed(verify(world, [raw.cid]), Reason.WRONG_CODEC)
    assert failure.cid == raw.cid


def test_prev_link_to_a_raw_block_is_wrong_codec_at_the_link() -> None:
    world, replica = chain(1)
    obj = record_obj(world, replica.heads[0])
    raw = raw_block(b"opaque")
    world.put(raw)
    obj.update(kind="step.completed", step="s", prev=[raw.cid], clock={KEYS[0].peer_id: 1})
    head = put_obj(world, obj, KEYS[0])
    failure = failed(verify(world, [head]), Reason.WRONG_CODEC)
    assert failure.cid == raw.cid and failure.linked_from == head and failure.depth == 1


def test_a_block_that_is_not_a_record_is_a_bad_field() -> None:
    world, _ = chain(1)
    cid = store_raw(world, encode_dag({}))
    assert "missing field 'v'" in failed(verify(world, [cid]), Reason.BAD_FIELD).message


def test_unsupported_version() -> None:
    world, replica = chain(1)
    head = put_obj(world, {**record_obj(world, replica.heads[0]), "v": 2}, KEYS[0])
    assert failed(verify(world, [head]), Reason.UNSUPPORTED_VERSION).cid == head


def test_record_of_another_execution() -> None:
    world, replica = chain(2)
    obj = record_obj(world, replica.heads[0])
    obj.update(exec=OTHER_SUBMISSION.cid, prev=[replica.heads[0]])
    obj["clock"] = {KEYS[0].peer_id: 3}
    head = put_obj(world, obj, KEYS[0])
    # The head sets the execution unless one is given; then the head is the stranger.
    failure = failed(verify(world, [head]), Reason.WRONG_EXEC)
    assert failure.cid == replica.heads[0] and failure.linked_from == head
    failure = failed(verify(world, [head], exec=world.exec), Reason.WRONG_EXEC)
    assert failure.cid == head


def test_too_many_records() -> None:
    world, replica = chain(5)
    assert verify(world, replica.heads, max_records=5).ok
    failure = failed(verify(world, replica.heads, max_records=4), Reason.TOO_MANY_RECORDS)
    assert failure.cid == world.appended[0]


def test_resolve_links_reports_a_missing_payload() -> None:
    world, replica = chain(3)
    del world.blocks[PAYLOAD.cid.cid_bytes]
    assert verify(world, replica.heads).ok  # not asked to resolve
    failure = failed(verify(world, replica.heads, resolve_links=True), Reason.MISSING_BLOCK)
    assert failure.cid == PAYLOAD.cid and failure.linked_from == replica.heads[0]


def test_resolve_links_reports_a_corrupt_state_block() -> None:
    world = World()
    replica = Replica(KEYS[0])
    world.append(replica)
    state = raw_block(b"crdt update")
    world.blocks[state.cid.cid_bytes] = b"tampered"
    world.append(replica, state=state.cid)
    failure = failed(verify(world, replica.heads, resolve_links=True), Reason.HASH_MISMATCH)
    assert failure.cid == state.cid and failure.linked_from == replica.heads[0]


def test_resolve_links_reports_a_missing_submission() -> None:
    world, replica = chain(2)
    del world.blocks[world.exec.cid_bytes]
    failure = failed(verify(world, replica.heads, resolve_links=True), Reason.MISSING_BLOCK)
    assert failure.cid == world.exec


# -- records that break a rule ----------------------------------------------------------


def test_tampered_signature() -> None:
    world, replica = chain(3)
    obj = record_obj(world, replica.heads[0])
    obj["sig"] = bytes([obj["sig"][0] ^ 1]) + obj["sig"][1:]
    head = store_raw(world, encode_dag(obj))
    failure = failed(verify(world, [head]), Reason.BAD_SIGNATURE)
    assert failure.cid == head and failure.index == 2 and failure.depth == 0


def test_signed_by_a_key_other_than_node() -> None:
    world, replica = chain(2)
    obj = record_obj(world, replica.heads[0])
    head = put_obj(world, obj, KEYS[1])  # node says KEYS[0]
    failure = failed(verify(world, [head]), Reason.BAD_SIGNATURE)
    assert failure.cid == head and KEYS[0].peer_id in failure.message


def test_clock_with_a_wrong_own_entry() -> None:
    world, replica = chain(2)
    obj = record_obj(world, replica.heads[0])
    obj["clock"] = {KEYS[0].peer_id: 5}
    head = put_obj(world, obj, KEYS[0])
    failure = failed(verify(world, [head]), Reason.CLOCK_INCONSISTENT)
    assert failure.cid == head
    assert f"clock[{KEYS[0].peer_id}] is 5, expected 2" in failure.message


def test_clock_claiming_an_unlinked_peer_is_inconsistent() -> None:
    world, replica = chain(2)
    obj = record_obj(world, replica.heads[0])
    obj["clock"] = {**obj["clock"], KEYS[3].peer_id: 1}
    head = put_obj(world, obj, KEYS[0])
    failure = failed(verify(world, [head]), Reason.CLOCK_INCONSISTENT)
    assert f"clock[{KEYS[3].peer_id}] is 1, expected 0" in failure.message


def test_genesis_clock_must_be_one() -> None:
    world = World()
    obj = record_obj(*_genesis(world))
    obj["clock"] = {KEYS[0].peer_id: 2}
    head = put_obj(world, obj, KEYS[0])
    assert failed(verify(world, [head]), Reason.CLOCK_INCONSISTENT).cid == head


def test_a_record_cannot_link_a_parent_it_could_not_have_seen() -> None:
    # B's clock says it comes before its own parent: it sorts first and its parent has
    # not been checked when its turn comes.
    world, replica = chain(3)
    parent = replica.heads[0]  # clock {K0: 3}
    obj = record_obj(world, parent)
    obj.update(prev=[parent], node=KEYS[1].peer_id, clock={KEYS[1].peer_id: 1})
    head = put_obj(world, obj, KEYS[1])
    failure = failed(verify(world, [head]), Reason.CLOCK_INCONSISTENT)
    genesis = world.appended[0]  # clock sum 1, like the head's: the CID breaks the tie
    assert failure.cid == head
    assert failure.index == (0 if head.cid_bytes < genesis.cid_bytes else 1)
    assert "could not have seen" in failure.message


def test_prev_must_be_an_antichain() -> None:
    world, _replica = chain(3)
    first, _, third = world.appended
    obj = record_obj(world, third)
    obj["prev"] = sorted([first, third], key=lambda c: c.cid_bytes)
    obj["clock"] = {KEYS[0].peer_id: 4}
    head = put_obj(world, obj, KEYS[0])
    failure = failed(verify(world, [head]), Reason.PREV_NOT_ANTICHAIN)
    assert failure.cid == head
    assert f"prev {first.encode()} is an ancestor of prev {third.encode()}" in failure.message


def test_equivocation_is_allowed_and_merges() -> None:
    # A node that lost its heads writes twice on the same parent: equal clocks, distinct
    # records. They are concurrent; a later record may link both.
    world, _a, _ = diamond()
    genesis = world.appended[0]
    x, y = Replica(KEYS[2], (genesis,)), Replica(KEYS[2], (genesis,))
    world.append(x, step="x")
    world.append(y, step="y")
    assert world.records[x.heads[0]].clock == world.records[y.heads[0]].clock
    world.sync(x, y)
    assert len(x.heads) == 2
    world.append(x)
    assert verify(world, x.heads).ok


def test_cycle_is_reported_when_hashes_are_not_checked() -> None:
    # Blocks filed under CIDs they do not hash to: X links Y, Y links X.
    world = World()
    x, y = cid_for(b"x", DAG_CBOR), cid_for(b"y", DAG_CBOR)
    genesis = record_obj(*_genesis(world))
    node = KEYS[0].peer_id
    base = {**genesis, "kind": "step.completed", "step": "s"}
    world.blocks[x.cid_bytes] = sign_obj({**base, "prev": [y], "clock": {node: 2}}, KEYS[0]).data
    world.blocks[y.cid_bytes] = sign_obj({**base, "prev": [x], "clock": {node: 3}}, KEYS[0]).data
    failure = failed(verify(world, [x], check_hashes=False), Reason.CYCLE)
    assert failure.cid == x and failure.index == 0
    # Checking hashes (the default) catches the lie first.
    assert failed(verify(world, [x]), Reason.HASH_MISMATCH).cid == x


def test_self_link_cycle() -> None:
    world = World()
    x = cid_for(b"x", DAG_CBOR)
    base = {**record_obj(*_genesis(world)), "kind": "step.completed", "step": "s"}
    node = KEYS[0].peer_id
    world.blocks[x.cid_bytes] = sign_obj({**base, "prev": [x], "clock": {node: 2}}, KEYS[0]).data
    assert failed(verify(world, [x], check_hashes=False), Reason.CYCLE).cid == x


# -- which failure is first -------------------------------------------------------------


def test_the_earliest_bad_record_in_replay_order_is_reported() -> None:
    world, replica = chain(2)
    good = replica.heads[0]
    # Two bad branches on the same parent: a bad signature at clock sum 3 and a bad
    # clock at clock sum 5. The signature one comes first in replay order.
    base = record_obj(world, good)
    bad_sig = {**base, "prev": [good], "step": "a", "clock": {KEYS[0].peer_id: 3}}
    bad_sig_cid = put_obj(world, bad_sig, KEYS[1])
    bad_clock = {**base, "prev": [good], "step": "b", "clock": {KEYS[0].peer_id: 5}}
    bad_clock_cid = put_obj(world, bad_clock, KEYS[0])
    for heads in ([bad_sig_cid, bad_clock_cid], [bad_clock_cid, bad_sig_cid]):
        inline = verify(world, heads)
        batched = verify(world, heads, checker=check_signatures)
        assert failed(inline, Reason.BAD_SIGNATURE).cid == bad_sig_cid
        assert inline.failure == batched.failure
        assert inline.failure is not None and inline.failure.index == 2


def test_batched_signatures_before_a_later_failure_are_checked_first() -> None:
    world, replica = chain(3)
    head = replica.heads[0]
    obj = record_obj(world, head)
    obj.update(prev=[head], clock={KEYS[0].peer_id: 9})
    bad_clock = put_obj(world, obj, KEYS[0])
    assert failed(verify(world, [bad_clock], checker=check_signatures), Reason.CLOCK_INCONSISTENT)

    def reject_second(items: Sequence[SignatureItem]) -> int | None:
        return 1 if len(items) > 1 else None

    failure = failed(verify(world, [bad_clock], checker=reject_second), Reason.BAD_SIGNATURE)
    assert failure.cid == world.appended[1] and failure.index == 1


def _genesis(world: World) -> tuple[World, CID]:
    replica = Replica(KEYS[0])
    world.append(replica)
    return world, replica.heads[0]


def test_deeply_nested_field_is_a_bad_field_not_a_crash() -> None:
    world, replica = chain(1)
    obj = record_obj(world, replica.heads[0])
    obj["kind"] = "KIND-PLACEHOLDER"
    data = encode_dag(obj)
    marker = encode_dag("KIND-PLACEHOLDER")
    nested = b"\x81" * 200_000 + b"\x00"  # [[[…[0]…]]], 200k levels
    head = store_raw(world, data.replace(marker, nested))
    failure = failed(verify(world, [head]), Reason.BAD_FIELD)
    assert failure.message.startswith("'kind' a list is not one of")


def test_oversize_block_is_refused_before_decoding() -> None:
    world, replica = chain(1)
    obj = record_obj(world, replica.heads[0])
    obj["step"] = "x" * (1 << 20)
    head = store_raw(world, encode_dag(obj))
    assert "exceeds" in failed(verify(world, [head]), Reason.NOT_CANONICAL).message


# -- hash-chain-only verification ---------------------------------------------------------


def test_chain_only_counts_the_dag_and_checks_no_rules_beyond_links() -> None:
    world, replica = chain(3)
    obj = record_obj(world, replica.heads[0])
    obj["sig"] = bytes(64)  # a forged signature: only full verification may notice
    obj["clock"] = {KEYS[0].peer_id: 9}
    forged = store_raw(world, encode_dag(obj))
    report = verify(world, [forged], chain_only=True)
    assert report.ok and report.records == 3 and report.exec == world.exec
    assert report.heads == (forged,) and report.order == ()
    assert failed(verify(world, [forged]), Reason.CLOCK_INCONSISTENT).cid == forged


def test_chain_only_reports_a_missing_link_and_its_parent() -> None:
    world, replica = chain(4)
    gone = world.appended[1]
    del world.blocks[gone.cid_bytes]
    failure = failed(verify(world, replica.heads, chain_only=True), Reason.MISSING_BLOCK)
    assert failure.cid == gone and failure.linked_from == world.appended[2]
    assert failure.depth == 2


def test_chain_only_reports_a_flipped_bit_and_a_foreign_record() -> None:
    world, replica = chain(3)
    target = world.appended[0]
    data = bytearray(world.blocks[target.cid_bytes])
    data[40] ^= 0x01
    world.blocks[target.cid_bytes] = bytes(data)
    failure = failed(verify(world, replica.heads, chain_only=True), Reason.HASH_MISMATCH)
    assert failure.cid == target and failure.linked_from == world.appended[1]

    world, replica = chain(2)
    obj = record_obj(world, replica.heads[0])
    obj.update(exec=OTHER_SUBMISSION.cid, prev=[replica.heads[0]])
    stranger = store_raw(world, encode_dag(obj))
    failure = failed(verify(world, [stranger], chain_only=True), Reason.WRONG_EXEC)
    assert failure.cid == replica.heads[0] and failure.linked_from == stranger


def test_chain_only_needs_exec_and_prev_links() -> None:
    world, _ = chain(1)
    no_prev = store_raw(world, encode_dag({"exec": world.exec}))
    assert failed(verify(world, [no_prev], chain_only=True), Reason.BAD_FIELD).cid == no_prev
    bad_link = store_raw(world, encode_dag({"exec": world.exec, "prev": ["bafy"]}))
    failure = failed(verify(world, [bad_link], chain_only=True), Reason.BAD_FIELD)
    assert "only links" in failure.message
