"""`net.channel.Channel`: many requests over one long-lived stream per peer, between
two real libp2p hosts on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

import pytest
import trio
import trio.testing
from libp2p.abc import IHost, INetStream
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.identity import SigningKey
from qflow_node.net.channel import Channel, FrameError, Handler, _Frames, frame, split
from qflow_node.net.host import build_host
from qflow_node.net.reqresp import RequestError

PROTOCOL = "/qflow/test/channel/1"
LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
TIMEOUT = 10


@dataclass
class Node:
    key: SigningKey
    host: IHost


@asynccontextmanager
async def running_node() -> AsyncIterator[Node]:
    key = SigningKey.generate()
    host = build_host(key, LOOPBACK)
    async with host.run(listen_addrs=LOOPBACK):
        yield Node(key, host)


@asynccontextmanager
async def channels(a: Node, b: Node, answer: Handler) -> AsyncIterator[tuple[Channel, Channel]]:
    """A channel on each host (b answers with `answer`), running, a connected to b."""
    async with trio.open_nursery() as nursery:
        ca = Channel(a.host, PROTOCOL, answer, timeout=1.0, max_request=64)
        cb = Channel(b.host, PROTOCOL, answer, timeout=1.0, max_request=64)
        nursery.start_soon(ca.run)
        nursery.start_soon(cb.run)
        await trio.testing.wait_all_tasks_blocked()
        await a.host.connect(info_from_p2p_addr(b.host.get_addrs()[0]))
        yield ca, cb
        nursery.cancel_scope.cancel()


async def test_concurrent_requests_share_one_stream_and_get_their_own_answers() -> None:
    asked: list[str] = []

    async def echo(peer: str, body: bytes) -> bytes:
        asked.append(peer)
        if body == b"slow":
            await trio.sleep(0.2)  # answers come back in order: the next waits for it
        return b"echo " + body

    async with running_node() as a, running_node() as b, channels(a, b, echo) as (ca, _cb):
        peer = b.key.peer_id
        answers: dict[bytes, bytes] = {}

        async def ask(body: bytes) -> None:
            answers[body] = await ca.request(peer, body)

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(ask, b"q%d" % i)
                nursery.start_soon(ask, b"slow")
        assert answers == {body: b"echo " + body for body in answers}
        assert len(answers) == 51
        assert set(asked) == {a.key.peer_id}
        assert len(ca._outbound) == 1  # one stream carried all of them


async def test_limits_timeouts_and_unsupported_peers_are_request_errors() -> None:
    async def stall(peer: str, body: bytes) -> bytes:
        if body == b"stall":
            await trio.sleep_forever()
        return body

    async with running_node() as a, running_node() as b, channels(a, b, stall) as (ca, _cb):
        peer = b.key.peer_id
        with trio.fail_after(TIMEOUT):
            with pytest.raises(RequestError) as too_large:
                await ca.request(peer, b"x" * 64)
            assert too_large.value.reason == "too_large"
            with pytest.raises(RequestError) as slow:
                await ca.request(peer, b"stall")
            assert slow.value.reason == "timeout"
            # The stalled question holds b's answering loop; a's give up in time.
            with pytest.raises(RequestError):
                await ca.request(peer, b"after")
            other = Channel(a.host, "/qflow/test/nobody/1", stall, timeout=1.0)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(other.run)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(RequestError) as unsupported:
                    await other.request(peer, b"hi")
                nursery.cancel_scope.cancel()
            assert unsupported.value.reason == "unsupported"


async def test_a_stream_the_peer_closes_fails_what_is_pending_and_is_reopened() -> None:
    calls = 0

    async def flaky(peer: str, body: bytes) -> bytes:
        nonlocal calls
        calls += 1
        if body == b"die":
            raise trio.BrokenResourceError("handler failed")  # the server ends the stream
        return body

    async with running_node() as a, running_node() as b, channels(a, b, flaky) as (ca, _cb):
        peer = b.key.peer_id
        with trio.fail_after(TIMEOUT):
            with pytest.raises(RequestError) as broken:
                await ca.request(peer, b"die")
            assert broken.value.reason == "transport"
            assert await ca.request(peer, b"again") == b"again"  # a new stream
        assert calls == 2


class _Readable:
    """A trio receive stream read the way libp2p streams are (`read(n)`)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream

    async def read(self, n: int) -> bytes:
        return bytes(await self.stream.receive_some(n))


async def test_frames_round_trip_and_bad_frames_are_refused() -> None:
    send, receive = trio.testing.memory_stream_pair()
    frames = _Frames(cast(INetStream, _Readable(receive)), max_frame=16)  # read(n) is all it uses
    await send.send_all(frame(7, b"hello") + frame(2**40, b""))
    assert split(await frames.next() or b"") == (7, b"hello")
    assert split(await frames.next() or b"") == (2**40, b"")
    await send.send_all(frame(1, b"x" * 20))
    with pytest.raises(FrameError, match="exceeds the limit"):
        await frames.next()
    with pytest.raises(FrameError, match="shorter than a request id"):
        split(b"abc")
