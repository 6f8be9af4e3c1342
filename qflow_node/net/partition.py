"""A test-only network partition: refuse every connection with chosen peers.

For the partition chaos scenario (chaos/partition.py), a node can be told - through its
control API, and only when `[debug] partition_api = true` - to cut itself off from some
peers: existing connections to them are closed, new ones (either direction) are closed
as soon as they open, and bootstrap and peering do not dial them. Gossip, bitswap and
direct requests all ride on connections, so nothing crosses. Unblocking lets bootstrap
and peering reconnect on their own schedules (the heal).
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.abc import IHost, INetConn, INetwork
from libp2p.peer.id import ID

from qflow_node.log import get_logger
from qflow_node.net.events import Notifee


def _log() -> Any:
    return get_logger("qflow.net.partition")


class Partition(Notifee):
    """The set of peers this node refuses; register with the host's network."""

    def __init__(self, host: IHost, nursery: trio.Nursery) -> None:
        self.host = host
        self.blocked: frozenset[ID] = frozenset()
        self._nursery = nursery
        host.get_network().register_notifee(self)

    def allows(self, peer: ID) -> bool:
        return peer not in self.blocked

    async def block(self, peers: frozenset[ID]) -> None:
        """Refuse exactly `peers` from now on (an empty set heals)."""
        self.blocked = peers
        _log().warning("partition.set", blocked=sorted(p.to_base58() for p in peers))
        for peer in peers:
            if peer in self.host.get_network().connections:
                await self.host.disconnect(peer)

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if peer in self.blocked:
            # Closed from a task: the network is still inside its own bookkeeping here.
            self._nursery.start_soon(self.host.disconnect, peer)
