"""GossipSub with deliberate settings, per-topic validators and drained subscriptions.

py-libp2p's defaults are tuned for something else and lose messages here (see
docs/operator.md, "Gossip settings"): a 120 s heartbeat (meshes form and heal after
minutes), "adaptive gossip" that *raises* the heartbeat to 30-60 s when it judges the
network unhealthy, and spam protection that silently drops everything above 10 messages
per second per forwarder and topic - the forwarder being us, too, when we publish. We set
each of these on purpose.

Every message on a subscribed topic passes the topic's validator (`bytes -> bool`)
before it is delivered or forwarded; a topic cannot be joined without one. Validators
must be pure and fast (they run on the event loop); one that raises rejects.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, cast

import trio
from libp2p.abc import IHost, INetStream
from libp2p.network.stream.exceptions import StreamClosed, StreamReset
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import OutBoundQueueSize, RpcQueue
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.varint import encode_uvarint

from qflow_node.log import get_logger

Validator = Callable[[bytes], bool]
"""Decides whether a message's payload may be delivered and forwarded."""

# Headroom for the protobuf RPC around one maximal payload (topic, ids, signature).
_RPC_OVERHEAD: Final = 64 * 1024
# The router's rate window is 1 s; we pace over a longer one (see Gossip._pace).
_PACE_WINDOW: Final = 1.1
# `Gossip.publish` waits while a receiving peer's outbound queue holds more than this
# (py-libp2p's per-peer queue has OutBoundQueueSize = 32 slots and drops when full).
_QUEUE_HIGH_WATER: Final = OutBoundQueueSize // 2
# The sending loop writes every RPC queued for a peer at once, up to this many bytes
# (one Noise frame carries 65519): same bytes on the wire, fewer yamux/Noise frames.
_WRITE_BATCH: Final = 32 * 1024
# The reading loop takes what the stream has buffered, up to this many bytes per read.
_READ_CHUNK: Final = 64 * 1024


def _log() -> Any:
    # Looked up per use: a logger bound at import keeps the format configured then.
    return get_logger("qflow.net.gossip")


@dataclass(frozen=True, slots=True)
class GossipSettings:
    """GossipSub parameters; the defaults are argued for in docs/operator.md."""

    heartbeat_interval: int = 1  # seconds; py-libp2p's field is an int
    degree: int = 6  # D: mesh peers per topic (go-libp2p default)
    degree_low: int = 4  # D_lo: graft below this
    degree_high: int = 12  # D_hi: prune above this
    # Per forwarder and topic, ourselves included. 0 disables the check.
    max_messages_per_second: float = 2000.0
    max_message_size: int = 1 << 20
    seen_ttl: int = 120  # seconds a message id is remembered (dedup window)
    validation_timeout: float = 2.0
    subscription_buffer: int = 4096
    # IDONTWANT (gossipsub 1.2) only for messages with at least this many payload
    # bytes, as go-libp2p (IDontWantMessageThreshold, 1 KiB). 0 = for every message.
    idontwant_threshold: int = 1024
    # Longest `publish` waits for a peer's outbound queue to drain below half; after
    # that it publishes anyway and whatever py-libp2p drops is counted in `stats`.
    backpressure_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.heartbeat_interval < 1:
            raise ValueError("gossip heartbeat_interval must be at least 1 second")
        if not 1 <= self.degree_low <= self.degree <= self.degree_high:
            raise ValueError(
                "gossip mesh degrees must satisfy 1 <= degree_low <= degree <= degree_high "
                f"(got {self.degree_low}, {self.degree}, {self.degree_high})"
            )
        if self.max_messages_per_second < 0:
            raise ValueError("gossip max_messages_per_second must be >= 0 (0 = unlimited)")
        if self.max_message_size < 1:
            raise ValueError("gossip max_message_size must be positive")
        if self.subscription_buffer < 1:
            raise ValueError("gossip subscription_buffer must be positive")
        if self.idontwant_threshold < 0:
            raise ValueError("gossip idontwant_threshold must be >= 0")
        if self.backpressure_timeout <= 0:
            raise ValueError("gossip backpressure_timeout must be positive")


@dataclass(frozen=True, slots=True)
class GossipMessage:
    """A validated message delivered on a subscribed topic."""

    topic: str
    data: bytes
    origin: str  # peer id of the signer (base58)
    seqno: bytes


