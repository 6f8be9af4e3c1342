"""Interop with a real Kubo (go-libp2p): connections both ways, GossipSub both ways, and
Kubo's own add/download. Needs the `interop` extra (`make test-interop`); skips without it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import pytest
import trio
from libp2p.abc import IHost, INetConn, INetwork
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.identity import SigningKey
from qflow_node.net.events import Notifee
from qflow_node.net.gossip import Gossip, GossipMessage, open_gossip
from qflow_node.net.host import build_host
from qflow_node.net.topics import topic

from .kubo import KuboProcess, KuboTimeout

pytestmark = pytest.mark.kubo

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
TOPIC = topic("interop", "flows")
TIMEOUT = 15.0
# Gossip is lossy by design; a publication that races mesh formation may be lost, so the
# gossip test publishes again after this long without delivery, a bounded number of times.
REPUBLISH_AFTER = 1.0
ATTEMPTS = 10


def accept_all(data: bytes) -> bool:
    return True


@dataclass
class ConnectionWatch(Notifee):
    """Sets an event when a connection with a given peer opens (in either direction)."""

    events: dict[ID, trio.Event] = field(default_factory=dict)

    def event(self, peer: ID) -> trio.Event:
        return self.events.setdefault(peer, trio.Event())

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.event(conn.muxed_conn.peer_id).set()


@asynccontextmanager
async def qflow_host() -> AsyncIterator[IHost]:
    host = build_host(SigningKey.generate(), LOOPBACK)
    async with host.run(listen_addrs=LOOPBACK):
        yield host


def connected_to(host: IHost, peer_id: str) -> bool:
    return bool(host.get_network().connections.get(ID.from_base58(peer_id)))


async def dial_kubo(host: IHost, kubo: KuboProcess) -> None:
    addr = Multiaddr((await trio.to_thread.run_sync(kubo.p2p_addrs))[0])
    with trio.fail_after(TIMEOUT):
        await host.connect(info_from_p2p_addr(addr))


async def test_qflow_dials_kubo(kubo: KuboProcess) -> None:
    async with qflow_host() as host:
        await dial_kubo(host, kubo)
        assert connected_to(host, kubo.peer_id)
        ours = host.get_id().to_base58()
        await trio.to_thread.run_sync(kubo.wait_for_peer, ours, TIMEOUT)
        assert ours in await trio.to_thread.run_sync(kubo.peers)


async def test_kubo_dials_qflow(kubo: KuboProcess) -> None:
    async with qflow_host() as host:
        watch = ConnectionWatch()
        host.get_network().register_notifee(watch)
        kubo_id = ID.from_base58(kubo.peer_id)
        arrived = watch.event(kubo_id)
        ours = host.get_id().to_base58()
        addr = str(host.get_addrs()[0])
        assert addr.endswith(f"/p2p/{ours}")
        await trio.to_thread.run_sync(partial(kubo.connect, addr, timeout=TIMEOUT))
        assert ours in await trio.to_thread.run_sync(kubo.peers)
        with trio.fail_after(TIMEOUT):
            await arrived.wait()
        assert connected_to(host, kubo.peer_id)


async def receive_from_kubo(
    kubo: KuboProcess, received: trio.MemoryReceiveChannel[GossipMessage]
) -> GossipMessage:
    """Kubo publishes until one of its messages reaches us (bounded)."""
    for attempt in range(ATTEMPTS):
        payload = f"from kubo {attempt}".encode()
        await trio.to_thread.run_sync(kubo.pubsub_publish, TOPIC, payload)
        with trio.move_on_after(REPUBLISH_AFTER):
            while True:
                message = await received.receive()
                if message.data.startswith(b"from kubo"):
                    return message
    raise AssertionError(f"no Kubo message reached Qflow in {ATTEMPTS} publications")


async def send_to_kubo(kubo: KuboProcess, gossip: Gossip, subscription: int, ours: str) -> bytes:
    """We publish until one of our messages reaches Kubo (bounded); returns its data."""
    for attempt in range(ATTEMPTS):
        payload = f"from qflow {attempt}".encode()
        await gossip.publish(TOPIC, payload)
        deadline = trio.current_time() + REPUBLISH_AFTER
        while (left := deadline - trio.current_time()) > 0:
            message = await trio.to_thread.run_sync(kubo.pubsub_next, subscription, left)
            # Kubo also delivers its own publications to its subscription: skip them.
            if message is not None and message.sender == ours:
                assert message.topics == (TOPIC,)
                return message.data
    raise AssertionError(f"no Qflow message reached Kubo in {ATTEMPTS} publications")


async def test_gossip_both_ways(kubo: KuboProcess) -> None:
    async with qflow_host() as host, open_gossip(host) as gossip:
        ours = host.get_id().to_base58()
        received = await gossip.subscribe(TOPIC, accept_all)
        subscription = await trio.to_thread.run_sync(kubo.pubsub_subscribe, TOPIC)
        await dial_kubo(host, kubo)

        # Kubo -> Qflow: once Kubo knows we subscribe, it publishes to us directly.
        await trio.to_thread.run_sync(kubo.wait_for_pubsub_peer, TOPIC, ours, TIMEOUT)
        message = await receive_from_kubo(kubo, received)
        assert message.topic == TOPIC
        assert message.origin == kubo.peer_id  # signed by Kubo's (RSA) key, verified here

        # Qflow -> Kubo: once Kubo is in our mesh, a publication reaches it directly.
        await gossip.pubsub.wait_for_mesh(ID.from_base58(kubo.peer_id), TOPIC, timeout=TIMEOUT)
        data = await send_to_kubo(kubo, gossip, subscription, ours)
        assert data.startswith(b"from qflow")


def test_kubo_add_and_download(kubo: KuboProcess) -> None:
    # Kubo's defaults: CIDv0, UnixFS, 256 KiB chunks (this is `ipfs add` of the bytes).
    assert kubo.add_bytes(b"hello world\n") == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    data = os.urandom(600 * 1024)  # three chunks under a root node
    cid = kubo.add_bytes(data)
    assert cid.startswith("Qm")
    assert kubo.cat(cid, timeout=TIMEOUT) == data


def test_kubo_download_of_a_missing_block_times_out(kubo: KuboProcess) -> None:
    # `only_hash` computes a CID without storing it; nobody else has it.
    missing = kubo.add_bytes(os.urandom(1024), only_hash=True)
    with pytest.raises(KuboTimeout):
        kubo.cat(missing, timeout=0.5)
    # The stuck download is abandoned in the worker, which keeps serving.
    assert kubo.addrs()
    assert kubo.cat(kubo.add_bytes(b"still here"), timeout=TIMEOUT) == b"still here"
