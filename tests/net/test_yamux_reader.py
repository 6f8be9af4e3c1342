"""`QflowYamux`: the connection's reader never waits for the write lock.

The unit tests run one `QflowYamux` over a lockstep byte stream (a write returns only
once the other end has read all of it), so "the peer is not reading" is a state the test
controls: a task writing a frame holds the write lock until the test reads the peer's
end. Every step waits for `wait_all_tasks_blocked`, never for time.

The end-to-end tests connect two real hosts (the node's `build_host`) on loopback and
load one connection with request/response exchanges and bulk streams in both directions
at once: the load under which both readers of py-libp2p's yamux parked behind their
write locks while both writers waited for the other side to read.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

import trio
from libp2p.abc import IHost, INetStream, ISecureConn
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.stream_muxer.yamux.yamux import (
    FLAG_ACK,
    FLAG_SYN,
    TYPE_DATA,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    YAMUX_HEADER_FORMAT,
)
from multiaddr import Multiaddr
from trio.testing import lockstep_stream_pair, wait_all_tasks_blocked

from qflow_node.identity import SigningKey
from qflow_node.net.host import build_host
from qflow_node.net.reqresp import Direct, Limits
from qflow_node.net.yamux import QflowYamux

STEP_TIMEOUT = 5  # s; every unit test finishes in milliseconds
PEER = ID.from_pubkey(create_new_key_pair().public_key)


def frame(typ: int, flags: int, stream_id: int, length: int, payload: bytes = b"") -> bytes:
    return struct.pack(YAMUX_HEADER_FORMAT, 0, typ, flags, stream_id, length) + payload


def ping(flags: int, value: int) -> bytes:
    return frame(TYPE_PING, flags, 0, value)


def data(stream_id: int, payload: bytes) -> bytes:
    return frame(TYPE_DATA, 0, stream_id, len(payload), payload)


class LockstepConn:
    """What `Yamux` uses of its secured connection, over one end of a lockstep stream."""

    def __init__(self, stream: trio.abc.Stream, *, is_initiator: bool) -> None:
        self.stream = stream
        self.is_initiator = is_initiator

    async def read(self, n: int | None = None) -> bytes:
        return await self.stream.receive_some(n)

    async def write(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def close(self) -> None:
        await self.stream.aclose()

    def get_remote_address(self) -> tuple[str, int] | None:
        return None


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    received = bytearray()
    while len(received) < size:
        chunk = await stream.receive_some(size - len(received))
        assert chunk, f"EOF after {len(received)} of {size} bytes"
        received += chunk
    return bytes(received)


@dataclass
class Writer:
    """A task writing one frame through `_write_frame`; `done` once it returned."""

    done: trio.Event

    @classmethod
    def start(cls, nursery: trio.Nursery, mux: QflowYamux, frame: bytes, name: str) -> Writer:
        writer = cls(trio.Event())

        async def write() -> None:
            await mux._write_frame(frame)
            writer.done.set()

        nursery.start_soon(write, name=name)
        return writer


@asynccontextmanager
async def muxer_with_peer() -> AsyncIterator[tuple[QflowYamux, trio.abc.Stream, trio.Nursery]]:
    """A QflowYamux with its reader (`handle_incoming`) running, waiting for a header;
    and the peer's end of its connection, which nobody reads unless the test does."""
    ours, peer = lockstep_stream_pair()
    conn = LockstepConn(ours, is_initiator=True)
    mux = QflowYamux(cast(ISecureConn, conn), PEER, is_initiator=True)
    with trio.fail_after(STEP_TIMEOUT):
        async with trio.open_nursery() as nursery:
            mux._nursery = nursery  # as Yamux.start sets it before starting the reader
            nursery.start_soon(mux.handle_incoming, name="reader")
            await wait_all_tasks_blocked()
            yield mux, peer, nursery
            await peer.aclose()  # the reader reads EOF and returns
    assert mux.event_closed.is_set()


async def hold_the_write_lock(
    mux: QflowYamux, nursery: trio.Nursery, frame: bytes = data(1, b"held")
) -> Writer:
    """A writer blocked in the socket write with the lock held: the peer is not reading."""
    holder = Writer.start(nursery, mux, frame, "holder")
    await wait_all_tasks_blocked()
    assert mux._write_lock.locked()
    assert not holder.done.is_set()
    return holder


