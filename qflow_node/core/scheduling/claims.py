"""The claims a replica has heard, and who holds each slot at a given time.

A claim is observed with the observer's clock: `lease_until_ms` is its monotonic time
at receipt plus the claim's `lease_ms` (the runtime computes it), so no two clocks are
ever compared. A lease is valid while `now_ms < lease_until_ms`.

Conflicts settle by rendezvous precedence (`rank.precedence`: HRW score, then node id):
among valid claims the one first in the slot's ranking wins. That is the order of the
claimants' `rank` fields whenever they ranked the same node set, and it needs no
membership view, so replicas that saw the same claims agree even when their views (and
hence the ranks written in the claims) differed. The wire `rank` is kept for logs and
plausibility checks only — a claim cannot buy precedence by lying about it.

Memory: per slot at most `max_claims_per_slot` claims (default 16); past that the
stalest (earliest lease end; among equals the last in precedence) is dropped, because
expired claims matter only for when they expired. Slots are the runtime's: it feeds
claims only for executions it has open and calls `forget(exec)` when one finishes, so
the book holds at most `16 * open slots` claims plus one done mark per finished slot
of open executions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from qflow_node.codec.cid import CID
from qflow_node.core.scheduling.rank import Slot, precedence

MAX_CLAIMS_PER_SLOT: Final = 16
DEFAULT_LEASE_MS: Final = 10_000  # a holder renews when a third of it is left


@dataclass(frozen=True, slots=True)
class Claim:
    """A verified claim as observed: `seq` is its envelope's, `rank` what it carried."""

    slot: Slot
    node: str
    rank: int
    lease_until_ms: int  # observer's clock at receipt + lease_ms
    seq: int

    def valid_at(self, now_ms: int) -> bool:
        return now_ms < self.lease_until_ms


def _precedence(claim: Claim) -> tuple[int, str]:
    return precedence(claim.slot, claim.node)


class ClaimBook:
    """Claims per slot (newest seq per node), and the slots known to be done."""

    def __init__(self, *, max_claims_per_slot: int = MAX_CLAIMS_PER_SLOT) -> None:
        if max_claims_per_slot < 1:
            raise ValueError("max_claims_per_slot must be at least 1")
        self._cap = max_claims_per_slot
        self._claims: dict[Slot, dict[str, Claim]] = {}
        self._done: set[Slot] = set()
        self._by_exec: dict[CID, set[Slot]] = {}

    def observe(self, claim: Claim) -> bool:
        """Record `claim`; False if it changed nothing (slot done, not newer, or dropped).

        A greater `seq` from the same node replaces its claim (a renewal); an equal or
        smaller one is a duplicate or was overtaken in gossip.
        """
        slot = claim.slot
        if slot in self._done:
            return False  # a record exists: late claims are moot
        held = self._claims.setdefault(slot, {})
        current = held.get(claim.node)
        if current is not None and claim.seq <= current.seq:
            return False
        held[claim.node] = claim
        self._by_exec.setdefault(slot.exec, set()).add(slot)
        if len(held) > self._cap:
            stalest = min(c.lease_until_ms for c in held.values())
            victim = max((c for c in held.values() if c.lease_until_ms == stalest), key=_precedence)
            del held[victim.node]
            return victim is not claim
        return True

    def done(self, slot: Slot) -> None:
        """A record for `slot` was seen: drop its claims and ignore later ones."""
        self._claims.pop(slot, None)
        self._done.add(slot)
        self._by_exec.setdefault(slot.exec, set()).add(slot)

    def is_done(self, slot: Slot) -> bool:
        return slot in self._done

    def claims(self, slot: Slot) -> tuple[Claim, ...]:
        """All kept claims for `slot`, valid or not, in precedence order."""
        return tuple(sorted(self._claims.get(slot, {}).values(), key=_precedence))

    def holder(self, slot: Slot, now_ms: int) -> Claim | None:
        """The winning valid claim at `now_ms`: first in precedence among unexpired ones."""
        valid = [c for c in self._claims.get(slot, {}).values() if c.valid_at(now_ms)]
        return min(valid, key=_precedence) if valid else None

    def expired(self, slot: Slot, now_ms: int) -> tuple[Claim, ...]:
        """Claims whose lease ran out by `now_ms`, oldest lease end first."""
        lapsed = [c for c in self._claims.get(slot, {}).values() if not c.valid_at(now_ms)]
        return tuple(sorted(lapsed, key=lambda c: (c.lease_until_ms, _precedence(c))))

    def forget(self, exec: CID) -> None:
        """Drop everything about a finished execution (its late claims would count again)."""
        for slot in self._by_exec.pop(exec, set()):
            self._claims.pop(slot, None)
            self._done.discard(slot)

    def count(self) -> int:
        """Claims kept, across slots (for bounds checks and metrics)."""
        return sum(len(held) for held in self._claims.values())
