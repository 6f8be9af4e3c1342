"""`core.announce.AnnouncePlan`: which executions' heads a node announces each round."""

from __future__ import annotations

import pytest

from qflow_node.codec import CID, raw_block
from qflow_node.core.announce import AnnouncePlan

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
