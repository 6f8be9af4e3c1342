"""Connection events as log lines: `peer.connected` / `peer.disconnected` with the peer id.

Operators and the multi-process tests follow the node's connectivity through these.
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from multiaddr import Multiaddr

from qflow_node.log import get_logger


def _log() -> Any:
    # Looked up per use: a logger bound at import keeps the format configured then.
    return get_logger("qflow.net")


class Notifee(INotifee):
    """A network notifee that ignores every event; subclasses override what they need."""

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None


class ConnectionLog(Notifee):
    """A notifee that logs each connection opened and closed. Never raises."""

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        _log().info("peer.connected", peer=_peer(conn), addr=_remote(conn))

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        _log().info("peer.disconnected", peer=_peer(conn))


def _peer(conn: INetConn) -> str:
    try:
        return str(conn.muxed_conn.peer_id.to_base58())
    except Exception:  # a half-torn-down connection: log what we can
        return "?"


def _remote(conn: INetConn) -> str | None:
    try:
        addrs = conn.get_transport_addresses()
    except Exception:
        return None
    return str(addrs[0]) if addrs else None
