"""Claim decisions: the rules one by one, then whole clusters on a virtual clock."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qflow_node.codec import DAG_CBOR, cid_for
from qflow_node.core.scheduling import (
    Claim,
    ClaimBook,
    ClaimNow,
    Decision,
    Hold,
    Leave,
    Slot,
    TokenBucket,
    WaitUntil,
    decide,
    ranking,
    turn_order,
)

EXEC = cid_for(b"submission", DAG_CBOR)
SLOT = Slot(EXEC, "fetch", 0)
NODES = tuple(f"12D3KooWnode{i}" for i in range(5))
R = ranking(SLOT, NODES)  # R[0] is rank 0, ...
ALL = frozenset(NODES)
DELTA = 1_000
LEASE = 10_000


def at(
    me: str,
    book: ClaimBook | None = None,
    *,
    now: int,
    opened: int = 0,
    live: frozenset[str] = ALL,
    order: tuple[str, ...] = R,
) -> Decision:
    return decide(
        SLOT,
        me,
        order,
        ClaimBook() if book is None else book,
        opened_at_ms=opened,
        now_ms=now,
        delta_ms=DELTA,
        live=live,
    )


def test_rank_zero_claims_at_once_and_rank_k_after_k_deltas() -> None:
    assert at(R[0], now=100, opened=100) == ClaimNow(rank=0)
    assert at(R[3], now=100, opened=100) == WaitUntil(3_100)
    assert at(R[3], now=3_099, opened=100) == WaitUntil(3_100)
    assert at(R[3], now=3_100, opened=100) == ClaimNow(rank=3, turn=3)


def test_nodes_not_live_are_skipped() -> None:
    live = ALL - {R[0], R[2]}
    assert at(R[1], now=0, live=live) == ClaimNow(rank=1)  # effective k = 0
    assert at(R[3], now=0, live=live) == WaitUntil(DELTA)  # k = 1: only R[1] before it
    assert at(R[4], now=0, live=live) == WaitUntil(2 * DELTA)


def test_i_count_as_live_and_claim_if_no_one_else_is() -> None:
    assert at(R[4], now=0, live=frozenset()) == ClaimNow(rank=4, turn=0)
    assert at(R[4], now=0, live=frozenset({"12D3KooWstranger"})) == ClaimNow(rank=4)


def test_not_in_the_ranking_means_not_eligible() -> None:
    assert at("12D3KooWweak", now=10_000) == Leave("ineligible")


def test_a_valid_lease_is_held_by_me_or_left_to_its_holder() -> None:
    book = ClaimBook()
    book.observe(Claim(SLOT, R[2], 2, LEASE, seq=1))
    assert at(R[2], book, now=5_000) == Hold(LEASE)
    assert at(R[0], book, now=5_000) == Leave("held", recheck_at_ms=LEASE)
    # Even a node outside the ranking (a stale view elsewhere) keeps a valid lease.
    book = ClaimBook()
    book.observe(Claim(SLOT, "12D3KooWelsewhere", 0, LEASE, seq=1))
    assert at(R[0], book, now=0) == Leave("held", recheck_at_ms=LEASE)


def test_a_done_slot_is_left() -> None:
    book = ClaimBook()
    book.observe(Claim(SLOT, R[0], 0, LEASE, seq=1))
    book.done(SLOT)
    for node in R:
        assert at(node, book, now=0) == Leave("done")


def test_a_lapsed_lease_restarts_the_clock_without_its_holder() -> None:
    book = ClaimBook()
    book.observe(Claim(SLOT, R[0], 0, 12_000, seq=1))
    # Before expiry the holder holds; at expiry the next rank takes over at once.
    assert at(R[1], book, now=11_999) == Leave("held", recheck_at_ms=12_000)
    assert at(R[1], book, now=12_000) == ClaimNow(rank=1)
    assert at(R[2], book, now=12_000) == WaitUntil(12_000 + DELTA)
    # The failed holder moves to the end of the turn order, behind every live node.
    assert at(R[0], book, now=12_000) == WaitUntil(12_000 + 4 * DELTA)
    assert turn_order(R, R[0], ALL, {R[0]}) == (*R[1:], R[0])


def test_the_takeover_clock_follows_the_latest_lapse() -> None:
    book = ClaimBook()
    book.observe(Claim(SLOT, R[0], 0, 5_000, seq=1))
    book.observe(Claim(SLOT, R[1], 0, 17_000, seq=1))  # took over, then died too
    assert at(R[2], book, now=17_000) == ClaimNow(rank=2)
    assert at(R[3], book, now=17_000) == WaitUntil(17_000 + DELTA)


def test_everyone_failed_still_someone_gets_a_turn() -> None:
    book = ClaimBook()
    for i, node in enumerate(R):
        book.observe(Claim(SLOT, node, i, 1_000 + i, seq=1))
    # All lapsed (latest at 1004): the turn order falls back to the ranking itself.
    assert at(R[0], book, now=2_000) == ClaimNow(rank=0)
    assert at(R[1], book, now=2_000) == WaitUntil(1_004 + DELTA)


def test_two_concurrent_claims_resolve_the_same_everywhere() -> None:
    # R[0] claims; R[1], whose view had R[0] dead, claims too. Each replica hears the two
    # claims at different times and in a different order: all end up with R[0].
    early = Claim(SLOT, R[0], 0, 10_000, seq=7)
    late = Claim(SLOT, R[1], 0, 10_050, seq=3)
    decisions = {}
    for node in R:
        book = ClaimBook()
        for c in (early, late) if node < R[2] else (late, early):
            book.observe(c)
        decisions[node] = at(node, book, now=500)
    assert decisions[R[0]] == Hold(10_000)
    assert all(decisions[n] == Leave("held", recheck_at_ms=10_000) for n in R[1:])


def test_negative_delta_is_refused() -> None:
    with pytest.raises(ValueError, match="delta_ms"):
        decide(SLOT, R[0], R, ClaimBook(), opened_at_ms=0, now_ms=0, delta_ms=-1, live=ALL)


# --- Whole clusters on a virtual clock ---------------------------------------------


@dataclass
class Cluster:
    """Nodes driven the way the runtime drives `decide`, on a virtual clock.

    A node re-decides when a claim reaches it and at the time its last decision named
    (`WaitUntil`, a held lease's end, its own renewal time: a third of the lease before
    it ends). Claims reach the others `delay` ms after they are sent, and each receiver
    dates the lease from when it hears the claim. `killed` nodes stop at the given time
    and stay in everyone's live view: leases alone must cover them.
    """

    nodes: tuple[str, ...]
    delay: int
    delta: int = DELTA
    lease: int = LEASE
    killed: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    claims_made: list[tuple[int, str]] = field(default_factory=list)
    published: list[tuple[int, str]] = field(default_factory=list)  # claims and renewals

    def __post_init__(self) -> None:
        self.books = {n: ClaimBook() for n in self.nodes}
        self.seq = dict.fromkeys(self.nodes, 0)
        self.order = ranking(SLOT, self.nodes)
        self.live = frozenset(self.nodes)
        self.wake: dict[str, int | None] = dict.fromkeys(self.nodes, 0)
        self.inflight: list[tuple[int, str, Claim]] = []

    def running(self, node: str, t: int) -> bool:
        return t < self.killed.get(node, t + 1)

    def publish(self, node: str, t: int, rank: int) -> None:
        self.seq[node] += 1
        self.published.append((t, node))
        self.books[node].observe(Claim(SLOT, node, rank, t + self.lease, self.seq[node]))
        for other in self.nodes:
            if other != node:
                wire = Claim(SLOT, node, rank, 0, self.seq[node])
                heapq.heappush(self.inflight, (t + self.delay, other, wire))

    def step(self, node: str, t: int) -> None:
        d = decide(
            SLOT,
            node,
            self.order,
            self.books[node],
            opened_at_ms=0,
            now_ms=t,
            delta_ms=self.delta,
            live=self.live,
        )
        if isinstance(d, ClaimNow):
            bucket = self.buckets.get(node)
            if bucket is not None and not bucket.take(t):
                self.wake[node] = t + self.delta  # declined: look again later
                return
            self.claims_made.append((t, node))
            self.publish(node, t, d.rank)
            self.wake[node] = t + self.lease - self.lease // 3
        elif isinstance(d, Hold):
            renew_at = d.lease_until_ms - self.lease // 3
            if t >= renew_at:
                self.publish(node, t, self.order.index(node))
                renew_at = t + self.lease - self.lease // 3
            self.wake[node] = renew_at
        elif isinstance(d, WaitUntil):
            self.wake[node] = d.at_ms
        else:
            self.wake[node] = d.recheck_at_ms

    def run(self, until: int) -> None:
        while True:
            times = [w for w in self.wake.values() if w is not None]
            if self.inflight:
                times.append(self.inflight[0][0])
            if not times or (t := min(times)) >= until:
                return
            due = {n for n, w in self.wake.items() if w is not None and w <= t}
            while self.inflight and self.inflight[0][0] == t:
                _, to, wire = heapq.heappop(self.inflight)
                heard = Claim(wire.slot, wire.node, wire.rank, t + self.lease, wire.seq)
                if self.running(to, t) and self.books[to].observe(heard):
                    due.add(to)
            for node in sorted(due):
                if self.running(node, t):
                    self.step(node, t)
                else:
                    self.wake[node] = None

    def holders(self, t: int) -> set[str | None]:
        return {
            h.node if (h := self.books[n].holder(SLOT, t)) else None
            for n in self.nodes
            if self.running(n, t)
        }


peer_sets = st.lists(
    st.text("abcdefgh123456789", min_size=4, max_size=8), min_size=1, max_size=7, unique=True
)


@settings(deadline=None)
@given(peer_sets, st.integers(0, DELTA - 1))
def test_without_failures_only_rank_zero_ever_claims(nodes: list[str], delay: int) -> None:
    # Gossip faster than Δ: rank 0's claim reaches everyone before rank 1's turn, and its
    # renewals keep it holding for several leases: never preempted.
    cluster = Cluster(tuple(nodes), delay=delay)
    cluster.run(5 * LEASE)
    first = cluster.order[0]
    assert cluster.claims_made == [(0, first)]
    assert cluster.holders(5 * LEASE - 1) == {first}


@settings(deadline=None)
@given(peer_sets.filter(lambda ns: len(ns) >= 2), st.integers(0, DELTA - 1))
def test_a_dead_holder_is_taken_over_by_the_next_rank_after_its_lease(
    nodes: list[str], delay: int
) -> None:
    order = ranking(SLOT, nodes)
    cluster = Cluster(tuple(nodes), delay=delay, killed={order[0]: 20_000})
    cluster.run(6 * LEASE)
    (t0, first), (t1, second) = cluster.claims_made
    assert (t0, first, second) == (0, order[0], order[1])
    # The holder renewed (at least once) until it died; the others heard its last renewal
    # `delay` later, and the next rank claims the moment that lease runs out.
    renewals = [t for t, node in cluster.published if node == first]
    assert len(renewals) >= 2
    assert t1 == renewals[-1] + delay + LEASE
    assert cluster.holders(6 * LEASE - 1) == {order[1]}


@settings(deadline=None)
@given(peer_sets.filter(lambda ns: len(ns) >= 2), st.integers(0, DELTA - 1))
def test_a_node_without_tokens_declines_and_the_next_rank_claims_after_delta(
    nodes: list[str], delay: int
) -> None:
    order = ranking(SLOT, nodes)
    cluster = Cluster(tuple(nodes), delay=delay, buckets={order[0]: TokenBucket(0, 0)})
    cluster.run(3 * LEASE)
    assert cluster.claims_made == [(DELTA, order[1])]
    assert cluster.holders(3 * LEASE - 1) == {order[1]}


def test_concurrent_claims_in_a_slow_network_settle_on_one_holder() -> None:
    # Gossip slower than Δ: ranks 0 and 1 both claim; once the claims cross, every
    # replica agrees on rank 0 and rank 1 stops (it sees Leave and never renews).
    nodes = NODES
    cluster = Cluster(nodes, delay=1_500)
    cluster.run(3 * LEASE)
    claimers = [n for _, n in cluster.claims_made]
    assert claimers[:2] == [R[0], R[1]]
    assert cluster.holders(3 * LEASE - 1) == {R[0]}