async def test_the_reader_defers_its_frames_while_a_writer_holds_the_lock() -> None:
    async with muxer_with_peer() as (mux, peer, nursery):
        held = data(1, b"bulk data the peer is not reading yet")
        holder = await hold_the_write_lock(mux, nursery, held)

        # The peer pings; lockstep: send_all returns once the reader has read it all.
        await peer.send_all(ping(FLAG_SYN, 1))
        await wait_all_tasks_blocked()
        # The reader's PING ACK went to the queue, not behind the lock...
        assert list(mux._deferred or ()) == [ping(FLAG_ACK, 1)]
        # ...and it is reading again: a second ping is read and answered the same way.
        # (py-libp2p's Yamux reader would still wait for the lock; this would hang.)
        await peer.send_all(ping(FLAG_SYN, 2))
        await wait_all_tasks_blocked()
        assert list(mux._deferred or ()) == [ping(FLAG_ACK, 1), ping(FLAG_ACK, 2)]
        assert not holder.done.is_set()
        assert mux._write_lock.locked()

        # The peer reads: the holder's frame, then the deferred ones, in order, from the
        # holder, which releases the lock only after writing them.
        wire = await receive_exactly(peer, len(held) + 24)
        assert wire == held + ping(FLAG_ACK, 1) + ping(FLAG_ACK, 2)
        await wait_all_tasks_blocked()
        assert holder.done.is_set()
        assert not mux._write_lock.locked()
        assert not mux._deferred


async def test_other_tasks_wait_for_the_lock_and_write_after_the_deferred_frames() -> None:
    async with muxer_with_peer() as (mux, peer, nursery):
        held = data(1, b"first")
        holder = await hold_the_write_lock(mux, nursery, held)
        # A task that is not the reader waits for the lock like any writer.
        waiting = data(3, b"second")
        other = Writer.start(nursery, mux, waiting, "not-the-reader")
        await wait_all_tasks_blocked()
        assert not other.done.is_set()
        assert not mux._deferred  # its frame was not deferred

        # The reader answers a ping meanwhile: deferred, ahead of the waiting writer.
        await peer.send_all(ping(FLAG_SYN, 7))
        await wait_all_tasks_blocked()
        assert list(mux._deferred or ()) == [ping(FLAG_ACK, 7)]
        assert not other.done.is_set()

        # Only the holder's frame has been read: it still holds the lock (its deferred
        # frame to write), and the other writer still waits.
        assert await receive_exactly(peer, len(held)) == held
        await wait_all_tasks_blocked()
        assert not holder.done.is_set()
        assert not other.done.is_set()

        wire = await receive_exactly(peer, 12 + len(waiting))
        assert wire == ping(FLAG_ACK, 7) + waiting
        await wait_all_tasks_blocked()
        assert holder.done.is_set()
        assert other.done.is_set()
        assert not mux._write_lock.locked()


async def test_a_stream_the_peer_opens_is_acked_before_its_handler_writes() -> None:
    async with muxer_with_peer() as (mux, peer, nursery):
        held = data(1, b"held")
        holder = await hold_the_write_lock(mux, nursery, held)

        # The peer opens stream 2: the reader defers the ACK, then hands the stream over.
        await peer.send_all(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 2, 0))
        stream = await mux.accept_stream()
        await wait_all_tasks_blocked()
        ack = frame(TYPE_WINDOW_UPDATE, FLAG_ACK, 2, 0)
        assert list(mux._deferred or ()) == [ack]

        # The stream's handler answers at once; its frame waits for the lock.
        answered = trio.Event()

        async def handler() -> None:
            await stream.write(b"reply")
            answered.set()

        nursery.start_soon(handler, name="handler")
        await wait_all_tasks_blocked()
        assert not answered.is_set()

        wire = await receive_exactly(peer, len(held) + len(ack) + 12 + 5)
        assert wire == held + ack + data(2, b"reply")  # the ACK before the stream's data
        await wait_all_tasks_blocked()
        assert holder.done.is_set()
        assert answered.is_set()


