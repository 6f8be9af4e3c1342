"""Vector clocks: peer id -> count of records that peer wrote along the causal history.

A record's clock is a pure function of its parents and its writer (`next_clock`), so it
carries no information the links do not; it exists to compare and order records without
walking the DAG.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Clock = Mapping[str, int]


def merge(clocks: Iterable[Clock]) -> dict[str, int]:
    """Pointwise maximum."""
    out: dict[str, int] = {}
    for clock in clocks:
        for peer, n in clock.items():
            if n > out.get(peer, 0):
                out[peer] = n
    return out


def next_clock(parents: Iterable[Clock], node: str) -> dict[str, int]:
    """The clock of a record by `node` whose parents have these clocks."""
    out = merge(parents)
    out[node] = out.get(node, 0) + 1
    return out


def leq(a: Clock, b: Clock) -> bool:
    """a ≤ b pointwise (missing entries are 0)."""
    return all(n <= b.get(peer, 0) for peer, n in a.items())


def happened_before(a: Clock, b: Clock) -> bool:
    """a < b: every entry ≤ and the clocks differ."""
    return a != b and leq(a, b)


def concurrent(a: Clock, b: Clock) -> bool:
    return not leq(a, b) and not leq(b, a)


def first_difference(got: Clock, want: Clock) -> tuple[str, int, int]:
    """The first peer (in sorted order) whose entry differs: (peer, got, want); 0 = absent."""
    for peer in sorted(got.keys() | want.keys()):
        if got.get(peer, 0) != want.get(peer, 0):
            return peer, got.get(peer, 0), want.get(peer, 0)
    raise ValueError("clocks are equal")
