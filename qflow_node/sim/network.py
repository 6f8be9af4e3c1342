"""The simulated network: gossip topics, request/response streams and block exchange
between virtual nodes, over links with seeded latency, loss, duplication and partitions.

Every message is a callback on one virtual-time queue (`SimNet.at`), run by `SimNet.run`
when the trio clock (a `MockClock`, autojumping) reaches it. Three faces per node, each
the same shape as the real component it stands in for, so the node's services cannot
tell the difference:

- `SimGossip` (`net.gossip.Gossip`): `subscribe(topic, validator)` and `publish`; every
  delivered message passes the receiving node's validator first, as in GossipSub, and
  the publisher gets its own messages too (py-libp2p delivers local publishes).
- `SimDirect` (`net.reqresp.Direct`): `serve`, `request`, `open_channel`; streams are
  reliable (no loss, no duplicates) but cut by partitions (a timeout) and by a crashed
  peer (a transport error, as a reset connection is).
- `SimExchange` (`store.service.Exchange`, bitswap): wanted blocks come from the stores
  of reachable live nodes, nearest first, one round trip each; what nobody has is
  waited for until `within`, as bitswap does.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

import trio

from qflow_node.codec import CID
from qflow_node.net.gossip import GossipMessage, Validator
from qflow_node.net.reqresp import Handler, Limits, RequestError
from qflow_node.sim.trace import Trace
from qflow_node.store.api import BlockStore

MAX_MESSAGE = 1 << 20  # gossip message size, as GossipSettings.max_message_size
SUBSCRIPTION_BUFFER = 4096  # as GossipSettings.subscription_buffer


@dataclass(frozen=True, slots=True)
class LinkModel:
    """How messages travel: latency = per-link base + a lognormal tail; `loss` and `dup`
    are per gossip message and receiver; `slow_extra_s` is added to every message to or
    from a slow node."""

    base_ms: tuple[float, float] = (0.2, 3.0)
    tail_median_ms: float = 1.0
    tail_sigma: float = 1.0
    loss: float = 0.0
    dup: float = 0.0


@dataclass
class Endpoint:
    """One node as the network sees it: one incarnation (a restart makes a new one)."""

    peer: str
    incarnation: int
    store: BlockStore
    # Requests are served by tasks the node starts itself (`SimNode` runs the loop), so
    # they run in its context: its clock, its log binding.
    jobs: trio.MemorySendChannel[Callable[[], Awaitable[None]]] | None = None
    alive: bool = True
    slow_s: float = 0.0  # extra latency of every message to or from it
    topics: dict[str, tuple[Validator, trio.MemorySendChannel[GossipMessage]]] = field(
        default_factory=dict
    )
    handlers: dict[str, tuple[Handler, Limits]] = field(default_factory=dict)


@dataclass(slots=True)
class NetStats:
    published: int = 0
    delivered: int = 0
    lost: int = 0  # dropped by the link (loss, partition, a dead receiver)
    duplicated: int = 0
    refused: int = 0  # the receiver's validator said no
    forged_refused: int = 0
    buffer_dropped: int = 0
    requests: int = 0
    request_failures: int = 0
    fetched_blocks: int = 0


class SimNet:
    def __init__(self, rng: random.Random, links: LinkModel, trace: Trace) -> None:
        self.rng = rng
        self.links = links
        self.trace = trace
        self.stats = NetStats()
        self.endpoints: dict[str, Endpoint] = {}
        self.groups: dict[str, int] = {}  # partition: peer -> group (empty: one network)
        self.forged: set[bytes] = set()  # payloads the fault injector tampered with
        self.on_forged_accepted: Callable[[str, str], None] | None = None
        self.on_publish: Callable[[tuple[str, bytes, str]], None] | None = None
        self._base: dict[tuple[str, str], float] = {}
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._wake = trio.Event()
        self._seqno = itertools.count(1)

    # -- topology -------------------------------------------------------------------------

    def join(self, endpoint: Endpoint) -> None:
        self.endpoints[endpoint.peer] = endpoint

    def reachable(self, a: str, b: str) -> bool:
        if a == b:
            return True
        end = self.endpoints.get(b)
        if end is None or not end.alive:
            return False
        return not self.groups or self.groups.get(a, -1) == self.groups.get(b, -1)

    def latency(self, a: str, b: str) -> float:
        """Seconds for one message from `a` to `b` (sampled)."""
        if a == b:
            return 0.0
        base = self._base.get((a, b))
        if base is None:
            low, high = self.links.base_ms
            base = self._base[(a, b)] = self.rng.uniform(low, high) / 1000
        tail = self.rng.lognormvariate(0.0, self.links.tail_sigma) * self.links.tail_median_ms
        slow = self.endpoints[a].slow_s + self.endpoints[b].slow_s
        return base + tail / 1000 + slow

    # -- the event queue ------------------------------------------------------------------

    def at(self, delay: float, action: Callable[[], None]) -> None:
        when = trio.current_time() + max(0.0, delay)
        heapq.heappush(self._queue, (when, next(self._order), action))
        if self._queue[0][2] is action:
            self._wake.set()

    async def run(self) -> None:
        while True:
            if not self._queue:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            when = self._queue[0][0]
            if when > trio.current_time():
                with trio.move_on_at(when):
                    await self._wake.wait()
                self._wake = trio.Event()
                continue
            _, _, action = heapq.heappop(self._queue)
            action()
            await trio.lowlevel.checkpoint()

    # -- gossip ---------------------------------------------------------------------------

    def publish(self, origin: str, topic: str, data: bytes) -> None:
        self.stats.published += 1
        if self.on_publish is not None:
            self.on_publish((topic, data, origin))
        seqno = next(self._seqno).to_bytes(8, "big")
        message = GossipMessage(topic, data, origin, seqno)
        for peer, end in self.endpoints.items():
            if topic not in end.topics or not end.alive:
                continue
            if peer == origin:
                self.at(0.0, self._deliverer(end, message))
                continue
            if not self.reachable(origin, peer) or self.rng.random() < self.links.loss:
                self.stats.lost += 1
                continue
            self.at(self.latency(origin, peer), self._deliverer(end, message))
            if self.rng.random() < self.links.dup:
                self.stats.duplicated += 1
                self.at(self.latency(origin, peer), self._deliverer(end, message))

    def inject(self, origin: str, topic: str, data: bytes, delay: float) -> None:
        """A message from outside the protocol (forged, tampered or replayed) to every
        subscriber of `topic`."""
        message = GossipMessage(topic, data, origin, next(self._seqno).to_bytes(8, "big"))
        for end in self.endpoints.values():
            if topic in end.topics and end.alive:
                self.at(delay + self.rng.uniform(0, 0.01), self._deliverer(end, message))

    def _deliverer(self, end: Endpoint, message: GossipMessage) -> Callable[[], None]:
        incarnation = end.incarnation

        def deliver() -> None:
            current = self.endpoints.get(end.peer)
            if current is not end or not end.alive or end.incarnation != incarnation:
                self.stats.lost += 1
                return
            if message.origin in self.endpoints and not self.reachable(message.origin, end.peer):
                self.stats.lost += 1  # partitioned while in flight
                return
            subscribed = end.topics.get(message.topic)
            if subscribed is None:
                return
            validator, send = subscribed
            forged = message.data in self.forged
            if not validator(message.data):
                self.stats.refused += 1
                self.stats.forged_refused += forged
                return
            if forged and self.on_forged_accepted is not None:
                self.on_forged_accepted(end.peer, message.topic)
            try:
                send.send_nowait(message)
            except trio.WouldBlock:
                self.stats.buffer_dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            else:
                self.stats.delivered += 1

        return deliver

    # -- requests -------------------------------------------------------------------------

    async def request(
        self, origin: str, peer: str, protocol: str, payload: bytes, limits: Limits
    ) -> bytes:
        self.stats.requests += 1
        if len(payload) > limits.max_request_size:
            raise RequestError("too_large", f"{protocol} to {peer}: request too large")
        outcome: list[bytes | RequestError] = []
        done = trio.Event()

        def settle(result: bytes | RequestError) -> None:
            if not done.is_set():
                outcome.append(result)
                done.set()

        def arrive() -> None:
            end = self.endpoints.get(peer)
            if end is None or not end.alive or end.jobs is None:
                back = self.latency(peer, origin) if peer in self.endpoints else 0.0
                failed = RequestError("transport", f"{protocol} to {peer}: connection reset")
                self.at(back, lambda: settle(failed))
                return
            served = end.handlers.get(protocol)
            if served is None:
                failed = RequestError("unsupported", f"{protocol} to {peer}: not spoken")
                self.at(self.latency(peer, origin), lambda: settle(failed))
                return
            end.jobs.send_nowait(partial(self._serve, end, origin, served, payload, settle))

        if self.reachable(origin, peer) or peer not in self.endpoints:
            self.at(self.latency(origin, peer) if peer in self.endpoints else 0.0, arrive)
        with trio.move_on_after(limits.timeout):
            await done.wait()
        if not outcome:
            self.stats.request_failures += 1
            raise RequestError("timeout", f"{protocol} to {peer}: no answer in {limits.timeout} s")
        result = outcome[0]
        if isinstance(result, RequestError):
            self.stats.request_failures += 1
            raise result
        return result

    async def _serve(
        self,
        end: Endpoint,
        origin: str,
        served: tuple[Handler, Limits],
        payload: bytes,
        settle: Callable[[bytes | RequestError], None],
    ) -> None:
        handler, limits = served
        incarnation = end.incarnation
        answer = await handler(origin, payload)
        if not end.alive or end.incarnation != incarnation:
            return
        if not self.reachable(end.peer, origin):
            return  # the answer is cut off: the asker times out
        if len(answer) > limits.max_response_size:
            failed = RequestError("too_large", f"answer from {end.peer} too large")
            self.at(self.latency(end.peer, origin), lambda: settle(failed))
            return
        self.at(self.latency(end.peer, origin), lambda: settle(answer))

    # -- blocks ---------------------------------------------------------------------------

    async def fetch(
        self, origin: str, cids: Sequence[CID], within: float | None
    ) -> dict[CID, bytes]:
        started = trio.current_time()
        wanted = list(dict.fromkeys(cids))
        found: dict[CID, bytes] = {}
        sources = [
            (self.latency(origin, peer) + self.latency(peer, origin), peer)
            for peer in self.endpoints
            if peer != origin and self.reachable(origin, peer)
        ]
        for rtt, peer in sorted(sources):
            await trio.sleep_until(started + rtt)
            end = self.endpoints.get(peer)
            if end is None or not end.alive or not self.reachable(origin, peer):
                continue
            for cid in wanted:
                if cid not in found:
                    data = end.store.get(cid) if end.store.has(cid) else None
                    if data is not None:
                        found[cid] = data
            if len(found) == len(wanted):
                break
        if len(found) < len(wanted):
            # Bitswap keeps wanting until its deadline; nobody reachable has the rest.
            await trio.sleep_until(started + (within if within is not None else 30.0))
        self.stats.fetched_blocks += len(found)
        return found


class SimGossip:
    """One node's pubsub (the `Gossip` API its services use)."""

    def __init__(self, net: SimNet, end: Endpoint) -> None:
        self.net = net
        self.end = end

    async def subscribe(
        self, topic: str, validator: Validator
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        send, receive = trio.open_memory_channel[GossipMessage](SUBSCRIPTION_BUFFER)
        self.end.topics[topic] = (validator, send)
        await trio.lowlevel.checkpoint()
        return receive

    async def publish(self, topic: str, data: bytes) -> None:
        if len(data) > MAX_MESSAGE:
            raise ValueError(f"message of {len(data)} bytes exceeds the gossip limit")
        await trio.lowlevel.checkpoint()
        if self.end.alive:
            self.net.publish(self.end.peer, topic, data)


class SimChannel:
    """`net.channel.Channel` over the simulated network: a request is a request."""

    def __init__(self, direct: SimDirect, protocol: str, limits: Limits) -> None:
        self.direct = direct
        self.protocol = protocol
        self.limits = limits

    async def run(self) -> None:
        await trio.sleep_forever()

    async def request(self, peer: str, body: bytes) -> bytes:
        return await self.direct.request(peer, self.protocol, body, self.limits)


class SimDirect:
    """One node's request/response protocols (the `Direct` API its services use)."""

    def __init__(self, net: SimNet, end: Endpoint) -> None:
        self.net = net
        self.end = end

    def serve(self, protocol: str, handler: Handler, limits: Limits | None = None) -> None:
        self.end.handlers[protocol] = (handler, limits or Limits())

    def stop_serving(self, protocol: str) -> None:
        self.end.handlers.pop(protocol, None)

    def open_channel(self, protocol: str, handler: Handler, limits: Limits) -> SimChannel:
        self.serve(protocol, handler, limits)
        return SimChannel(self, protocol, limits)

    async def request(
        self, peer: str, protocol: str, payload: bytes, limits: Limits | None = None
    ) -> bytes:
        return await self.net.request(self.end.peer, peer, protocol, payload, limits or Limits())


class SimExchange:
    """One node's bitswap (the `Exchange` its block service uses)."""

    def __init__(self, net: SimNet, end: Endpoint) -> None:
        self.net = net
        self.end = end

    async def fetch_many(
        self,
        cids: Iterable[CID],
        peers: Sequence[str] | None = None,
        within: float | None = None,
    ) -> dict[CID, bytes]:
        return await self.net.fetch(self.end.peer, list(cids), within)

    def block_added(self, cid: CID, data: bytes) -> None:
        pass  # wants are answered from the stores directly
