"""Bitswap 1.2 on the node's libp2p host (serving Kubo and Qflow peers alike)."""

from qflow_node.net.bitswap.exchange import (
    Bitswap,
    BlockSource,
    Limits,
    Stats,
    open_bitswap,
)
from qflow_node.net.bitswap.wire import MAX_MESSAGE_SIZE, PROTOCOL_V120, PROTOCOLS

__all__ = [
    "MAX_MESSAGE_SIZE",
    "PROTOCOLS",
    "PROTOCOL_V120",
    "Bitswap",
    "BlockSource",
    "Limits",
    "Stats",
    "open_bitswap",
]
