"""Block store: embedded on-disk IPFS blocks (later: bitswap, Kubo RPC).

Two layers, of which this package is the first:

* `BlockStore` (here): the *local*, synchronous store. `FileBlockStore` appends blocks to
  pack files in `<repo>/blocks` (one write and one fdatasync per batch; every read
  re-hashed against its CID, corrupt copies never returned; block files of older repos
  still read), `MemoryBlockStore` holds them in memory.
  Both check every block on put (bytes hash to the CID, size within the limit), keep
  pins, and garbage-collect what no pin reaches.
* `BlockService` (a later issue, in this package): *async*, wraps one local `BlockStore`
  and one exchange — bitswap over the node's libp2p host, or a Kubo RPC client over
  httpx. `get` tries the local store, then the exchange, verifies what arrives (a block
  from the network is hostile until its bytes hash to the CID asked for) and `put`s it
  locally; `put` stores locally and announces (provides) the block. Disk calls stay sync
  and run through `trio.to_thread.run_sync`: a local put/get is a few syscalls, and one
  sync interface keeps the stores simple to test and reuse (caches, CLI, benchmarks).

Bitswap serves other peers straight from the local `BlockStore` (`has` + `get`), so a
corrupt block is never sent out either. See docs/store.md.
"""

from qflow_node.store.api import BlockStore
from qflow_node.store.errors import (
    BlockNotFoundError,
    BlockTooLargeError,
    BlockUnavailableError,
    CorruptBlockError,
    InvalidBlockError,
    PinnedBlockError,
    StoreError,
    StoreNotFoundError,
)
from qflow_node.store.filestore import STALE_TEMP_SECONDS, FileBlockStore
from qflow_node.store.memory import MemoryBlockStore
from qflow_node.store.model import BlockStat, GcProblem, GcReport, PinMode

__all__ = [
    "STALE_TEMP_SECONDS",
    "BlockNotFoundError",
    "BlockStat",
    "BlockStore",
    "BlockTooLargeError",
    "BlockUnavailableError",
    "CorruptBlockError",
    "FileBlockStore",
    "GcProblem",
    "GcReport",
    "InvalidBlockError",
    "MemoryBlockStore",
    "PinMode",
    "PinnedBlockError",
    "StoreError",
    "StoreNotFoundError",
]
