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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import trio
from libp2p.abc import IHost, ISubscriptionAPI
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from qflow_node.log import get_logger

Validator = Callable[[bytes], bool]
"""Decides whether a message's payload may be delivered and forwarded."""

# Headroom for the protobuf RPC around one maximal payload (topic, ids, signature).
_RPC_OVERHEAD: Final = 64 * 1024
# The router's rate window is 1 s; we pace over a longer one (see Gossip._pace).
_PACE_WINDOW: Final = 1.1


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
    max_messages_per_second: float = 500.0
    max_message_size: int = 1 << 20
    seen_ttl: int = 120  # seconds a message id is remembered (dedup window)
    validation_timeout: float = 2.0
    subscription_buffer: int = 4096

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


@dataclass(frozen=True, slots=True)
class GossipMessage:
    """A validated message delivered on a subscribed topic."""

    topic: str
    data: bytes
    origin: str  # peer id of the signer (base58)
    seqno: bytes


class Gossip:
    """Pubsub over one host. Create with `open_gossip`."""

    def __init__(
        self,
        pubsub: Pubsub,
        router: GossipSub,
        settings: GossipSettings,
        nursery: trio.Nursery,
    ) -> None:
        self.pubsub = pubsub
        self.router = router
        self.settings = settings
        self._nursery = nursery
        self._published: deque[float] = deque()
        self.dropped = 0

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

        A drain task moves messages out of py-libp2p's small subscription queue (which
        drops when full) into a larger buffer at once; if that overflows too, the
        message is counted in `dropped` and logged. Gossip is lossy either way: callers
        must not depend on one message arriving.
        """
        self.set_validator(topic, validator)
        subscription = await self.pubsub.subscribe(topic)
        send, receive = trio.open_memory_channel[GossipMessage](self.settings.subscription_buffer)
        self._nursery.start_soon(self._drain, topic, subscription, send)
        return receive

    async def publish(self, topic: str, data: bytes) -> None:
        """Sign and publish `data`, waiting rather than exceeding the rate limit.

        py-libp2p would drop our own message silently above the limit; pacing here
        turns that into backpressure.
        """
        if len(data) > self.settings.max_message_size:
            raise ValueError(
                f"message of {len(data)} bytes exceeds the gossip limit "
                f"of {self.settings.max_message_size}"
            )
        await self._pace()
        await self.pubsub.publish(topic, data)

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

    async def _drain(
        self,
        topic: str,
        subscription: ISubscriptionAPI,
        send: trio.MemorySendChannel[GossipMessage],
    ) -> None:
        async with send:
            while True:
                try:
                    msg = await subscription.get()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
                message = GossipMessage(topic, msg.data, ID(msg.from_id).to_base58(), msg.seqno)
                try:
                    send.send_nowait(message)
                except trio.WouldBlock:
                    self.dropped += 1
                    _log().warning("gossip.dropped", topic=topic, dropped=self.dropped)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the consumer went away


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


def build_router(settings: GossipSettings) -> GossipSub:
    rate = settings.max_messages_per_second
    return GossipSub(
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
    )


@asynccontextmanager
async def open_gossip(host: IHost, settings: GossipSettings | None = None) -> AsyncIterator[Gossip]:
    """Run pubsub and the GossipSub router on a running host, for the block's duration."""
    settings = settings or GossipSettings()
    router = build_router(settings)
    pubsub = Pubsub(
        host,
        router,
        strict_signing=True,  # sign ours, drop unsigned or mis-signed messages
        seen_ttl=settings.seen_ttl,
        validation_timeout=settings.validation_timeout,
        max_inbound_rpc_size=settings.max_message_size + _RPC_OVERHEAD,
    )
    async with background_trio_service(pubsub), background_trio_service(router):
        await pubsub.wait_until_ready()
        async with trio.open_nursery() as nursery:
            try:
                yield Gossip(pubsub, router, settings, nursery)
            finally:
                nursery.cancel_scope.cancel()
