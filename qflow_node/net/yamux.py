"""py-libp2p's yamux, with a reader that never waits for the connection's write lock.

py-libp2p's `Yamux.handle_incoming` (the one task reading a connection) writes some
frames itself - the ACK of a stream the peer opened, a ping reply, a RST - through
`_write_frame`, which holds a per-connection lock for the whole socket write. When a
writer holding that lock is blocked on a full socket (the peer is not reading right now)
the reader parks behind it and stops reading. Two loaded nodes can reach that state at
once, each waiting for the other to read: every stream on the connection hangs for good
(seen under 100 concurrent flows: slot confirmations, gossip and leases all stuck).

Here the reader never writes: its frames are queued, and whoever writes next under the
lock writes them first - the current holder before it releases the lock, the next
writer before its own frame, or a flusher task started when the lock was free. The
reader keeps reading, so the peer's writes drain and the holder's socket write
completes. Stream order holds: an ACK is queued before the new stream is handed to its
handler, and every writer writes the queue before its own frame. Same bytes on the
wire.
"""

from __future__ import annotations

import os
from collections import deque
from typing import cast

import trio
from libp2p.abc import IHost, IMuxedConn, ISecureConn
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID, Yamux


class QflowYamux(Yamux):
    _reader: trio.lowlevel.Task | None = None
    _deferred: deque[bytes] | None = None
    _flushing: bool = False

    async def handle_incoming(self) -> None:
        self._reader = trio.lowlevel.current_task()
        self._deferred = deque()
        await super().handle_incoming()

    async def _write_frame(self, data: bytes) -> None:
        deferred = self._deferred
        nursery = self._nursery  # Yamux.start's; the reader runs inside it
        if (
            deferred is not None
            and nursery is not None
            and trio.lowlevel.current_task() is self._reader
        ):
            # The reader never writes: its frame goes to whoever writes next under the
            # lock - the holder, before it releases it, or a flusher started here.
            deferred.append(data)
            if not self._write_lock.locked() and not self._flushing:
                self._flushing = True
                nursery.start_soon(self._flush)
            return
        async with self._write_lock:
            await self._write_deferred()  # the reader's frames first: an ACK before data
            await self.secured_conn.write(data)
            await self._write_deferred()
        await trio.lowlevel.checkpoint()

    async def _flush(self) -> None:
        try:
            async with self._write_lock:
                await self._write_deferred()
        finally:
            self._flushing = False

    async def _write_deferred(self) -> None:
        deferred = self._deferred
        while deferred:
            await self.secured_conn.write(deferred[0])
            deferred.popleft()  # only once written: a failed write leaves it queued


class QflowMuxerMultistream(MuxerMultistream):
    """py-libp2p 0.8.1 builds its own `Yamux` whenever yamux is negotiated, whatever class
    the host's muxer options name; this builds ours."""

    async def new_conn(self, conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        protocol, transport_class = await self._selector.select(
            conn, conn.is_initiator, self.negotiate_timeout
        )
        if protocol == PROTOCOL_ID:
            muxed: IMuxedConn = QflowYamux(conn, peer_id, is_initiator=conn.is_initiator)
        else:
            muxed = transport_class(conn, peer_id)
        return self._annotate_connection(muxed, conn, protocol)


# py-libp2p 0.8.1 sends a WINDOW_UPDATE frame after every read of a yamux stream (its
# "release on read", on by default) instead of go-yamux's rule of one update once half
# the window has been consumed: under load more than half of the frames a node wrote
# were window updates, each a Noise message and a socket write here and a frame for the
# peer's reader. The library reads this switch on every read; off, it follows go-yamux.
RELEASE_ON_READ_ENV = "PY_YAMUX_RELEASE_ON_READ"


def use_qflow_yamux(host: IHost) -> None:
    """Make every connection `host` upgrades use `QflowYamux`, with go-yamux's window
    updates (unless the operator set `PY_YAMUX_RELEASE_ON_READ` themselves)."""
    os.environ.setdefault(RELEASE_ON_READ_ENV, "0")
    swarm = cast(Swarm, host.get_network())  # what new_host builds; the interface hides it
    swarm.upgrader.muxer_multistream.__class__ = QflowMuxerMultistream
