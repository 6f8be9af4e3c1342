"""The node's libp2p host: our Ed25519 key, TCP, Noise, yamux, identify and ping.

py-libp2p's `new_host` defaults also offer TLS, SECIO, *plaintext* and mplex; we pass
explicit security and muxer options so only Noise and yamux are ever negotiated (the
pair every libp2p implementation, Kubo included, speaks). Identify, identify-push and
ping are the host's default protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from multiaddr import Multiaddr

from qflow_node.identity import SigningKey
from qflow_node.net.yamux import QflowYamux, use_qflow_yamux


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Connection manager bounds (go-libp2p ConnManager semantics)."""

    max_connections: int = 200
    max_connections_per_peer: int = 2
    dial_timeout: float = 10.0

    def to_libp2p(self) -> ConnectionConfig:
        high = self.max_connections
        return ConnectionConfig(
            max_connections=self.max_connections,
            high_watermark=high,
            # Above `high`, py-libp2p prunes towards `low`; below (low+high)/2 its
            # auto-connector dials peers the peer store knows (every 30 s).
            low_watermark=high // 2,
            min_connections=0,
            max_connections_per_peer=self.max_connections_per_peer,
            dial_timeout=self.dial_timeout,
        )


def key_pair(key: SigningKey) -> KeyPair:
    """The libp2p key pair for our node key: same seed, so the same peer id."""
    return create_new_key_pair(key.seed)


def build_host(
    key: SigningKey,
    listen: Sequence[Multiaddr],
    limits: ConnectionLimits | None = None,
) -> IHost:
    """A host for `key`; start it with `async with host.run(listen_addrs=listen)`."""
    pair = key_pair(key)
    noise = NoiseTransport(pair, noise_privkey=create_x25519_key_pair().private_key)
    host = new_host(
        key_pair=pair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): QflowYamux},
        listen_addrs=list(listen),
        connection_config=(limits or ConnectionLimits()).to_libp2p(),
    )
    use_qflow_yamux(host)
    return host


def listening_on(host: IHost, wanted: Sequence[Multiaddr]) -> tuple[list[Multiaddr], list[str]]:
    """(addresses the host serves on, configured addresses that failed to bind).

    `host.run` ignores `Swarm.listen`'s result, so a port already in use leaves a
    host that runs but serves nothing; the boot check asks here instead.
    """
    listeners = getattr(host.get_network(), "listeners", {})
    failed = [str(addr) for addr in wanted if str(addr) not in listeners]
    return list(host.get_addrs()), failed


_UNSPECIFIED: Final = ("/ip4/0.0.0.0/", "/ip6/::/")


def advertised_addrs(host: IHost) -> list[str]:
    """The host's listen addresses as peers should dial them: without `/p2p/<id>`, and
    without wildcard binds (0.0.0.0, ::), which name no reachable interface."""
    found = []
    for addr in host.get_addrs():
        text = str(addr).split("/p2p/", 1)[0]
        if not text.startswith(_UNSPECIFIED):
            found.append(text)
    return found
