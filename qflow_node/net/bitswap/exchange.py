"""Bitswap on the node's libp2p host: serve our blocks, fetch other peers' blocks.

Stream discipline (the fix for Kubo, see LIBRARY-FACTS): a peer's inbound streams are
only ever *read*; everything we send - answers and wants alike - goes out on a stream
*we* open to that peer, one long-lived stream per peer, reopened once if it broke.
go-bitswap works exactly this way and never reads what arrives on a stream it opened,
so replying on the requester's stream (as py-libp2p's bitswap does) leaves Kubo waiting
forever.

Serving: a want-block is answered with the block if the local source has it; a
want-have with HAVE; a miss with DONT_HAVE when asked for, and the want is remembered
(bounded) so a block that arrives later is sent then (`block_added`). Replies are
batched into messages of at most `Limits.max_reply_bytes`.

Fetching: `fetch_many` sends one wantlist (want-block, send-dont-have) for all the CIDs
to each candidate peer, then waits for the blocks. A block counts only if it is named
by what its bytes hash to and someone here wants it; anything else is dropped and
counted. A CID fails early when every asked peer said DONT_HAVE, otherwise at the
deadline. When the blocks arrive, the other peers get a cancel. Asking every peer at
once can bring duplicates when several hold a block; that costs bandwidth, not time,
and in a subnet of a few nodes it is the fastest way to find the holder.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import IOException, MessageTooLarge
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_uvarint, read_varint_prefixed_bytes_limited

from qflow_node.codec import CID
from qflow_node.log import get_logger
from qflow_node.net.bitswap.wire import (
    MAX_MESSAGE_SIZE,
    PROTOCOLS,
    Incoming,
    Outgoing,
    WireError,
    parse,
    prefix_for,
)
from qflow_node.store import BlockUnavailableError

BlockSource = Callable[[CID], bytes | None]
"""Our verified copy of a block, or None. Called on the event loop: keep it cheap."""

_PROTOCOL_IDS: Final = [TProtocol(p) for p in PROTOCOLS]


def _log() -> Any:
    return get_logger("qflow.net.bitswap")


@dataclass(frozen=True, slots=True)
class Limits:
    fetch_timeout: float = 30.0  # per fetch_many call
    max_reply_bytes: int = 2 << 20  # block bytes per outgoing message
    max_wants_per_peer: int = 4096  # remembered misses per peer (the rest are dropped)
    send_timeout: float = 10.0  # opening a stream and writing one message
    outbox_size: int = 256  # messages queued per peer before senders wait


@dataclass(slots=True)
class Stats:
    messages_in: int = 0
    messages_out: int = 0
    blocks_sent: int = 0
    bytes_sent: int = 0
    blocks_received: int = 0
    bytes_received: int = 0
    duplicate_blocks: int = 0
    unwanted_blocks: int = 0
    malformed_messages: int = 0
    unsupported_entries: int = 0
    send_failures: int = 0


@dataclass(slots=True)
class _Pending:
    event: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    asked: set[ID] = field(default_factory=set)
    dont_have: set[ID] = field(default_factory=set)
    waiters: int = 0


class _Outbox:
    """Messages for one peer, written in order on one stream we opened."""

    def __init__(self, bitswap: Bitswap, peer: ID) -> None:
        self.peer = peer
        self._bitswap = bitswap
        self.send, self._receive = trio.open_memory_channel[bytes](bitswap.limits.outbox_size)
        self._stream: INetStream | None = None

    async def run(self) -> None:
        try:
            async with self._receive:
                async for message in self._receive:
                    await self._deliver(message)
        finally:
            if self._stream is not None:
                with trio.move_on_after(1) as scope:
                    scope.shield = True
                    await self._stream.reset()
            self._bitswap._outboxes.pop(self.peer, None)

    async def _deliver(self, message: bytes) -> None:
        frame = encode_uvarint(len(message)) + message
        for attempt in range(2):  # a stream the peer closed is reopened once
            try:
                with trio.fail_after(self._bitswap.limits.send_timeout):
                    if self._stream is None:
                        self._stream = await self._bitswap.host.new_stream(self.peer, _PROTOCOL_IDS)
                    await self._stream.write(frame)
            except Exception as exc:  # any failure to open or write: one retry, then give up
                self._stream = None
                if attempt == 1:
                    self._bitswap.stats.send_failures += 1
                    self._bitswap._send_failed(self.peer)
                    _log().debug("bitswap.send_failed", peer=self.peer.to_base58(), error=repr(exc))
            else:
                self._bitswap.stats.messages_out += 1
                return


class Bitswap:
    """Bitswap 1.2 on one host. Create with `open_bitswap`."""

    def __init__(
        self, host: IHost, source: BlockSource, nursery: trio.Nursery, limits: Limits
    ) -> None:
        self.host = host
        self.limits = limits
        self.stats = Stats()
        self._source = source
        self._nursery = nursery
        self._outboxes: dict[ID, _Outbox] = {}
        self._pending: dict[CID, _Pending] = {}
        # Misses we promised to answer: CID -> {peer: CID bytes as the peer asked}.
        self._their_wants: dict[CID, dict[ID, bytes]] = defaultdict(dict)
        self._their_want_count: dict[ID, int] = defaultdict(int)
        self._activity = trio.Event()  # set (and replaced) after each inbound message

    async def wait_for(self, predicate: Callable[[Stats], bool]) -> None:
        """Until `predicate(stats)` holds; re-checked after every inbound message."""
        while not predicate(self.stats):
            await self._activity.wait()

    def _processed(self) -> None:
        self._activity.set()
        self._activity = trio.Event()

    @property
    def protocols(self) -> tuple[str, ...]:
        return PROTOCOLS

    # -- inbound ----------------------------------------------------------------------

    async def _handle_stream(self, stream: INetStream) -> None:
        try:
            await self._read_messages(stream)
        finally:
            self._processed()

    async def _read_messages(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            while True:
                try:
                    data = await read_varint_prefixed_bytes_limited(stream, MAX_MESSAGE_SIZE)
                except (MessageTooLarge, ParseError) as exc:  # hostile length prefix
                    self.stats.malformed_messages += 1
                    _log().info("bitswap.rejected", peer=peer.to_base58(), reason=repr(exc))
                    await stream.reset()
                    return
                except IOException:
                    return  # the peer closed or reset its stream: normal end
                self.stats.messages_in += 1
                try:
                    incoming = parse(data)
                except WireError as exc:
                    self.stats.malformed_messages += 1
                    _log().info("bitswap.rejected", peer=peer.to_base58(), reason=str(exc))
                    await stream.reset()
                    return
                self._on_message(peer, incoming)
                self._processed()
        except IOException:
            return

    def _on_message(self, peer: ID, incoming: Incoming) -> None:
        self.stats.unsupported_entries += incoming.unsupported
        for cid, data in incoming.blocks:
            self._on_block(cid, data)
        for cid in incoming.dont_haves:
            self._on_dont_have(peer, cid)
        if incoming.wants or incoming.full_wantlist:
            self._serve(peer, incoming)

    # -- serving ----------------------------------------------------------------------

    def _serve(self, peer: ID, incoming: Incoming) -> None:
        if incoming.full_wantlist:  # a full list replaces what we remembered for it
            self._forget_peer(peer)
        reply = Outgoing()
        for want in incoming.wants:
            if want.cancel:
                self._forget_want(peer, want.cid)
                continue
            data = self._source(want.cid)
            if data is None:
                if want.send_dont_have:
                    reply.presences.append((want.asked_as, False))
                self._remember_want(peer, want.cid, want.asked_as)
            elif want.block:
                reply.blocks.append((prefix_for(want.asked_as), data))
                if reply.size >= self.limits.max_reply_bytes:
                    self._send(peer, reply, blocks=True)
                    reply = Outgoing()
            else:
                reply.presences.append((want.asked_as, True))
        self._send(peer, reply, blocks=True)

    def _remember_want(self, peer: ID, cid: CID, asked_as: bytes) -> None:
        if peer in self._their_wants.get(cid, {}):
            return
        if self._their_want_count[peer] >= self.limits.max_wants_per_peer:
            return
        self._their_wants[cid][peer] = asked_as
        self._their_want_count[peer] += 1

    def _forget_want(self, peer: ID, cid: CID) -> None:
        peers = self._their_wants.get(cid)
        if peers is not None and peers.pop(peer, None) is not None:
            self._their_want_count[peer] -= 1
            if not peers:
                del self._their_wants[cid]

    def _forget_peer(self, peer: ID) -> None:
        for cid in [c for c, peers in self._their_wants.items() if peer in peers]:
            self._forget_want(peer, cid)
        self._their_want_count.pop(peer, None)

    def block_added(self, cid: CID, data: bytes) -> None:
        """A block just stored locally: send it to peers that asked for it earlier."""
        waiting = self._their_wants.pop(cid, None)
        if not waiting:
            return
        for peer, asked_as in waiting.items():
            self._their_want_count[peer] -= 1
            self._send(peer, Outgoing(blocks=[(prefix_for(asked_as), data)]), blocks=True)

    # -- fetching ---------------------------------------------------------------------

    def connected_peers(self) -> list[ID]:
        return list(self.host.get_network().connections)

    async def fetch_many(
        self,
        cids: Iterable[CID],
        peers: Sequence[str] | None = None,
        within: float | None = None,
    ) -> dict[CID, bytes]:
        """Fetch blocks from peers (default: every connected peer) within `within`
        seconds (default `Limits.fetch_timeout`); BlockUnavailableError names those that did
        not come and why. Returned bytes hash to their CIDs."""
        wanted = list(dict.fromkeys(cids))
        candidates = (
            [ID.from_base58(p) for p in peers] if peers is not None else self.connected_peers()
        )
        if not wanted:
            return {}
        if not candidates:
            raise BlockUnavailableError(dict.fromkeys(wanted, "no_peers"))
        entries = [self._pending.setdefault(cid, _Pending()) for cid in wanted]
        for pending in entries:
            pending.waiters += 1
        try:
            for peer in candidates:
                ask = [cid for cid, p in zip(wanted, entries, strict=True) if peer not in p.asked]
                for cid in ask:
                    self._pending[cid].asked.add(peer)
                if ask:
                    self._send(peer, Outgoing(wants=[(c.cid_bytes, True, False) for c in ask]))
            with trio.move_on_after(within if within is not None else self.limits.fetch_timeout):
                for pending in entries:
                    await pending.event.wait()
            found: dict[CID, bytes] = {}
            missing: dict[CID, str] = {}
            for cid, pending in zip(wanted, entries, strict=True):
                if pending.data is not None:
                    found[cid] = pending.data
                else:
                    missing[cid] = "dont_have" if pending.event.is_set() else "timeout"
            if missing:
                raise BlockUnavailableError(missing)
            return found
        finally:
            for cid, pending in zip(wanted, entries, strict=True):
                pending.waiters -= 1
                if pending.waiters == 0 and self._pending.get(cid) is pending:
                    del self._pending[cid]
                    self._cancel(cid, pending)

    def _cancel(self, cid: CID, pending: _Pending) -> None:
        # Peers still holding our want would send the block later for nothing.
        for peer in pending.asked - pending.dont_have:
            self._send(peer, Outgoing(wants=[(cid.cid_bytes, True, True)]))

    def _on_block(self, cid: CID, data: bytes) -> None:
        pending = self._pending.get(cid)
        if pending is None:
            self.stats.unwanted_blocks += 1
            return
        if pending.data is not None:
            self.stats.duplicate_blocks += 1
            return
        self.stats.blocks_received += 1
        self.stats.bytes_received += len(data)
        pending.data = data
        pending.event.set()

    def _on_dont_have(self, peer: ID, cid: CID) -> None:
        pending = self._pending.get(cid)
        if pending is None or peer not in pending.asked:
            return
        pending.dont_have.add(peer)
        if pending.dont_have >= pending.asked and pending.data is None:
            pending.event.set()  # nobody we asked has it: fail now, not at the deadline

    def _send_failed(self, peer: ID) -> None:
        # A peer we cannot reach will never answer: count it as a DONT_HAVE for each
        # want, so fetches fail fast instead of waiting out their deadline.
        for cid, pending in list(self._pending.items()):
            if peer in pending.asked:
                self._on_dont_have(peer, cid)

    # -- outbound ---------------------------------------------------------------------

    def _send(self, peer: ID, message: Outgoing, *, blocks: bool = False) -> None:
        if not message:
            return
        if blocks:
            self.stats.blocks_sent += len(message.blocks)
            self.stats.bytes_sent += sum(len(d) for _, d in message.blocks)
        outbox = self._outboxes.get(peer)
        if outbox is None:
            outbox = self._outboxes[peer] = _Outbox(self, peer)
            self._nursery.start_soon(outbox.run)
        try:
            outbox.send.send_nowait(message.encode())
        except trio.WouldBlock:
            # A peer that does not read is not worth buffering for without bound.
            self.stats.send_failures += 1
            self._send_failed(peer)
            _log().info("bitswap.outbox_full", peer=peer.to_base58())


@asynccontextmanager
async def open_bitswap(
    host: IHost, source: BlockSource, limits: Limits | None = None
) -> AsyncIterator[Bitswap]:
    """Serve and fetch over bitswap on a running host for the block's duration."""
    async with trio.open_nursery() as nursery:
        bitswap = Bitswap(host, source, nursery, limits or Limits())
        for protocol in _PROTOCOL_IDS:
            host.set_stream_handler(protocol, bitswap._handle_stream)
        try:
            yield bitswap
        finally:
            for protocol in _PROTOCOL_IDS:
                host.remove_stream_handler(protocol)
            nursery.cancel_scope.cancel()
