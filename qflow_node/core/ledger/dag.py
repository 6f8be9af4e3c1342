"""Ancestry, head sets and replay order over a set of records already checked.

Functions take the graph as callables (clock, prev and writer of a CID) so the verifier
can serve them from its working tables and callers from a `Mapping[CID, Record]`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from qflow_node.codec import CID
from qflow_node.core.ledger.clock import Clock, happened_before
from qflow_node.core.ledger.record import Record

ClockOf = Callable[[CID], Clock]
PrevOf = Callable[[CID], Sequence[CID]]
NodeOf = Callable[[CID], str]


def replay_key(cid: CID, clock: Clock) -> tuple[int, bytes]:
    """Replay order key: sum of the clock entries, then the raw CID bytes.

    In a valid ledger a record's clock sum exceeds each parent's by at least one, so
    sorting by this key puts parents before children; the CID breaks ties between
    concurrent records. Nothing here depends on the order records arrived in.
    """
    return sum(clock.values()), cid.cid_bytes


def replay_order(records: Mapping[CID, Record]) -> list[CID]:
    """The deterministic topological order of a set of valid records."""
    return sorted(records, key=lambda cid: replay_key(cid, records[cid].clock))


def is_ancestor(a: CID, b: CID, clock_of: ClockOf, prev_of: PrevOf) -> bool:
    """True if `a` is reachable from `b` through prev links (a strict ancestor of b).

    Every record on a path from b down to a has a clock strictly above a's, so the search
    never leaves that region; for concurrent records the clock test answers at once.
    Clocks alone are not enough: a node that lost its heads can write two records with
    equal entries, and then clock order no longer implies ancestry.
    """
    clock_a = clock_of(a)
    if not happened_before(clock_a, clock_of(b)):
        return False
    target = a.cid_bytes
    stack = [b]
    seen = {b.cid_bytes}
    while stack:
        for parent in prev_of(stack.pop()):
            raw = parent.cid_bytes
            if raw == target:
                return True
            if raw not in seen:
                seen.add(raw)
                if happened_before(clock_a, clock_of(parent)):
                    stack.append(parent)
    return False


def dominator(
    a: CID, others: Iterable[CID], clock_of: ClockOf, prev_of: PrevOf, node_of: NodeOf
) -> CID | None:
    """The first of `others` that `a` is a strict ancestor of, or None.

    A descendant of `a` has seen `a`'s own clock entry; testing that one entry first
    dismisses concurrent records in O(1), so a k-way merge costs k² dict lookups, not k²
    clock comparisons or walks.
    """
    clock_a = clock_of(a)
    own = node_of(a)
    mark = clock_a[own]
    for b in others:
        if b is not a and clock_of(b).get(own, 0) >= mark and is_ancestor(a, b, clock_of, prev_of):
            return b
    return None


def antichain(
    cids: Iterable[CID], clock_of: ClockOf, prev_of: PrevOf, node_of: NodeOf
) -> tuple[CID, ...]:
    """The members of `cids` that are not ancestors of another member, sorted by bytes."""
    unique = {cid.cid_bytes: cid for cid in cids}
    members = [unique[raw] for raw in sorted(unique)]
    return tuple(a for a in members if dominator(a, members, clock_of, prev_of, node_of) is None)


def merge_heads(
    ours: Iterable[CID], theirs: Iterable[CID], records: Mapping[CID, Record]
) -> tuple[CID, ...]:
    """The head set after learning `theirs`: the antichain of the union.

    `records` must hold every record reachable from both sets (fetch, then merge).
    """
    return antichain(
        [*ours, *theirs],
        lambda cid: records[cid].clock,
        lambda cid: records[cid].prev,
        lambda cid: records[cid].node,
    )
