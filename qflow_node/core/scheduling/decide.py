"""Whether this node should claim a slot now, later, or not at all.

Every replica runs `decide` for each runnable slot, with its own clock and views, and
re-runs it at the time a `WaitUntil` names, or earlier when it observes a claim, a
record or a membership change. The rules, in order:

1. The slot is done (a record for it was seen) → `Leave("done")`.
2. A valid lease is held (`ClaimBook.holder`): by me → `Hold` (I am the executor; the
   runtime renews the lease); by another → `Leave("held")`, to re-decide when that
   lease ends (`recheck_at_ms`) unless a renewal arrives first. A holder that keeps
   renewing is never preempted, whatever anyone's ranking says.
3. I am not in `ranking` (the slot's ranking over the eligible nodes) → `Leave("ineligible")`.
4. Otherwise the slot is unheld. Its clock starts at `start = opened_at_ms`, or, if
   claims were made and all lapsed, at the latest lease end `E` (the takeover clock
   restarts when the last holder failed). The turn order is `ranking` with the nodes
   not in `live` removed (I always count as live), and the nodes whose claims lapsed
   moved to the end (they failed to hold it; they still come last, so some live node
   always gets a turn). With `k` my position in that order, I claim at `start + k·Δ`:
   `ClaimNow` if that time has come, else `WaitUntil` it. Rank 0 claims at once; if I
   am the only live eligible node, k = 0.

Concurrent claims (two nodes that each missed the other's) are settled by the claim book
the same way on every replica; the loser sees `Leave("held")` and stops. Δ must exceed
the gossip delay for claims to be seen before the next turn (see `lanes.delta_for`).
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import Final, Literal

from qflow_node.codec.envelope_bodies import MAX_RANK
from qflow_node.core.scheduling.claims import ClaimBook
from qflow_node.core.scheduling.rank import Slot

DEFAULT_DELTA_MS: Final = 1_000  # base Δ, the normal lane's (lanes.delta_for)


@dataclass(frozen=True, slots=True)
class ClaimNow:
    """Claim the slot now; `rank` is my position in the ranking, for the wire claim;
    `turn` my place in the turn order (0: the slot is mine first, as the live node of
    best rank; more: the nodes before me let their turn pass)."""

    rank: int
    turn: int = 0


@dataclass(frozen=True, slots=True)
class Hold:
    """I hold the valid lease: keep running and renew it before `lease_until_ms`."""

    lease_until_ms: int


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Not my turn yet: decide again at `at_ms`, or earlier if something is observed."""

    at_ms: int


LeaveReason = Literal["done", "held", "ineligible"]


@dataclass(frozen=True, slots=True)
class Leave:
    """Not mine to run; when held by another, decide again at `recheck_at_ms`."""

    reason: LeaveReason
    recheck_at_ms: int | None = None


Decision = ClaimNow | Hold | WaitUntil | Leave


def decide(
    slot: Slot,
    me: str,
    ranking: Sequence[str],
    book: ClaimBook,
    *,
    opened_at_ms: int,
    now_ms: int,
    delta_ms: int,
    live: frozenset[str],
) -> Decision:
    """What `me` should do about `slot` at `now_ms` (rules in the module docstring)."""
    if delta_ms < 0:
        raise ValueError("delta_ms must not be negative")
    if book.is_done(slot):
        return Leave("done")
    holder = book.holder(slot, now_ms)
    if holder is not None:
        if holder.node == me:
            return Hold(holder.lease_until_ms)
        return Leave("held", recheck_at_ms=holder.lease_until_ms)
    if me not in ranking:
        return Leave("ineligible")
    lapsed = book.expired(slot, now_ms)
    start = max([opened_at_ms, *(c.lease_until_ms for c in lapsed)])
    k = turn_order(ranking, me, live, {c.node for c in lapsed}).index(me)
    at_ms = start + k * delta_ms
    if now_ms >= at_ms:
        return ClaimNow(rank=min(list(ranking).index(me), MAX_RANK), turn=k)
    return WaitUntil(at_ms)


def turn_order(
    ranking: Sequence[str], me: str, live: frozenset[str], failed: Set[str]
) -> tuple[str, ...]:
    """Live nodes of `ranking` (me included) in turn order, those that `failed` last."""
    present = [node for node in ranking if node in live or node == me]
    return tuple(
        [node for node in present if node not in failed]
        + [node for node in present if node in failed]
    )
