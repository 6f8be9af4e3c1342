"""`MemoryBlockStore`: the same contract as `FileBlockStore`, held in process memory.

For caches, tests of code above the store, and benchmarks. Blocks are checked on put
exactly as on disk; `get` needs no re-verification because `bytes` cannot change in
memory. Thread-safe: one re-entrant lock, held for the whole of `gc`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from qflow_node.codec import CID, MAX_BLOCK_SIZE, Block, cid_codec
from qflow_node.store.collect import mark_live
from qflow_node.store.errors import BlockNotFoundError, PinnedBlockError
from qflow_node.store.model import BlockStat, GcReport, PinMode
from qflow_node.store.validate import check_block


class MemoryBlockStore:
    def __init__(self, *, max_block_size: int = MAX_BLOCK_SIZE) -> None:
        self._max = max_block_size
        self._blocks: dict[CID, bytes] = {}
        self._pins: dict[CID, PinMode] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"MemoryBlockStore({len(self._blocks)} blocks)"

    @property
    def max_block_size(self) -> int:
        return self._max

    def put(self, block: Block) -> None:
        check_block(block, self._max)
        with self._lock:
            self._blocks.setdefault(block.cid, bytes(block.data))

    def put_many(self, blocks: Iterable[Block]) -> None:
        batch = list(blocks)
        for block in batch:
            check_block(block, self._max)
        with self._lock:
            for block in batch:
                self._blocks.setdefault(block.cid, bytes(block.data))

    def get(self, cid: CID) -> bytes:
        with self._lock:
            data = self._blocks.get(cid)
        if data is None:
            raise BlockNotFoundError(cid)
        return data

    def has(self, cid: CID) -> bool:
        with self._lock:
            return cid in self._blocks

    def stat(self, cid: CID) -> BlockStat:
        return BlockStat(cid, len(self.get(cid)), cid_codec(cid))

    def delete(self, cid: CID) -> bool:
        with self._lock:
            if cid in self._pins:
                raise PinnedBlockError(cid)
            return self._blocks.pop(cid, None) is not None

    def iter_cids(self) -> Iterator[CID]:
        with self._lock:
            snapshot = list(self._blocks)
        return iter(snapshot)

    def pin(self, cid: CID, recursive: bool = True) -> None:
        with self._lock:
            if cid not in self._blocks:
                raise BlockNotFoundError(cid)
            self._pins[cid] = PinMode.RECURSIVE if recursive else PinMode.DIRECT

    def unpin(self, cid: CID) -> bool:
        with self._lock:
            return self._pins.pop(cid, None) is not None

    def pins(self) -> dict[CID, PinMode]:
        with self._lock:
            return dict(self._pins)

    def gc(self) -> GcReport:
        with self._lock:
            live, problems = mark_live(self._pins, self.has, self.get, max_block_size=self._max)
            dead = [cid for cid in self._blocks if cid not in live]
            freed = sum(len(self._blocks.pop(cid)) for cid in dead)
        return GcReport(
            removed=len(dead), freed_bytes=freed, live=len(live), problems=tuple(problems)
        )
