"""The claim book: renewals by seq, lease expiry, deterministic winner, done, bounds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qflow_node.codec import DAG_CBOR, cid_for
from qflow_node.core.scheduling import (
    MAX_CLAIMS_PER_SLOT,
    START,
    Claim,
    ClaimBook,
    Slot,
    ranking,
)

EXEC = cid_for(b"submission", DAG_CBOR)
OTHER_EXEC = cid_for(b"another submission", DAG_CBOR)
SLOT = Slot(EXEC, "fetch", 0)
NODES = tuple(f"12D3KooWnode{i:02d}" for i in range(24))
ORDER = ranking(SLOT, NODES)  # ORDER[0] has precedence over ORDER[1], ...


def claim(node: str, until: int, seq: int = 1, rank: int = 0, slot: Slot = SLOT) -> Claim:
    return Claim(slot, node, rank, until, seq)


def holder_node(book: ClaimBook, now: int) -> str | None:
    holder = book.holder(SLOT, now)
    return None if holder is None else holder.node


def test_lease_is_valid_strictly_before_its_end() -> None:
    book = ClaimBook()
    assert book.observe(claim(ORDER[0], until=5_000))
    assert book.holder(SLOT, 4_999) == claim(ORDER[0], until=5_000)
    assert book.holder(SLOT, 5_000) is None
    assert book.expired(SLOT, 4_999) == ()
    assert book.expired(SLOT, 5_000) == (claim(ORDER[0], until=5_000),)


def test_a_later_seq_renews_and_older_or_equal_ones_are_ignored() -> None:
    book = ClaimBook()
    assert book.observe(claim(ORDER[0], until=5_000, seq=10))
    assert book.observe(claim(ORDER[0], until=9_000, seq=11))  # renewal
    assert not book.observe(claim(ORDER[0], until=20_000, seq=11))  # duplicate
    assert not book.observe(claim(ORDER[0], until=20_000, seq=3))  # overtaken in gossip
    assert book.claims(SLOT) == (claim(ORDER[0], until=9_000, seq=11),)
    assert book.holder(SLOT, 8_000) == claim(ORDER[0], until=9_000, seq=11)


def test_the_winner_is_first_in_the_ranking_whatever_rank_a_claim_carries() -> None:
    book = ClaimBook()
    book.observe(claim(ORDER[2], until=5_000, rank=0))  # claims rank 0, is third
    book.observe(claim(ORDER[1], until=5_000, rank=1))
    assert holder_node(book, 0) == ORDER[1]
    assert [c.node for c in book.claims(SLOT)] == [ORDER[1], ORDER[2]]
    # Once the winner's lease ends, the remaining valid claim holds.
    book.observe(claim(ORDER[0], until=1_000, seq=1))
    assert holder_node(book, 999) == ORDER[0]
    assert holder_node(book, 1_000) == ORDER[1]


claims_strategy = st.lists(
    st.builds(
        claim,
        node=st.sampled_from(NODES[:6]),
        until=st.integers(0, 10_000),
        seq=st.integers(0, 5),
        rank=st.integers(0, 1023),
    ),
    max_size=20,
)


@given(claims_strategy, st.randoms(use_true_random=False), st.integers(0, 10_000))
def test_every_replica_agrees_whatever_order_claims_arrive_in(
    claims: list[Claim], rnd: random.Random, now: int
) -> None:
    shuffled = list(claims)
    rnd.shuffle(shuffled)
    # Distinct (node, seq) pairs carry distinct bodies only if the sender is consistent;
    # an envelope's identity is (from, seq), so keep the first body per pair.
    first: dict[tuple[str, int], Claim] = {}
    for c in claims:
        first.setdefault((c.node, c.seq), c)
    here, there = ClaimBook(), ClaimBook()
    for c in claims:
        here.observe(first[(c.node, c.seq)])
    for c in shuffled:
        there.observe(first[(c.node, c.seq)])
    assert here.claims(SLOT) == there.claims(SLOT)
    assert here.holder(SLOT, now) == there.holder(SLOT, now)
    assert here.expired(SLOT, now) == there.expired(SLOT, now)


@given(claims_strategy, st.integers(0, 10_000))
def test_holder_is_the_best_valid_claim(claims: list[Claim], now: int) -> None:
    book = ClaimBook()
    for c in claims:
        book.observe(c)
    valid = [c for c in book.claims(SLOT) if now < c.lease_until_ms]
    holder = book.holder(SLOT, now)
    assert holder == (valid[0] if valid else None)
    if holder is not None:
        assert all(ORDER.index(holder.node) <= ORDER.index(c.node) for c in valid)
    assert {c.node for c in book.expired(SLOT, now)} | {c.node for c in valid} == {
        c.node for c in book.claims(SLOT)
    }


def test_done_drops_claims_and_ignores_late_ones() -> None:
    book = ClaimBook()
    book.observe(claim(ORDER[0], until=5_000))
    book.done(SLOT)
    assert book.is_done(SLOT)
    assert book.claims(SLOT) == ()
    assert book.holder(SLOT, 0) is None
    assert not book.observe(claim(ORDER[1], until=9_000, seq=5))
    assert book.claims(SLOT) == ()
    # The next attempt is another slot.
    retry = Slot(EXEC, "fetch", 1)
    assert book.observe(claim(ORDER[1], until=9_000, slot=retry))
    assert not book.is_done(retry)


def test_forget_drops_one_execution() -> None:
    book = ClaimBook()
    other = Slot(OTHER_EXEC, "fetch", 0)
    book.observe(claim(ORDER[0], until=5_000))
    book.done(Slot(EXEC, START))
    book.observe(claim(ORDER[0], until=5_000, slot=other))
    book.forget(EXEC)
    assert book.claims(SLOT) == ()
    assert not book.is_done(Slot(EXEC, START))
    assert len(book.claims(other)) == 1
    assert book.count() == 1
    book.forget(EXEC)  # idempotent
    book.forget(OTHER_EXEC)
    assert book.count() == 0


def test_per_slot_claims_are_capped_dropping_the_stalest() -> None:
    book = ClaimBook()
    # 16 expired claims from the best-ranked nodes, then a valid one from a worse node:
    # the newcomer must survive (it is the live holder), the stalest claim goes.
    for i, node in enumerate(ORDER[:MAX_CLAIMS_PER_SLOT]):
        book.observe(claim(node, until=1_000 + i))
    newcomer = claim(ORDER[-1], until=50_000)
    assert book.observe(newcomer)
    assert len(book.claims(SLOT)) == MAX_CLAIMS_PER_SLOT
    assert ORDER[0] not in {c.node for c in book.claims(SLOT)}  # until=1000, the stalest
    assert book.holder(SLOT, 2_000) == newcomer


def test_a_claim_staler_than_all_kept_ones_is_not_kept() -> None:
    book = ClaimBook(max_claims_per_slot=2)
    book.observe(claim(ORDER[1], until=5_000))
    book.observe(claim(ORDER[2], until=5_000))
    assert not book.observe(claim(ORDER[0], until=10))
    assert [c.node for c in book.claims(SLOT)] == [ORDER[1], ORDER[2]]
    # Among equally stale claims the one last in precedence goes.
    assert book.observe(claim(ORDER[3], until=6_000))
    assert [c.node for c in book.claims(SLOT)] == [ORDER[1], ORDER[3]]


@given(
    st.lists(
        st.builds(
            claim, node=st.sampled_from(NODES), until=st.integers(0, 100), seq=st.integers(0, 3)
        ),
        max_size=80,
    )
)
def test_memory_stays_bounded(claims: list[Claim]) -> None:
    book = ClaimBook()
    for c in claims:
        book.observe(c)
        assert book.count() <= MAX_CLAIMS_PER_SLOT


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_claims_per_slot"):
        ClaimBook(max_claims_per_slot=0)
