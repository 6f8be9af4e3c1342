"""Gossip, request/response and the host, in-process: real hosts on loopback under trio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb import rpc_pb2
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


async def test_a_burst_arrives_whole_and_the_counters_say_so() -> None:
    # 2000 messages published back to back: `publish` waits while py-libp2p's 32-slot
    # outbound queue to b is half full instead of letting it drop, and b delivers into
    # its own buffer rather than py-libp2p's 32-slot subscription queue.
    count = 2000
    settings = GossipSettings(max_messages_per_second=0)
    async with running_node(settings) as a, running_node(settings) as b:
        at_b = await b.gossip.subscribe(TOPIC, accept)
        at_a = await a.gossip.subscribe(TOPIC, accept)
        await connect(a, b)
        with trio.fail_after(60):
            await wait_meshed(a, b)
            for i in range(count):
                await a.gossip.publish(TOPIC, b"ok %d" % i)
            got = [(await at_b.receive()).data for _ in range(count)]
        assert sorted(got) == sorted(b"ok %d" % i for i in range(count))
        with pytest.raises(trio.WouldBlock):  # a does not deliver its own to itself
            at_a.receive_nowait()
        sender, receiver = a.gossip.stats, b.gossip.stats
        assert sender.published == count
        assert sender.delivered == 0
        assert receiver.delivered == count
        assert receiver.published == 0
        assert sender.publish_wait_timeouts == 0
        for stats in (sender, receiver):
            assert stats.outbound_dropped_rpcs == 0
            assert stats.outbound_dropped_messages == 0
            assert stats.subscription_dropped == 0
            assert stats.buffer_dropped == 0
            assert stats.dropped == 0
        assert a.gossip.dropped == b.gossip.dropped == 0


async def test_a_full_subscription_buffer_drops_and_counts() -> None:
    settings = GossipSettings(max_messages_per_second=0, subscription_buffer=5)
    async with running_node(settings) as a, running_node(settings) as b:
        at_b = await b.gossip.subscribe(TOPIC, accept)
        await a.gossip.subscribe(TOPIC, accept)
        await connect(a, b)
        with trio.fail_after(TIMEOUT):
            await wait_meshed(a, b)
            for i in range(8):
                await a.gossip.publish(TOPIC, b"ok %d" % i)
            # Counters signal nothing; poll them.
            while b.gossip.stats.delivered + b.gossip.stats.buffer_dropped < 8:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert b.gossip.stats.delivered == 5  # nobody read: the buffer holds 5
        assert b.gossip.stats.buffer_dropped == b.gossip.dropped == 3
        assert b.gossip.stats.dropped == 3
        # py-libp2p validates each message in its own task: arrival order may differ.
        kept = {at_b.receive_nowait().data for _ in range(5)}
        assert kept < {b"ok %d" % i for i in range(8)}
        assert len(kept) == 5


async def test_outbound_queue_drops_are_counted() -> None:
    # A message py-libp2p's outbound queue refuses (full) is counted, not lost silently.
    async with running_node() as a, running_node() as b:
        await b.gossip.subscribe(TOPIC, accept)
        await a.gossip.subscribe(TOPIC, accept)
        await connect(a, b)
        with trio.fail_after(TIMEOUT):
            await wait_meshed(a, b)
        queue = a.gossip.pubsub.peer_queues[b.host.get_id()]
        rpc = rpc_pb2.RPC(publish=[rpc_pb2.Message(data=b"ok", topicIDs=[TOPIC])])
        # Fill the queue without a checkpoint, so the sending loop cannot drain it.
        while queue.push(rpc_pb2.RPC()):
            pass
        a.gossip.router.send_rpc(b.host.get_id(), rpc)
        assert a.gossip.stats.outbound_dropped_rpcs == 1
        assert a.gossip.stats.outbound_dropped_messages == 1
        assert a.gossip.stats.dropped == 1


async def test_no_idontwant_for_small_messages() -> None:
    # go-libp2p sends IDONTWANT only for messages of 1 KiB and more, and never for its
    # own; py-libp2p would send one per message, each its own RPC.
    async with AsyncExitStack() as stack:
        a, b, c = [await stack.enter_async_context(running_node()) for _ in range(3)]
        await a.gossip.subscribe(TOPIC, accept)
        at_b = await b.gossip.subscribe(TOPIC, accept)
        at_c = await c.gossip.subscribe(TOPIC, accept)
        await connect(a, b)
        await connect(b, c)
        sent: list[tuple[str, int]] = []
        for node in (a, b, c):
            router = node.gossip.router
            original = router.emit_idontwant

            async def spy(
                msg_ids: list[bytes],
                to_peer: ID,
                _original: Any = original,
                _name: str = node.key.peer_id,
            ) -> None:
                sent.append((_name, len(msg_ids)))
                await _original(msg_ids, to_peer)

            router.emit_idontwant = spy  # type: ignore[method-assign]  # counts, then sends for real
        with trio.fail_after(TIMEOUT):
            await wait_meshed(a, b)
            await wait_meshed(b, c)
            await a.gossip.publish(TOPIC, b"ok small")
            assert (await at_c.receive()).data == b"ok small"
            assert sent == []
            big = b"ok " + b"x" * 2048
            await a.gossip.publish(TOPIC, big)
            assert (await at_b.receive()).data == b"ok small"
            assert (await at_b.receive()).data == big
            assert (await at_c.receive()).data == big
        # Only b and c, which received the big one from a peer, said they have it.
        assert {name for name, _count in sent} == {b.key.peer_id, c.key.peer_id}


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