@dataclass(slots=True)
class GossipStats:
    """Counters of one `Gossip`, so that nothing is lost silently. Monotonic."""

    published: int = 0  # our own messages handed to the router
    publish_waits: int = 0  # publishes that waited for a peer's outbound queue
    publish_wait_timeouts: int = 0  # ... and gave up after `backpressure_timeout`
    delivered: int = 0  # messages handed to our subscribers' channels
    # RPCs py-libp2p's per-peer outbound queue refused (full), and the pubsub messages
    # (ours or forwarded) inside them. Subscription announcements refused by a full
    # queue are retried by py-libp2p and not counted here.
    outbound_dropped_rpcs: int = 0
    outbound_dropped_messages: int = 0
    subscription_dropped: int = 0  # refused by py-libp2p's 32-slot subscription channel
    buffer_dropped: int = 0  # refused by our `subscription_buffer` (the consumer lags)

    @property
    def dropped(self) -> int:
        """Messages lost at this node, whatever the cause."""
        return self.outbound_dropped_messages + self.subscription_dropped + self.buffer_dropped


class Gossip:
    """Pubsub over one host. Create with `open_gossip`."""

    def __init__(
        self,
        pubsub: QflowPubsub,
        router: GossipSub,
        settings: GossipSettings,
        stats: GossipStats | None = None,
    ) -> None:
        self.pubsub = pubsub
        self.router = router
        self.settings = settings
        self.stats = stats if stats is not None else GossipStats()
        self._published: deque[float] = deque()
        self._stalled: set[ID] = set()  # peers we stopped waiting for (see _wait_for_room)

    @property
    def dropped(self) -> int:
        """Messages our own subscription buffer refused (see `stats` for all drops)."""
        return self.stats.buffer_dropped

    @property
    def running(self) -> bool:
        """Both the pubsub service and the GossipSub router are running."""
        return bool(self.pubsub.manager.is_running and self.router.manager.is_running)

    def set_validator(self, topic: str, validator: Validator) -> None:
        """Install (or replace) the validator every message on `topic` must pass."""
        self.pubsub.set_topic_validator(
            topic, _adapt(topic, validator, self.settings.max_message_size), False
        )

    async def subscribe(
        self, topic: str, validator: Validator
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        """Join `topic`; validated messages arrive on the returned channel.

        Messages go straight into a `subscription_buffer`-sized channel (py-libp2p's
        own subscription queue holds 32 and drops when full - a burst read in one go
        fills it before any consumer runs). If the consumer lags so far that the
        buffer is full, the message is counted in `stats.buffer_dropped` and logged.
        Gossip is lossy either way: callers must not depend on one message arriving.
        """
        self.set_validator(topic, validator)
        send, receive = trio.open_memory_channel[GossipMessage](self.settings.subscription_buffer)
        self.pubsub.sinks[topic] = self._sink(topic, send)
        await self.pubsub.subscribe(topic)
        return receive

    def _sink(
        self, topic: str, send: trio.MemorySendChannel[GossipMessage]
    ) -> Callable[[rpc_pb2.Message], None]:
        stats = self.stats

        def deliver(msg: rpc_pb2.Message) -> None:
            message = GossipMessage(topic, msg.data, ID(msg.from_id).to_base58(), msg.seqno)
            try:
                send.send_nowait(message)
            except trio.WouldBlock:
                stats.buffer_dropped += 1
                _log_drop("gossip.dropped", stats.buffer_dropped, topic=topic)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the consumer went away
            else:
                stats.delivered += 1

        return deliver

    async def publish(self, topic: str, data: bytes) -> None:
        """Sign and publish `data`, waiting rather than letting it be dropped.

        Two kinds of backpressure: under the rate limit (py-libp2p would drop our own
        message above it), and while any peer we send `topic` to has more than half of
        its outbound RPC queue in use (py-libp2p drops when it is full), for at most
        `settings.backpressure_timeout`. Always a checkpoint, so a publishing loop
        lets the sending and delivering tasks run.
        """
        if len(data) > self.settings.max_message_size:
            raise ValueError(
                f"message of {len(data)} bytes exceeds the gossip limit "
                f"of {self.settings.max_message_size}"
            )
        await self._pace()
        if not await self._wait_for_room(topic):
            await trio.lowlevel.checkpoint()
        await self.pubsub.publish(topic, data)
        self.stats.published += 1

    async def _wait_for_room(self, topic: str) -> bool:
        """Wait while a peer's outbound queue is over the high-water mark; True if we
        waited (which was a checkpoint). A peer that does not drain within
        `backpressure_timeout` is not waited for again until its queue is below the
        mark: one stalled peer must not throttle every publish."""
        if not self._congested(topic):
            return False
        self.stats.publish_waits += 1
        drained = getattr(self.pubsub, "drained", None)
        with trio.move_on_after(self.settings.backpressure_timeout) as scope:
            while self._congested(topic):
                if drained is not None:
                    await drained()  # a sending loop took RPCs off a queue
                else:  # a plain Pubsub signals nothing; poll
                    await trio.sleep(0.001)
        if scope.cancelled_caught:
            stalled = self._congested(topic)
            self._stalled.update(stalled)
            self.stats.publish_wait_timeouts += 1
            _log().warning(
                "gossip.backpressure_timeout", topic=topic, peers=[str(p) for p in stalled]
            )
        return True

    def _congested(self, topic: str) -> list[ID]:
        """Peers we send `topic` to whose outbound queue is over the mark."""
        router = self.router
        peers: Iterable[ID] = router.mesh.get(topic) or router.fanout.get(topic) or ()
        queues = self.pubsub.peer_queues
        congested: list[ID] = []
        for peer in (*peers, *router.direct_peers):
            queue = queues.get(peer)
            if queue is None or len(queue) <= _QUEUE_HIGH_WATER:
                self._stalled.discard(peer)
            elif peer not in self._stalled:
                congested.append(peer)
        return congested

    async def _pace(self) -> None:
        limit = self.settings.max_messages_per_second
        if limit <= 0:
            return
        # Receivers count our messages by arrival time; a slightly longer window and
        # one message of headroom keep network jitter from pushing a burst over.
        budget = max(1, int(limit) - 1)
        while True:
            now = time.monotonic()
            while self._published and self._published[0] <= now - _PACE_WINDOW:
                self._published.popleft()
            if len(self._published) < budget:
                self._published.append(now)
                return
            await trio.sleep(self._published[0] + _PACE_WINDOW - now)


def _log_drop(event: str, count: int, **fields: Any) -> None:
    # Warn on the 1st, 2nd, 4th, 8th... drop: visible, but a burst cannot flood the log.
    if count & (count - 1) == 0:
        _log().warning(event, count=count, **fields)


def _adapt(topic: str, validator: Validator, max_size: int) -> Callable[[ID, Any], bool]:
    def check(forwarder: ID, msg: rpc_pb2.Message) -> bool:
        data = msg.data
        if len(data) > max_size:
            accepted = False
        else:
            try:
                accepted = validator(bytes(data)) is True
            except Exception as exc:
                _log().debug("gossip.validator_error", topic=topic, error=repr(exc))
                accepted = False
        if not accepted:
            _log().debug("gossip.rejected", topic=topic, forwarder=forwarder.to_base58())
        return accepted

    return check


class QflowGossipSub(GossipSub):
    """py-libp2p's GossipSub with per-message costs cut and drops counted.

    `publish` is py-libp2p 0.8.1's `GossipSub.publish` with two differences, each
    measured in docs/benchmarks.md:

    - no signed peer record (`senderRecord`) attached to every message RPC: building it
      re-reads the host's addresses and the receiver re-verifies its signature and
      rewrites its address book per message. py-libp2p sends it in the first RPC on a
      stream (hello) and with control messages; go-libp2p never sends or reads it.
      Control messages (IDONTWANT, GRAFT, PRUNE, IHAVE) go without it too
      (`emit_control_message`).
    - IDONTWANT only for messages we forward, and only from `idontwant_threshold`
      payload bytes, like go-libp2p; py-libp2p sends one for every message, our own
      publishes included, each as a separate RPC that takes an outbound-queue slot.

    Drops by a full outbound queue are counted in `stats`.
    """

    def __init__(
        self, *args: Any, stats: GossipStats, idontwant_threshold: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.stats = stats
        self.idontwant_threshold = idontwant_threshold

    def _handle_dropped_rpc(self, peer_id: ID, rpc: rpc_pb2.RPC, reason: str) -> None:
        if reason == "queue_full":
            self.stats.outbound_dropped_rpcs += 1
            self.stats.outbound_dropped_messages += len(rpc.publish)
            _log().debug("gossip.outbound_dropped", peer=str(peer_id), messages=len(rpc.publish))
        super()._handle_dropped_rpc(peer_id, rpc, reason)

    async def emit_control_message(self, control_msg: rpc_pb2.ControlMessage, to_peer: ID) -> None:
        """py-libp2p 0.8.1's, without the signed peer record (see the class docstring)."""
        packet = rpc_pb2.RPC()
        packet.control.CopyFrom(control_msg)
        self.send_rpc(to_peer, packet, priority=True)  # control messages go first

    async def publish(self, msg_forwarder: ID, pubsub_msg: rpc_pb2.Message) -> None:
        """Forward a validated message (ours or a peer's) to the peers that want it."""
        pubsub = self.pubsub
        if pubsub is None:
            return
        if not self._check_spam_protection(msg_forwarder, pubsub_msg):
            _log().debug("gossip.rate_limited", forwarder=str(msg_forwarder))
            return
        if not self._check_equivocation(pubsub_msg):
            return
        self.mcache.put(pubsub_msg)
        msg_id = pubsub.get_message_id(pubsub_msg)
        origin = ID(pubsub_msg.from_id)
        topic_ids = pubsub_msg.topicIDs
        peers = self._get_peers_to_send(
            topic_ids, msg_forwarder=msg_forwarder, origin=origin, msg_id=msg_id
        )
        rpc_msg = rpc_pb2.RPC(publish=[pubsub_msg])  # no senderRecord, see above

        if msg_forwarder != pubsub.my_id and len(pubsub_msg.data) >= self.idontwant_threshold:
            await self._emit_idontwant_for_message(msg_id, topic_ids)
        await self._notify_observers(topic_ids, msg_id)

        scorer = self.scorer
        for peer_id in peers:
            if peer_id not in pubsub.peers:
                continue
            if scorer is not None and not scorer.allow_publish(peer_id, list(topic_ids)):
                continue
            self.send_rpc(peer_id, rpc_msg)

        self._queue_for_pending_peers(pubsub, msg_forwarder, origin, topic_ids, rpc_msg)
        now = time.time()
        for topic in topic_ids:
            self.time_since_last_publish[topic] = int(now)
            self.recent_message_deliveries[topic].append(now)

    def _queue_for_pending_peers(
        self,
        pubsub: Pubsub,
        msg_forwarder: ID,
        origin: ID,
        topic_ids: Iterable[str],
        rpc_msg: rpc_pb2.RPC,
    ) -> None:
        # As py-libp2p: keep the message for connected peers whose protocol or
        # subscription we do not know yet; flushed when it arrives.
        queued: set[ID] = set()
        now = time.time()
        for topic in topic_ids:
            subscribed = pubsub.peer_topics.get(topic, set())
            for peer_id in subscribed:
                if peer_id in (msg_forwarder, origin) or peer_id in queued:
                    continue
                if peer_id not in self.peer_protocol and peer_id not in self.direct_peers:
                    self._prune_pending_messages(peer_id)
                    self._pending_messages[peer_id].append((now, rpc_msg))
                    queued.add(peer_id)
            for peer_id in pubsub.peers:
                if peer_id in (msg_forwarder, origin) or peer_id in queued:
                    continue
                if peer_id in self.direct_peers or peer_id in subscribed:
                    continue
                self._prune_pending_messages(peer_id)
                self._pending_messages[peer_id].append((now, rpc_msg))
                queued.add(peer_id)


class QflowPubsub(Pubsub):
    """py-libp2p's Pubsub with batched writes and reads, a drain signal for
    `Gossip.publish`, and counted subscription drops. Same bytes on the wire."""

    def __init__(self, *args: Any, stats: GossipStats, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats = stats
        # topic -> delivers a validated message to our subscriber (see Gossip.subscribe)
        self.sinks: dict[str, Callable[[rpc_pb2.Message], None]] = {}
        self._drained = trio.Event()

    async def drained(self) -> None:
        """Return once a sending loop has taken RPCs off a peer's outbound queue."""
        await self._drained.wait()

    def _signal_drained(self) -> None:
        self._drained.set()
        self._drained = trio.Event()

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if msg_forwarder == self.my_id and msg.from_id == self.my_id.to_bytes():
            # Our own publish, sealed and signed here a moment ago: py-libp2p would
            # verify both our signatures again and deliver it to our own subscribers,
            # every one of which ignores its own node's envelopes.
            if self._is_msg_seen(msg):
                return
            self._mark_msg_seen(msg)
            await self.router.publish(msg_forwarder, msg)
            return
        await super().push_msg(msg_forwarder, msg)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        for topic in publish_message.topicIDs:
            if topic not in self.topic_ids:
                continue
            sink = self.sinks.get(topic)
            if sink is not None:
                sink(publish_message)
                continue
            try:
                self.subscribed_topics_send[topic].send_nowait(publish_message)
            except trio.WouldBlock:
                self.stats.subscription_dropped += 1
                _log_drop("gossip.subscription_dropped", self.stats.subscription_dropped)

    async def handle_sending_messages(
        self, peer_id: ID, stream: INetStream, queue: RpcQueue
    ) -> None:
        """The per-peer sending loop: every RPC queued so far goes out in one write
        (each still length-prefixed, so the byte stream is what one write per RPC
        would send), which saves a yamux and a Noise frame per RPC under load."""
        try:
            while True:
                rpc = await queue.pop()
                if rpc is None:
                    return  # closed
                frames = [_frame(rpc)]
                size = len(frames[0])
                while len(queue) > 0 and size < _WRITE_BATCH:
                    more = await queue.pop()  # one is queued: returns without waiting
                    if more is None:
                        break
                    frames.append(_frame(more))
                    size += len(frames[-1])
                self._signal_drained()
                try:
                    await stream.write(frames[0] if len(frames) == 1 else b"".join(frames))
                except (StreamClosed, StreamReset):
                    _log().debug("gossip.peer_stream_closed", peer=str(peer_id))
                    self._handle_dead_peer(peer_id)
                    return
        except Exception as exc:
            _log().debug("gossip.sending_loop_failed", peer=str(peer_id), error=repr(exc))
            self._handle_dead_peer(peer_id)

    async def continuously_read_stream(self, stream: INetStream) -> None:
        # py-libp2p reads each RPC's length prefix byte by byte and then its body: two
        # to four stream reads per RPC, each of which may send a yamux window update.
        try:
            await super().continuously_read_stream(cast(INetStream, _BufferedStream(stream)))
        except RuntimeError as exc:
            # py-libp2p hands each RPC to its service nursery; during shutdown that
            # nursery is closed, and an RPC arriving then must not fail the node.
            if "closed to new arrivals" not in str(exc):
                raise
            _log().debug("gossip.rpc_during_shutdown", error=str(exc))


def _frame(rpc: rpc_pb2.RPC) -> bytes:
    body: bytes = rpc.SerializeToString()
    return bytes(encode_uvarint(len(body))) + body


class _BufferedStream:
    """An INetStream whose `read(n)` is served from what one read of the underlying
    stream returned (up to _READ_CHUNK bytes); everything else is the stream's."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def read(self, n: int | None = None) -> bytes:
        if not self._buffer:
            chunk = await self._stream.read(max(n or 0, _READ_CHUNK))
            if not chunk:
                return b""
            self._buffer += chunk
        if n is None or n < 0 or n >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:n])
            del self._buffer[:n]
        return data


def build_router(settings: GossipSettings, stats: GossipStats | None = None) -> QflowGossipSub:
    rate = settings.max_messages_per_second
    return QflowGossipSub(
        # Newest first; 1.3+ are py-libp2p extensions go-libp2p (Kubo) does not speak.
        protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=settings.degree,
        degree_low=settings.degree_low,
        degree_high=settings.degree_high,
        heartbeat_interval=settings.heartbeat_interval,
        # Adaptive gossip would replace our 1 s heartbeat by 30-60 s when "unhealthy".
        adaptive_gossip_enabled=False,
        spam_protection_enabled=rate > 0,
        max_messages_per_topic_per_second=rate if rate > 0 else 10.0,
        stats=stats if stats is not None else GossipStats(),
        idontwant_threshold=settings.idontwant_threshold,
    )


@asynccontextmanager
async def open_gossip(host: IHost, settings: GossipSettings | None = None) -> AsyncIterator[Gossip]:
    """Run pubsub and the GossipSub router on a running host, for the block's duration."""
    settings = settings or GossipSettings()
    stats = GossipStats()
    router = build_router(settings, stats)
    pubsub = QflowPubsub(
        host,
        router,
        strict_signing=True,  # sign ours, drop unsigned or mis-signed messages
        seen_ttl=settings.seen_ttl,
        validation_timeout=settings.validation_timeout,
        max_inbound_rpc_size=settings.max_message_size + _RPC_OVERHEAD,
        stats=stats,
    )
    async with background_trio_service(pubsub), background_trio_service(router):
        await pubsub.wait_until_ready()
        yield Gossip(pubsub, router, settings, stats)
