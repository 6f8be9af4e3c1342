"""The membership service in-process: real hosts on loopback, short intervals, no sleeps."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.codec.envelope import encode_envelope
from qflow_node.codec.envelope_bodies import Heartbeat
from qflow_node.core.envelopes import seal_envelope
from qflow_node.core.membership import MembershipConfig, PeerState
from qflow_node.identity import SigningKey
from qflow_node.net.gossip import Gossip, open_gossip
from qflow_node.net.host import build_host
from qflow_node.net.topics import topic
from qflow_node.runtime.membership_service import (
    FREE_WORK_TOKENS,
    MembershipService,
    local_manifest,
)

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
SUBNET = "test"
NODES = topic(SUBNET, "nodes")
CONFIG = MembershipConfig(heartbeat_ms=100, suspect_ms=300, dead_ms=600)
TIMEOUT = 15
# A tick runs every half interval; scheduling on a loaded machine adds some more.
SLACK_MS = CONFIG.heartbeat_ms // 2 + 400


@dataclass
class Node:
    key: SigningKey
    host: IHost
    gossip: Gossip
    service: MembershipService
    stopped: trio.CancelScope

    @property
    def id(self) -> str:
        return self.key.peer_id


@asynccontextmanager
async def member(
    snapshot: Path | None = None, work_tokens: Callable[[], int] | None = None
) -> AsyncIterator[Node]:
    key = SigningKey.generate()
    host = build_host(key, LOOPBACK)
    async with host.run(listen_addrs=LOOPBACK), open_gossip(host) as gossip:
        service = MembershipService(
            key,
            gossip,
            [SUBNET],
            CONFIG,
            snapshot=snapshot,
            work_tokens=work_tokens or (lambda: FREE_WORK_TOKENS),
        )
        async with trio.open_nursery() as nursery:
            heartbeats = await gossip.subscribe(NODES, service.validator(SUBNET))
            scope = trio.CancelScope()

            async def serve() -> None:
                with scope:
                    async with trio.open_nursery() as inner:
                        inner.start_soon(service.consume, SUBNET, heartbeats)
                        inner.start_soon(service.run)

            nursery.start_soon(serve)
            yield Node(key, host, gossip, service, scope)
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def hostile() -> AsyncIterator[tuple[SigningKey, IHost, Gossip]]:
    """A peer that forwards anything on the nodes topic (its validator accepts all)."""
    key = SigningKey.generate()
    host = build_host(key, LOOPBACK)
    async with host.run(listen_addrs=LOOPBACK), open_gossip(host) as gossip:
        await gossip.subscribe(NODES, lambda _data: True)
        yield key, host, gossip


async def connect(a: IHost, b: IHost) -> None:
    await a.connect(info_from_p2p_addr(b.get_addrs()[0]))


async def test_nodes_see_each_other_alive_and_a_stopped_one_goes_suspect_then_dead(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        snapshot = tmp_path / "run" / "peers.json"
        a = await stack.enter_async_context(member(snapshot))
        b, c = [await stack.enter_async_context(member()) for _ in range(2)]
        await connect(b.host, a.host)
        await connect(c.host, a.host)
        with trio.fail_after(TIMEOUT):
            for x, y in ((a, b), (a, c), (b, a), (c, a), (b, c), (c, b)):
                await x.service.wait_for(y.key.peer_id, PeerState.ALIVE)
            # The snapshot `qflow peers` reads lists both peers alive.
            await a.service.wait_until(lambda: _alive_in_snapshot(snapshot) == {b.id, c.id})

            c.stopped.cancel()  # c stops heartbeating; its host stays up
            for x in (a, b):
                suspect = await x.service.wait_for(c.key.peer_id, PeerState.SUSPECT)
                dead = await x.service.wait_for(c.key.peer_id, PeerState.DEAD)
                heard = x.service.view.members[c.key.peer_id].heard_ms
                assert CONFIG.suspect_ms < suspect.at_ms - heard <= CONFIG.suspect_ms + SLACK_MS
                assert CONFIG.dead_ms < dead.at_ms - heard <= CONFIG.dead_ms + SLACK_MS
        assert a.service.rejected == {}
    assert not snapshot.exists()  # removed when the service stops


def _alive_in_snapshot(path: Path) -> set[str]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return set()
    return {p["node"] for p in data["peers"] if p["state"] == "alive"}


async def test_forged_and_oversized_heartbeats_are_dropped_and_counted(tmp_path: Path) -> None:
    async with member() as a, hostile() as (key, host, gossip):
        await connect(host, a.host)
        with trio.fail_after(TIMEOUT):
            await gossip.pubsub.wait_for_mesh(a.host.get_id(), NODES, timeout=TIMEOUT)
            body = Heartbeat(node=key.peer_id, subnets=(SUBNET,), manifest=local_manifest())
            good = seal_envelope(key, subnet=SUBNET, seq=1, body=body)
            forged = good[:-1] + bytes([good[-1] ^ 1])  # the signature is the last field
            other = seal_envelope(key, subnet="elsewhere", seq=2, body=body)  # wrong subnet
            oversized = encode_envelope("heartbeat", key.peer_id, 3, b"x" * 5000, b"s" * 64)
            for data in (forged, other, oversized, b"garbage"):
                await gossip.publish(NODES, data)
            expected = {"bad_signature": 2, "oversize": 1, "malformed": 1}
            await a.service.wait_until(lambda: dict(a.service.rejected) == expected)
            assert key.peer_id not in a.service.view.members
            # The service keeps working: the same peer's genuine heartbeat counts.
            await gossip.publish(NODES, good)
            await a.service.wait_for(key.peer_id, PeerState.ALIVE)
        assert dict(a.service.rejected) == expected


async def test_heartbeats_advertise_the_work_the_node_can_take_now() -> None:
    free = [3]
    async with member() as a, member(work_tokens=lambda: free[0]) as b:
        await connect(b.host, a.host)

        def advertised() -> int | None:
            seen = a.service.view.members.get(b.id)
            return None if seen is None else seen.heartbeat.manifest.free_work_tokens

        with trio.fail_after(TIMEOUT):
            await a.service.wait_until(lambda: advertised() == 3)
            free[0] = 0  # busy: every work slot taken
            await a.service.wait_until(lambda: advertised() == 0)
