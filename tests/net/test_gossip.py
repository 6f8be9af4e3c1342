"""Gossip, request/response and the host, in-process: real hosts on loopback under trio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.identity import SigningKey
from qflow_node.net.gossip import Gossip, GossipMessage, GossipSettings, open_gossip
from qflow_node.net.host import build_host, listening_on
from qflow_node.net.reqresp import Direct, Limits, RequestError
from qflow_node.net.topics import topic

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
TOPIC = topic("test", "flows")
TIMEOUT = 10


@dataclass
class Node:
    key: SigningKey
    host: IHost
    gossip: Gossip


@asynccontextmanager
async def running_node(settings: GossipSettings | None = None) -> AsyncIterator[Node]:
    key = SigningKey.generate()
    host = build_host(key, LOOPBACK)
    async with host.run(listen_addrs=LOOPBACK), open_gossip(host, settings) as gossip:
        yield Node(key, host, gossip)


async def connect(a: Node, b: Node) -> None:
    await a.host.connect(info_from_p2p_addr(b.host.get_addrs()[0]))


async def wait_meshed(node: Node, peer: Node) -> None:
    """Until `peer` is in `node`'s mesh for TOPIC, so what `node` sends reaches it at
    once (event-driven inside py-libp2p). Before that a publish may reach it only by
    gossip at a later heartbeat, or not at all if it joins the mesh meanwhile."""
    await node.gossip.pubsub.wait_for_mesh(peer.host.get_id(), TOPIC, timeout=TIMEOUT)


def accept(data: bytes) -> bool:
    return data.startswith(b"ok")


async def test_host_identity_is_the_node_key_and_it_listens() -> None:
    async with running_node() as node:
        assert node.host.get_id().to_base58() == node.key.peer_id
        addrs, failed = listening_on(node.host, LOOPBACK)
        assert failed == []
        assert str(addrs[0]).endswith(f"/p2p/{node.key.peer_id}")
        assert node.gossip.running


async def test_a_message_crosses_a_line_of_three_and_invalid_ones_stop_at_the_first_hop() -> None:
    async with AsyncExitStack() as stack:
        a, b, c = [await stack.enter_async_context(running_node()) for _ in range(3)]
        saw_bad = trio.Event()

        def b_validator(data: bytes) -> bool:
            if data == b"bad":
                saw_bad.set()
            return accept(data)

        await b.gossip.subscribe(TOPIC, b_validator)
        at_c = await c.gossip.subscribe(TOPIC, accept)
        await a.gossip.subscribe(TOPIC, lambda _data: True)  # the origin accepts anything
        await connect(a, b)
        await connect(c, b)  # a - b - c: a's messages reach c only through b
        with trio.fail_after(TIMEOUT):
            await wait_meshed(a, b)
            await wait_meshed(b, c)
            await a.gossip.publish(TOPIC, b"bad")
            await a.gossip.publish(TOPIC, b"ok 1")
            message = await at_c.receive()
            await saw_bad.wait()
        assert message == GossipMessage(TOPIC, b"ok 1", a.key.peer_id, message.seqno)
        # b rejected "bad" (validator called, returned False), so it was never forwarded.
        with pytest.raises(trio.WouldBlock):
            at_c.receive_nowait()


async def test_a_validator_that_raises_rejects() -> None:
    async with running_node() as a, running_node() as b:

        def explode(data: bytes) -> bool:
            if data == b"boom":
                raise ValueError("decoder bug")
            return True

        at_b = await b.gossip.subscribe(TOPIC, explode)
        await a.gossip.subscribe(TOPIC, lambda _data: True)
        await connect(a, b)
        with trio.fail_after(TIMEOUT):
            await wait_meshed(a, b)
            await a.gossip.publish(TOPIC, b"boom")
            await a.gossip.publish(TOPIC, b"fine")
            assert (await at_b.receive()).data == b"fine"
        assert b.gossip.running


async def test_publishing_above_the_rate_limit_waits_instead_of_dropping() -> None:
    # py-libp2p drops a publisher's own messages above the per-second limit; pacing
    # in Gossip.publish turns that into backpressure, so a burst arrives whole.
    settings = GossipSettings(max_messages_per_second=10)
    async with running_node(settings) as a, running_node(settings) as b:
        at_b = await b.gossip.subscribe(TOPIC, accept)
        await a.gossip.subscribe(TOPIC, accept)
        await connect(a, b)
        count = 25
        with trio.fail_after(TIMEOUT):
            await wait_meshed(a, b)
            started = trio.current_time()
            for i in range(count):
                await a.gossip.publish(TOPIC, b"ok %d" % i)
            got = {(await at_b.receive()).data for _ in range(count)}
        assert got == {b"ok %d" % i for i in range(count)}
        assert trio.current_time() - started >= 1.0  # it did wait


async def test_oversized_messages_are_refused_before_sending() -> None:
    async with running_node(GossipSettings(max_message_size=100)) as a:
        with pytest.raises(ValueError, match="exceeds the gossip limit"):
            await a.gossip.publish(TOPIC, b"x" * 101)


async def test_request_response_round_trip_and_limits() -> None:
    async with running_node() as a, running_node() as b:

        async def echo(peer: str, request: bytes) -> bytes:
            assert peer == a.key.peer_id
            if request == b"stall":
                await trio.sleep_forever()
            return b"echo " + request

        Direct(b.host).serve("/qflow/test/echo/1", echo, Limits(max_request_size=64))
        await connect(a, b)
        client = Direct(a.host)
        peer = b.key.peer_id
        with trio.fail_after(TIMEOUT):
            assert await client.request(peer, "/qflow/test/echo/1", b"hi") == b"echo hi"
            with pytest.raises(RequestError) as too_large:
                await client.request(
                    peer, "/qflow/test/echo/1", b"x" * 65, Limits(max_request_size=64)
                )
            assert too_large.value.reason == "too_large"
            with pytest.raises(RequestError) as unsupported:
                await client.request(peer, "/qflow/test/nope/1", b"hi")
            assert unsupported.value.reason == "unsupported"
            with pytest.raises(RequestError) as slow:
                await client.request(peer, "/qflow/test/echo/1", b"stall", Limits(timeout=0.5))
            assert slow.value.reason == "timeout"
