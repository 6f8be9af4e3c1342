"""Rendezvous ranking: the exact hash, permutation, stability under removal, spread."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qflow_node.codec import DAG_CBOR, cid_for
from qflow_node.core.scheduling import FINISH, RESERVED, START, Slot, rank_of, ranking, score
from qflow_node.identity.keys import SigningKey

PEERS = tuple(SigningKey(bytes([i + 1]) * 32).peer_id for i in range(5))
EXEC = cid_for(b"submission", DAG_CBOR)

node_ids = st.text(
    alphabet="123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz", min_size=1, max_size=12
)
slots = st.builds(
    Slot,
    exec=st.binary(max_size=8).map(lambda b: cid_for(b, DAG_CBOR)),
    name=st.sampled_from(["fetch", "loop[3].resize", START, FINISH]),
    attempt=st.integers(0, 2**32 - 1),
)


def test_score_is_the_documented_hash() -> None:
    slot = Slot(EXEC, "loop[3].resize", 2)
    expected = hashlib.sha256(
        b"qflow/rank/v1\x00"
        + PEERS[0].encode()
        + b"\x00"
        + EXEC.cid_bytes
        + b"\x00loop[3].resize\x00"
        + b"\x00\x00\x00\x02"
    ).digest()
    assert score(slot, PEERS[0]) == expected


def test_ranking_orders_by_score_descending() -> None:
    slot = Slot(EXEC, "fetch")
    order = ranking(slot, PEERS)
    scores = [score(slot, node) for node in order]
    assert scores == sorted(scores, reverse=True)
    assert [rank_of(slot, node, PEERS) for node in order] == list(range(5))
    assert rank_of(slot, "12D3KooWnotamember", PEERS) is None


def test_every_field_of_the_slot_moves_the_ranking() -> None:
    base = Slot(EXEC, "fetch", 0)
    variants = [
        Slot(cid_for(b"other", DAG_CBOR), "fetch", 0),
        Slot(EXEC, "store", 0),
        Slot(EXEC, "fetch", 1),
    ]
    for variant in variants:
        assert [score(variant, n) for n in PEERS] != [score(base, n) for n in PEERS]


def test_reserved_names() -> None:
    assert (START, FINISH) == ("$start", "$finish")
    assert frozenset({START, FINISH}) == RESERVED
    assert Slot(EXEC, START) != Slot(EXEC, FINISH)  # two slots, ranked independently
    assert score(Slot(EXEC, START), PEERS[0]) != score(Slot(EXEC, FINISH), PEERS[0])


@pytest.mark.parametrize(
    ("name", "attempt"), [("", 0), ("a\x00b", 0), ("x" * 257, 0), ("ok", -1), ("ok", 2**32)]
)
def test_invalid_slots(name: str, attempt: int) -> None:
    with pytest.raises(ValueError):
        Slot(EXEC, name, attempt)


def test_node_ids_with_nul_are_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        ranking(Slot(EXEC, "fetch"), ["a\x00b"])


@given(slots, st.lists(node_ids, max_size=12))
def test_ranking_is_a_permutation_of_the_distinct_nodes(slot: Slot, nodes: list[str]) -> None:
    order = ranking(slot, nodes)
    assert sorted(order) == sorted(set(nodes))
    assert ranking(slot, reversed(nodes)) == order  # input order does not matter


@given(slots, st.lists(node_ids, min_size=1, max_size=12, unique=True), st.data())
def test_removing_nodes_keeps_the_relative_order_of_the_rest(
    slot: Slot, nodes: list[str], data: st.DataObject
) -> None:
    removed = data.draw(st.sets(st.sampled_from(nodes)))
    full = ranking(slot, nodes)
    rest = ranking(slot, [n for n in nodes if n not in removed])
    assert rest == tuple(n for n in full if n not in removed)


def test_rank_zero_spreads_evenly_over_nodes() -> None:
    # 1000 fixed slots, 5 nodes: ~200 each (sd 12.6), so 150-250 is 4 sd. Deterministic.
    first = Counter(
        ranking(Slot(cid_for(b"exec-%d" % (i // 50), DAG_CBOR), f"loop[{i % 50}].resize"), PEERS)[0]
        for i in range(1000)
    )
    assert set(first) == set(PEERS)
    assert all(150 <= count <= 250 for count in first.values()), first
