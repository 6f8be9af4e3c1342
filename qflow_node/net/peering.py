"""Dial the nodes we hear of, so bitswap and GossipSub can reach every node of a subnet.

There is no DHT: bitswap only asks connected peers, and GossipSub only meshes with them.
Membership heartbeats carry each node's listen addresses; for a node we are not
connected to, `hint` queues a dial. Bounded on purpose: a few dials at once, each under
a timeout, a failed peer backed off (doubling) before it is tried again, and no dialling
at all while the node already holds `max_connections` connections (the host's own
connection manager prunes above its watermark anyway). Hints never block the caller:
when the queue is full a hint is dropped, and the next heartbeat brings it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from qflow_node.log import get_logger

_QUEUE: Final = 256


def _log() -> Any:
    return get_logger("qflow.net.peering")


@dataclass(frozen=True, slots=True)
class PeeringSettings:
    max_connections: int = 100  # no dialling at or above this many connections
    concurrent_dials: int = 4
    dial_timeout: float = 10.0
    backoff: float = 5.0  # first wait after a failed dial; doubles per failure
    max_backoff: float = 300.0


class Peering:
    def __init__(
        self,
        host: IHost,
        settings: PeeringSettings | None = None,
        allows: Callable[[ID], bool] = lambda _peer: True,
    ) -> None:
        self.host = host
        self.allows = allows  # a test partition refuses some peers
        self.settings = settings or PeeringSettings()
        self.dials = 0
        self.failures = 0
        self.finished = 0
        self._finished_event = trio.Event()
        self._send, self._receive = trio.open_memory_channel[tuple[ID, list[Multiaddr]]](_QUEUE)
        self._in_flight: set[ID] = set()
        self._retry_at: dict[ID, tuple[float, float]] = {}  # peer -> (when, last backoff)

    def hint(self, peer: str, addrs: Sequence[str]) -> None:
        """We heard of `peer` listening on `addrs`; dial it if we are not connected."""
        if not addrs:
            return
        try:
            peer_id = ID.from_base58(peer)
            parsed = [Multiaddr(addr) for addr in addrs]
        except Exception:  # a verified heartbeat with an address py-multiaddr refuses
            _log().debug("peering.bad_addrs", peer=peer, addrs=list(addrs))
            return
        if peer_id == self.host.get_id() or not self.allows(peer_id) or not self._wanted(peer_id):
            return
        self._in_flight.add(peer_id)
        try:
            self._send.send_nowait((peer_id, parsed))
        except trio.WouldBlock:
            self._in_flight.discard(peer_id)

    def _wanted(self, peer: ID) -> bool:
        connections = self.host.get_network().connections
        if peer in connections or peer in self._in_flight:
            return False
        if len(connections) >= self.settings.max_connections:
            return False
        retry = self._retry_at.get(peer)
        return retry is None or time.monotonic() >= retry[0]

    async def wait_finished(self, count: int) -> None:
        """Until `count` dials have ended (either way)."""
        while self.finished < count:
            await self._finished_event.wait()

    async def run(self) -> None:
        limiter = trio.CapacityLimiter(self.settings.concurrent_dials)
        async with trio.open_nursery() as nursery, self._receive:
            async for peer, addrs in self._receive:
                await limiter.acquire_on_behalf_of(peer)
                nursery.start_soon(self._dial, peer, addrs, limiter)

    async def _dial(self, peer: ID, addrs: list[Multiaddr], limiter: trio.CapacityLimiter) -> None:
        try:
            self.dials += 1
            with trio.fail_after(self.settings.dial_timeout):
                await self.host.connect(PeerInfo(peer, addrs))
            self._retry_at.pop(peer, None)
            _log().debug("peering.dialled", peer=peer.to_base58())
        except Exception as exc:  # unreachable, refused, timed out, bad handshake
            self.failures += 1
            last = self._retry_at.get(peer, (0.0, self.settings.backoff / 2))[1]
            wait = min(last * 2, self.settings.max_backoff)
            self._retry_at[peer] = (time.monotonic() + wait, wait)
            _log().info(
                "peering.dial_failed", peer=peer.to_base58(), retry_in=wait, error=repr(exc)
            )
        finally:
            self._in_flight.discard(peer)
            limiter.release_on_behalf_of(peer)
            self.finished += 1
            self._finished_event.set()
            self._finished_event = trio.Event()
