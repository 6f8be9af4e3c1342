"""The local block store interface, shared by the on-disk and in-memory stores.

Synchronous on purpose: a local put/get is a few syscalls, and the trio runtime calls it
through `trio.to_thread.run_sync` when it must not block the event loop. The networked
layer (an async `BlockService` wrapping a `BlockStore` plus an exchange such as bitswap
or a Kubo RPC client) is a separate, later component; see the package docstring.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from qflow_node.codec import CID, Block
from qflow_node.store.model import BlockStat, GcReport, PinMode


@runtime_checkable
class BlockStore(Protocol):
    """Blocks by CID, with pins and garbage collection. Errors are `StoreError`s."""

    @property
    def max_block_size(self) -> int: ...

    def put(self, block: Block) -> None:
        """Store a block after checking its bytes hash to its CID and fit the size limit.

        Idempotent. Durable when it returns (for stores that persist).
        """

    def put_many(self, blocks: Iterable[Block]) -> None:
        """`put` for a batch: every block is checked before any is written."""

    def get(self, cid: CID) -> bytes:
        """The block's bytes, verified against `cid`; `BlockNotFoundError`, `CorruptBlockError`."""

    def has(self, cid: CID) -> bool:
        """Whether a block is stored under `cid` (cheap: existence only, no verification)."""

    def delete(self, cid: CID) -> bool:
        """Remove a block; False if absent. A pin root raises `PinnedBlockError`."""

    def stat(self, cid: CID) -> BlockStat:
        """Size and codec without reading the block; `BlockNotFoundError` if absent."""

    def iter_cids(self) -> Iterator[CID]:
        """Every stored CID, in no particular order."""

    def pin(self, cid: CID, recursive: bool = True) -> None:
        """Protect `cid` (and, if recursive, its whole DAG) from `gc`. The block must exist."""

    def unpin(self, cid: CID) -> bool:
        """Remove the pin on `cid`; False if it was not pinned."""

    def pins(self) -> dict[CID, PinMode]:
        """Every pin root and its mode."""

    def gc(self) -> GcReport:
        """Delete every block not reachable from a pin, and report what the pins miss."""