async def test_without_a_lock_holder_a_flusher_writes_the_readers_frame() -> None:
    async with muxer_with_peer() as (mux, peer, _):
        assert not mux._write_lock.locked()
        await peer.send_all(ping(FLAG_SYN, 3))
        await wait_all_tasks_blocked()
        # The reader never writes: a flusher holds the lock, blocked until we read.
        assert mux._write_lock.locked()
        assert mux._reader is not None
        assert await receive_exactly(peer, 12) == ping(FLAG_ACK, 3)
        await wait_all_tasks_blocked()
        assert not mux._write_lock.locked()
        assert not mux._deferred
        # Same bytes on the wire as py-libp2p's yamux, in the same order.
        await peer.send_all(ping(FLAG_SYN, 4))
        assert await receive_exactly(peer, 12) == ping(FLAG_ACK, 4)


# -- two real hosts on loopback ---------------------------------------------------------

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
ECHO = "/qflow/test/yamux-echo/1"
BULK = TProtocol("/qflow/test/yamux-bulk/1")
LOAD_TIMEOUT = 8  # s; the load below takes well under a second when nothing hangs
REQUESTS = 40  # per direction
BULK_STREAMS = 16  # per direction
BULK_BYTES = 1_000_000  # per stream
CHUNK = b"q" * 100_000


@asynccontextmanager
async def two_connected_hosts() -> AsyncIterator[tuple[IHost, IHost]]:
    a = build_host(SigningKey.generate(), LOOPBACK)
    b = build_host(SigningKey.generate(), LOOPBACK)
    async with a.run(listen_addrs=LOOPBACK), b.run(listen_addrs=LOOPBACK):
        with trio.fail_after(LOAD_TIMEOUT):
            await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        yield a, b


async def test_hosts_connect_over_qflow_yamux() -> None:
    async with two_connected_hosts() as (a, b):
        for host, other in ((a, b), (b, a)):
            conns = host.get_network().get_connections(other.get_id())
            assert conns
            for conn in conns:
                assert isinstance(conn.muxed_conn, QflowYamux), type(conn.muxed_conn)


async def sink(stream: INetStream) -> None:
    """Reads a bulk stream to its end, then answers how many bytes it read."""
    total = 0
    try:
        while True:
            total += len(await stream.read(65536))
    except StreamEOF:
        pass
    await stream.write(str(total).encode())
    await stream.close()


async def send_bulk(src: IHost, dst: IHost) -> int:
    stream = await src.new_stream(dst.get_id(), [BULK])
    sent = 0
    while sent < BULK_BYTES:
        await stream.write(CHUNK)
        sent += len(CHUNK)
    await stream.close()
    answer = b""
    try:
        while True:
            answer += await stream.read()
    except StreamEOF:
        pass
    return int(answer)


async def echo(peer: str, request: bytes) -> bytes:
    return request[::-1]


async def test_concurrent_requests_and_bulk_streams_both_ways_complete() -> None:
    async with two_connected_hosts() as (a, b):
        for host in (a, b):
            host.set_stream_handler(BULK, sink)
            Direct(host).serve(ECHO, echo, Limits(max_concurrent_inbound=2 * REQUESTS))
        answers: list[bytes] = []
        bulk: list[int] = []

        async def request(src: IHost, dst: IHost, i: int) -> None:
            payload = i.to_bytes(4, "big") * 1000
            limits = Limits(timeout=LOAD_TIMEOUT)
            answer = await Direct(src).request(dst.get_id().to_base58(), ECHO, payload, limits)
            assert answer == payload[::-1]
            answers.append(answer)

        async def stream(src: IHost, dst: IHost) -> None:
            bulk.append(await send_bulk(src, dst))

        with trio.fail_after(LOAD_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for src, dst in ((a, b), (b, a)):
                    for _ in range(BULK_STREAMS):
                        nursery.start_soon(stream, src, dst)
                    for i in range(REQUESTS):
                        nursery.start_soon(request, src, dst, i)
        assert len(answers) == 2 * REQUESTS
        assert bulk == [BULK_BYTES] * (2 * BULK_STREAMS)
