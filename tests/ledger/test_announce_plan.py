"""`core.announce.AnnouncePlan`: which executions' heads a node announces each round."""

from __future__ import annotations

import itertools

import pytest

from qflow_node.codec import CID, dag_block, encode_dag, raw_block
from qflow_node.codec.envelope import KIND_MAX_SIZE, body_obj, encode_body
from qflow_node.codec.envelope_bodies import (
    MAX_HEADS,
    MAX_HEADS_ENTRIES,
    MAX_U63,
    Heads,
    HeadsEntry,
)
from qflow_node.core.announce import AnnouncePlan, entry_size, pack
from qflow_node.core.envelopes import seal_envelope
from qflow_node.identity.keys import SigningKey
from qflow_node.runtime.heads_service import BODY_BUDGET

A, B, C = (raw_block(bytes([i])).cid for i in range(3))
H1, H2, H3 = (raw_block(b"head" + bytes([i])).cid for i in range(3))


def announced(plan: AnnouncePlan, rounds: range, active: dict[CID, tuple[CID, ...]]) -> list[int]:
    """The rounds in which execution A was announced."""
    return [r for r in rounds if any(e == A for e, _ in plan.due(r, active.items()))]


def test_new_heads_go_out_at_once_then_ever_more_rarely_up_to_the_cap() -> None:
    plan = AnnouncePlan(max_backoff=4)
    assert announced(plan, range(1, 20), {A: (H1,)}) == [1, 2, 4, 8, 12, 16]


def test_changed_heads_wait_until_they_stay_the_same_for_a_round() -> None:
    plan = AnnouncePlan()
    assert plan.due(1, [(A, (H1,))]) == [(A, (H1,))]
    assert plan.due(2, [(A, (H2,))]) == []  # in progress: the record gossip carries it
    assert plan.due(3, [(A, (H3,))]) == []
    assert plan.due(4, [(A, (H3,))]) == [(A, (H3,))]  # a pause: announced
    assert plan.due(5, [(A, (H3,))]) == []  # the backoff goes on: next in round 6
    assert plan.due(6, [(A, (H3,))]) == [(A, (H3,))]


def test_progress_does_not_make_an_execution_announced_more_often() -> None:
    plan = AnnouncePlan(max_backoff=4)
    rounds = [r for r in range(1, 30) if plan.due(r, [(A, (H1 if r % 3 else H2,))])]
    # Heads move in rounds 3, 4, 6, 7, 9, ...: announced only after a quiet round and
    # never sooner than the backoff (capped at 4) allows.
    assert rounds == [1, 2, 5, 11, 17, 23, 29]


def test_a_peer_announcing_different_heads_makes_ours_due_again() -> None:
    plan = AnnouncePlan()
    for r in range(1, 10):
        plan.due(r, [(A, (H1,)), (B, (H2,))])
    plan.heard(A, (H2,), 10)  # behind or ahead of us: announce ours
    plan.heard(B, (H2,), 10)  # the same as ours: nothing to do
    assert plan.due(10, [(A, (H1,)), (B, (H2,))]) == [(A, (H1,))]


def test_heads_compare_as_sets_and_inactive_executions_are_forgotten() -> None:
    plan = AnnouncePlan()
    assert [e for e, _ in plan.due(1, [(A, (H1, H2)), (C, (H3,))])] == [A, C]
    assert plan.due(2, [(A, (H2, H1))]) == [(A, (H2, H1))]  # same set, C dropped
    assert [e for e, _ in plan.due(3, [(C, (H3,))])] == [C]  # C is new again


def test_max_backoff_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_backoff"):
        AnnouncePlan(max_backoff=0)


# -- pack: the due head sets of a round as heads bodies ------------------------------------


def dag_cids(count: int, tag: str) -> list[CID]:
    return [dag_block({tag: i}).cid for i in range(count)]


def entries_of(bodies: list[Heads]) -> list[HeadsEntry]:
    return [entry for body in bodies for entry in body.entries]


def test_pack_sorts_entries_and_their_heads() -> None:
    execs = dag_cids(5, "exec")
    heads = dag_cids(3, "head")
    [body] = pack([(exec, reversed(heads)) for exec in execs], max_bytes=1 << 20)
    assert [e.exec for e in body.entries] == sorted(execs, key=lambda c: c.cid_bytes)
    assert all(e.heads == tuple(sorted(heads, key=lambda c: c.cid_bytes)) for e in body.entries)
    assert pack([], max_bytes=1 << 20) == []


def test_pack_splits_by_entry_count() -> None:
    execs = dag_cids(2 * MAX_HEADS_ENTRIES + 3, "exec")
    bodies = pack([(exec, (exec,)) for exec in execs], max_bytes=1 << 30)
    assert [len(b.entries) for b in bodies] == [MAX_HEADS_ENTRIES, MAX_HEADS_ENTRIES, 3]
    assert [e.exec for e in entries_of(bodies)] == sorted(execs, key=lambda c: c.cid_bytes)
    threes = pack([(e, (e,)) for e in execs[:7]], max_bytes=1 << 30, max_entries=3)
    assert [len(b.entries) for b in threes] == [3, 3, 1]


def test_pack_splits_by_size_and_every_envelope_fits_the_cap() -> None:
    heads = tuple(dag_cids(MAX_HEADS, "head"))  # the largest entry: ~41 KiB
    execs = dag_cids(20, "exec")
    bodies = pack([(exec, heads) for exec in execs], max_bytes=BODY_BUDGET)
    assert len(bodies) > 3
    assert sorted(e.exec.cid_bytes for e in entries_of(bodies)) == sorted(
        e.cid_bytes for e in execs
    )
    key = SigningKey(b"\x01" * 32)
    for body in bodies:
        assert len(encode_body(body)) <= BODY_BUDGET
        sealed = seal_envelope(key, subnet="dao-1", seq=MAX_U63, body=body)
        assert len(sealed) <= KIND_MAX_SIZE["heads"]
    # Each body is full: the next entry would not have fitted.
    for body, after in itertools.pairwise(bodies):
        size = 12 + sum(entry_size(e) for e in (*body.entries, after.entries[0]))
        assert size > BODY_BUDGET


def test_an_entry_bigger_than_the_budget_goes_alone() -> None:
    execs = dag_cids(3, "exec")
    bodies = pack([(exec, (exec,)) for exec in execs], max_bytes=10)
    assert [len(b.entries) for b in bodies] == [1, 1, 1]
    with pytest.raises(ValueError, match="max_entries"):
        pack([], max_bytes=10, max_entries=MAX_HEADS_ENTRIES + 1)


def test_entry_size_is_an_upper_bound_and_a_tight_one() -> None:
    for count in (1, 2, 23, 24, 255, 256, MAX_HEADS):
        heads = tuple(sorted(dag_cids(count, "head"), key=lambda c: c.cid_bytes))
        entry = HeadsEntry(dag_cids(1, "exec")[0], heads)
        exact = len(encode_dag(body_obj(entry)))
        assert exact <= entry_size(entry) <= exact + 2, count
