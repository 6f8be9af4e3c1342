"""Membership decisions with a virtual clock: alive → suspect → dead, replays, eligibility."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qflow_node.codec.envelope_bodies import Heartbeat as HeartbeatBody
from qflow_node.codec.envelope_bodies import Manifest
from qflow_node.core.envelopes import Verified, open_envelope, seal_envelope
from qflow_node.core.membership import (
    Heartbeat,
    MembershipConfig,
    MembershipView,
    PeerState,
    Requirement,
    eligible,
    forget,
    live,
    observe,
    state,
    states,
)
from qflow_node.identity.keys import SigningKey

KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
A, B, C, D = (k.peer_id for k in KEYS)
MANIFEST = Manifest(
    wasm_engine="wasmtime/50.0.1",
    memory_bytes=1 << 30,
    load=100,
    free_work_tokens=2,
    version="0.1.0",
)


def beat(
    node: str, seq: int, subnets: tuple[str, ...] = ("dao",), **manifest: int | str
) -> Heartbeat:
    return Heartbeat(node, seq, frozenset(subnets), replace_manifest(**manifest))


def replace_manifest(**changes: int | str) -> Manifest:
    return msgspec.structs.replace(MANIFEST, **changes)


def test_config_defaults_and_validation() -> None:
    config = MembershipConfig()
    assert (config.heartbeat_ms, config.suspect_ms, config.dead_ms) == (1000, 3000, 10000)
    for bad in [(0, 3000, 10000), (1000, 999, 10000), (1000, 3000, 3000)]:
        with pytest.raises(ValueError, match="heartbeat_ms"):
            MembershipConfig(*bad)


def test_transitions_on_a_virtual_clock() -> None:
    view = observe(MembershipView(), beat(A, 1), now_ms=1_000)
    timeline = {
        1_000: PeerState.ALIVE,
        4_000: PeerState.ALIVE,  # silent exactly suspect_ms: still alive
        4_001: PeerState.SUSPECT,
        11_000: PeerState.SUSPECT,  # silent exactly dead_ms: still suspect
        11_001: PeerState.DEAD,
    }
    for now, expected in timeline.items():
        assert state(view, A, now) is expected, now
    assert live(view, 4_001) == frozenset({A})  # suspect nodes are live
    assert live(view, 11_001) == frozenset()
    assert state(view, B, 1_000) is None
    # A new heartbeat makes a suspect node alive again.
    view = observe(view, beat(A, 2), now_ms=6_000)
    assert state(view, A, 6_000) is PeerState.ALIVE
    assert state(view, A, 9_001) is PeerState.SUSPECT


def test_several_nodes() -> None:
    view = MembershipView()
    view = observe(view, beat(A, 10), 0)
    view = observe(view, beat(B, 10), 2_000)
    view = observe(view, beat(C, 10), 9_500)
    assert states(view, 12_000) == {
        A: PeerState.DEAD,
        B: PeerState.SUSPECT,
        C: PeerState.ALIVE,
    }
    assert live(view, 12_000) == frozenset({B, C})


def test_replays_and_out_of_order_heartbeats_are_ignored() -> None:
    view = observe(MembershipView(), beat(A, 5), 0)
    assert observe(view, beat(A, 5), 2_000) is view  # replay
    assert observe(view, beat(A, 4), 2_000) is view  # overtaken in gossip
    # Replays never keep a silent node alive, and never bring a dead one back.
    for now in (3_500, 20_000):
        assert observe(view, beat(A, 5), now) is view
    assert state(view, A, 20_000) is PeerState.DEAD
    newer = observe(view, beat(A, 6, load=900), 20_000)
    assert newer is not view
    assert state(newer, A, 20_000) is PeerState.ALIVE
    assert newer.members[A].heartbeat.manifest.load == 900
    # Seqs are per node.
    assert observe(newer, beat(B, 1), 20_000).members[B].heartbeat.seq == 1


def test_a_clock_stepping_back_does_not_age_a_node() -> None:
    view = observe(MembershipView(), beat(A, 1), 5_000)
    view = observe(view, beat(A, 2), 4_000)
    assert view.members[A].heard_ms == 5_000
    assert view.members[A].heartbeat.seq == 2


def test_views_are_immutable() -> None:
    empty = MembershipView()
    view = observe(empty, beat(A, 1), 0)
    assert A not in empty.members
    with pytest.raises(TypeError):
        view.members[B] = view.members[A]  # type: ignore[index]
    assert forget(view, [B]) is view
    gone = forget(view, [A])
    assert A not in gone.members and A in view.members
    # Forgotten, a node's old heartbeat counts again (documented trade-off).
    assert state(observe(gone, beat(A, 1), 50_000), A, 50_000) is PeerState.ALIVE


def test_eligible_filters_on_subnet_and_manifest() -> None:
    view = MembershipView()
    view = observe(view, beat(D, 1, ("dao", "ops")), 0)
    view = observe(view, beat(A, 1, ("dao",), memory_bytes=1 << 20), 0)
    view = observe(view, beat(B, 1, ("ops",)), 0)
    view = observe(view, beat(C, 1, ("dao",), free_work_tokens=0, load=1000), 0)
    dao = Requirement("dao")
    assert eligible(view, dao, 0) == tuple(sorted([A, D]))
    assert eligible(view, replace(dao, needs_work_token=False), 0) == tuple(sorted([A, C, D]))
    assert eligible(view, replace(dao, min_memory_bytes=1 << 30), 0) == (D,)
    assert eligible(view, replace(dao, wasm_engine_prefix="wasmer/"), 0) == ()
    assert eligible(view, replace(dao, wasm_engine_prefix="wasmtime/"), 0) == tuple(sorted([A, D]))
    assert eligible(view, Requirement("ops", max_load=99), 0) == ()
    assert eligible(view, Requirement("ops"), 0) == tuple(sorted([B, D]))
    # Suspect nodes are left out unless asked for; dead ones always.
    view = observe(view, beat(A, 2, ("dao",), memory_bytes=1 << 20), 5_000)
    assert eligible(view, dao, 5_000) == (A,)
    assert eligible(view, replace(dao, include_suspect=True), 5_000) == tuple(sorted([A, D]))
    assert eligible(view, replace(dao, include_suspect=True), 10_001) == (A,)


def test_from_a_verified_envelope() -> None:
    body = HeartbeatBody(node=A, subnets=("dao", "ops"), manifest=MANIFEST)
    result = open_envelope(seal_envelope(KEYS[0], subnet="dao", seq=77, body=body), subnet="dao")
    assert isinstance(result, Verified) and isinstance(result.body, HeartbeatBody)
    hb = Heartbeat.from_body(result.body, result.seq)
    assert hb == Heartbeat(A, 77, frozenset({"dao", "ops"}), MANIFEST)
    assert eligible(observe(MembershipView(), hb, 0), Requirement("ops"), 0) == (A,)


EVENTS = st.lists(
    st.tuples(st.sampled_from([A, B, C]), st.integers(0, 20), st.integers(0, 3_000)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_the_view_keeps_the_newest_heartbeat_per_node(events: list[tuple[str, int, int]]) -> None:
    view = MembershipView()
    now = 0
    newest: dict[str, tuple[int, int]] = {}  # node -> (seq, first time heard)
    for node, seq, step in events:
        now += step
        view = observe(view, beat(node, seq), now)
        if node not in newest or seq > newest[node][0]:
            newest[node] = (seq, now)
    assert {n: (m.heartbeat.seq, m.heard_ms) for n, m in view.members.items()} == newest
    config = view.config
    for node, (_, heard) in newest.items():
        silent = now - heard
        expected = (
            PeerState.DEAD
            if silent > config.dead_ms
            else PeerState.SUSPECT
            if silent > config.suspect_ms
            else PeerState.ALIVE
        )
        assert state(view, node, now) is expected
    assert live(view, now) == {n for n, s in states(view, now).items() if s != PeerState.DEAD}
