"""Vector clocks, ancestry, head sets and replay keys."""

from __future__ import annotations

from qflow_node.codec import CID
from qflow_node.core.ledger import (
    antichain,
    concurrent,
    dominator,
    happened_before,
    is_ancestor,
    leq,
    merge,
    merge_heads,
    next_clock,
    replay_key,
    replay_order,
    verify_execution,
)
from qflow_node.core.ledger.testing import KEYS, Replica, World, chain, diamond
from qflow_node.identity.keys import SigningKey


def test_clock_operations() -> None:
    a, b = {"x": 2, "y": 1}, {"x": 1, "z": 3}
    assert merge([a, b]) == {"x": 2, "y": 1, "z": 3}
    assert merge([]) == {}
    assert next_clock([a, b], "y") == {"x": 2, "y": 2, "z": 3}
    assert next_clock([], "n") == {"n": 1}
    assert leq({"x": 1}, a) and not leq(a, {"x": 1})
    assert happened_before({"x": 1}, a) and not happened_before(a, a)
    assert leq(a, a) and not concurrent(a, a)
    assert concurrent(a, b) and not concurrent({"x": 1}, a)


def test_ancestry_in_a_diamond() -> None:
    world, _, _ = diamond()
    genesis, a1, b1, merged = world.appended
    records = world.records

    def anc(x: CID, y: CID) -> bool:
        return is_ancestor(x, y, lambda c: records[c].clock, lambda c: records[c].prev)

    assert anc(genesis, merged) and anc(a1, merged) and anc(b1, merged)
    assert not anc(a1, b1) and not anc(b1, a1)
    assert not anc(merged, genesis) and not anc(merged, merged)


def test_ancestry_is_not_clock_order_when_a_node_equivocates() -> None:
    # K1 loses its heads: Y is written on genesis again, Z extends X. Y's clock is below
    # Z's, yet Y is not Z's ancestor, so both stay heads.
    world = World()
    starter = Replica(KEYS[0])
    world.append(starter)
    genesis = starter.heads[0]
    x, y = Replica(KEYS[1], (genesis,)), Replica(KEYS[1], (genesis,))
    world.append(x, step="x")
    world.append(y, step="y")
    world.append(x, step="z")
    ycid, zcid = y.heads[0], x.heads[0]
    records = world.records
    assert happened_before(records[ycid].clock, records[zcid].clock)
    assert not is_ancestor(ycid, zcid, lambda c: records[c].clock, lambda c: records[c].prev)
    heads = merge_heads(y.heads, x.heads, records)
    assert set(heads) == {ycid, zcid}
    final = Replica(KEYS[2], heads)
    world.append(final, "exec.completed")
    assert verify_execution(final.heads, world.lookup).ok


def test_antichain_sorts_and_dedupes() -> None:
    world, _replica = chain(3)
    records = world.records
    first, second, third = world.appended
    got = antichain(
        [third, first, third, second],
        lambda c: records[c].clock,
        lambda c: records[c].prev,
        lambda c: records[c].node,
    )
    assert got == (third,)


def test_dominator_names_the_descendant() -> None:
    world, _, _ = diamond()
    genesis, a1, b1, merged = world.appended
    records = world.records

    def dom(a: CID, others: list[CID]) -> CID | None:
        return dominator(
            a,
            others,
            lambda c: records[c].clock,
            lambda c: records[c].prev,
            lambda c: records[c].node,
        )

    assert dom(genesis, [a1, b1]) == a1
    assert dom(a1, [b1, merged]) == merged
    assert dom(a1, [a1, b1]) is None
    assert dom(merged, [genesis, a1, b1]) is None


def test_a_wide_merge_of_concurrent_writers() -> None:
    # 300 nodes each append on the genesis; one record joins them all.
    world = World()
    starter = Replica(KEYS[0])
    world.append(starter)
    writers = [Replica(SigningKey(i.to_bytes(2, "big") * 16), starter.heads) for i in range(300)]
    for writer in writers:
        world.append(writer)
    heads = merge_heads(starter.heads, [w.heads[0] for w in writers], world.records)
    assert len(heads) == 300
    joiner = Replica(KEYS[1], heads)
    world.append(joiner, "exec.completed")
    report = verify_execution(joiner.heads, world.lookup)
    assert report.ok and report.records == 302


def test_merge_heads_of_disjoint_branches_keeps_both() -> None:
    world, a, b = diamond()
    _, a1, b1, _ = world.appended
    both = merge_heads((a1,), (b1,), world.records)
    assert both == tuple(sorted([a1, b1], key=lambda c: c.cid_bytes))
    assert merge_heads(both, b.heads, world.records) == b.heads
    assert merge_heads(a.heads, a.heads, world.records) == a.heads


def test_replay_key_and_order() -> None:
    world, _, _ = diamond()
    genesis, a1, b1, merged = world.appended
    records = world.records
    assert replay_key(genesis, records[genesis].clock) == (1, genesis.cid_bytes)
    assert replay_key(merged, records[merged].clock) == (4, merged.cid_bytes)
    assert replay_order(records) == [genesis, *sorted([a1, b1], key=lambda c: c.cid_bytes), merged]
