"""The node's block service: the local store first, then the network (bitswap).

`get` answers from the local `BlockStore` or fetches the block from peers; `fetch_dag`
walks IPLD links from some roots and fetches what is missing, level by level (one
wantlist per level, so a wide DAG costs a round trip per level, not per block);
`cat` reassembles a file (a raw block, or a UnixFS file DAG as Kubo's `ipfs add` makes
it). Everything fetched is verified: blocks arrive named by what their bytes hash to
(the exchange computes the CID) and the store re-checks on put.

Qflow's store keeps dag-cbor and raw blocks only (ADR 0005): dag-pb blocks fetched from
Kubo are read through - walked, verified, returned - but not stored or served on.

Disk calls run in a worker thread; the exchange is async (see qflow_node.net.bitswap).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from qflow_node.codec import CID, DAG_CBOR, RAW, Block, CodecError, decode_dag, iter_links
from qflow_node.codec.dagpb import (
    DAG_PB,
    UNIXFS_FILE,
    UNIXFS_RAW,
    DagPbError,
    decode_node,
    decode_unixfs,
    link_cid,
)
from qflow_node.offload import run_sync
from qflow_node.store.api import BlockStore
from qflow_node.store.errors import BlockUnavailableError, StoreError

# Wants per message: large enough to pipeline a wide level, small enough for one reply
# stream to start delivering at once.
_BATCH: Final = 256


class Exchange(Protocol):
    """Where blocks the local store lacks come from (bitswap)."""

    async def fetch_many(
        self,
        cids: Iterable[CID],
        peers: Sequence[str] | None = None,
        within: float | None = None,
    ) -> dict[CID, bytes]: ...

    def block_added(self, cid: CID, data: bytes) -> None: ...


class DagTooLargeError(StoreError):
    """A DAG walk stopped at its block or byte budget."""


@dataclass(slots=True)
class DagFetch:
    """What a `fetch_dag` did."""

    blocks: int = 0  # blocks in the DAG (local and fetched)
    fetched: int = 0
    fetched_bytes: int = 0
    local: int = 0
    # dag-pb blocks (not storable here), kept in memory for the caller (e.g. `cat`)
    foreign: dict[CID, bytes] = field(default_factory=dict)


def block_links(cid: CID, data: bytes) -> list[CID]:
    """The CIDs a block links to; CodecError/DagPbError if it does not decode."""
    codec = cid.cid_bytes[1]
    if codec == RAW:
        return []
    if codec == DAG_CBOR:
        return list(iter_links(decode_dag(data)))
    if codec == DAG_PB:
        return [link_cid(link.hash) for link in decode_node(data).links]
    raise CodecError(f"cannot follow links of {cid.encode()}: codec 0x{codec:02x}")


class BlockService:
    """A `BlockStore` plus an `Exchange`: local blocks, else the network's, verified."""

    def __init__(self, store: BlockStore, exchange: Exchange | None = None) -> None:
        self.store = store
        self.exchange = exchange

    async def put(self, block: Block) -> None:
        """Store a block and hand it to peers that asked for it."""
        await run_sync(self.store.put, block)
        if self.exchange is not None:
            self.exchange.block_added(block.cid, block.data)

    async def get(
        self, cid: CID, *, peers: Sequence[str] | None = None, within: float | None = None
    ) -> bytes:
        """The block's bytes, local or fetched (and then stored if storable)."""
        local = await run_sync(self.local, cid)
        if local is not None:
            return local
        fetched = await self._fetch([cid], peers, within)
        return fetched[cid]

    async def fetch_dag(
        self,
        roots: Iterable[CID],
        *,
        peers: Sequence[str] | None = None,
        within: float | None = None,
        skip_present: bool = True,
        max_blocks: int = 1_000_000,
        max_bytes: int = 1 << 30,
    ) -> DagFetch:
        """Make every block reachable from `roots` local (dag-pb: held in memory).

        With `skip_present`, a block already stored is taken to come with its whole
        DAG (true for anything this node wrote or fetched completely); pass False to
        re-walk and repair a DAG whose fetch was interrupted. `within` bounds each
        level's fetch.
        """
        report = DagFetch()
        seen: set[CID] = set()
        level = list(dict.fromkeys(roots))
        while level:
            level = [cid for cid in dict.fromkeys(level) if cid not in seen]
            seen.update(level)
            report.blocks += len(level)
            if report.blocks > max_blocks:
                raise DagTooLargeError(f"DAG walk passed its limit of {max_blocks} blocks")
            local = await run_sync(self._local_many, level)
            report.local += len(local)
            missing = [cid for cid in level if cid not in local]
            fetched: dict[CID, bytes] = {}
            for start in range(0, len(missing), _BATCH):
                batch = missing[start : start + _BATCH]
                fetched.update(await self._fetch(batch, peers, within, report.foreign))
            report.fetched += len(fetched)
            report.fetched_bytes += sum(len(d) for d in fetched.values())
            if report.fetched_bytes > max_bytes:
                raise DagTooLargeError(f"DAG walk passed its limit of {max_bytes} bytes")
            following = fetched if skip_present else {**local, **fetched}
            next_level: list[CID] = []
            for cid, data in following.items():
                try:
                    next_level.extend(block_links(cid, data))
                except (CodecError, DagPbError) as exc:
                    raise StoreError(f"block {cid.encode()} does not decode: {exc}") from None
            level = next_level
        return report

    def local_dag(self, root: CID, limit: int) -> list[Block]:
        """Up to `limit` blocks of the DAG under `root` that are stored here, breadth
        first from the root (blocking: a worker thread's)."""
        found: list[Block] = []
        seen = {root}
        level = [root]
        while level and len(found) < limit:
            following: list[CID] = []
            for cid, data in self._local_many(level).items():
                found.append(Block(cid, data))
                with contextlib.suppress(CodecError, DagPbError):  # a leaf, then
                    following += [c for c in block_links(cid, data) if c not in seen]
                seen.update(following)
            level = following
        return found[:limit]

    async def cat(
        self, cid: CID, *, peers: Sequence[str] | None = None, within: float | None = None
    ) -> bytes:
        """The bytes of a file: a raw block, or a UnixFS file DAG (dag-pb)."""
        dag = await self.fetch_dag([cid], peers=peers, within=within, skip_present=False)

        def read(block_cid: CID) -> bytes:
            if block_cid in dag.foreign:
                return dag.foreign[block_cid]
            return self.store.get(block_cid)

        return await run_sync(_unixfs_bytes, cid, read)

    # -- helpers ------------------------------------------------------------------------

    def local(self, cid: CID) -> bytes | None:
        """Our verified copy of a block, or None (absent, unstorable or corrupt: a
        corrupt file is quarantined by the store and never served). Bitswap's source."""
        try:
            return self.store.get(cid)
        except StoreError:
            return None

    def _local_many(self, cids: Sequence[CID]) -> dict[CID, bytes]:
        found = {}
        for cid in cids:
            if cid.cid_bytes[1] != DAG_PB and self.store.has(cid):
                data = self.local(cid)
                if data is not None:
                    found[cid] = data
        return found

    async def _fetch(
        self,
        cids: Sequence[CID],
        peers: Sequence[str] | None,
        within: float | None,
        foreign: dict[CID, bytes] | None = None,
    ) -> dict[CID, bytes]:
        if self.exchange is None:
            raise BlockUnavailableError(dict.fromkeys(cids, "no_exchange"))
        fetched = await self.exchange.fetch_many(cids, peers, within)
        missing = {cid: "timeout" for cid in cids if cid not in fetched}
        storable = []
        for cid, data in fetched.items():
            if cid.cid_bytes[1] == DAG_PB:
                # Not stored, so not re-checked by the store: check the hash here.
                if hashlib.sha256(data).digest() != cid.cid_bytes[-32:]:
                    raise StoreError(f"exchange returned wrong bytes for {cid.encode()}")
                if foreign is not None:
                    foreign[cid] = data
            else:
                storable.append(Block(cid, data))
        if storable:
            await run_sync(self.store.put_many, storable)
        if missing:
            # An exchange should say so itself (bitswap does); one that returned fewer
            # blocks must not make a DAG walk pass over the rest as if it had them.
            raise BlockUnavailableError(missing)
        return fetched


def _unixfs_bytes(root: CID, read: Callable[[CID], bytes]) -> bytes:
    out = bytearray()
    stack = [root]  # depth-first, children in link order
    while stack:
        cid = stack.pop()
        data = read(cid)
        codec = cid.cid_bytes[1]
        if codec == RAW:
            out += data
            continue
        if codec != DAG_PB:
            raise StoreError(f"{cid.encode()} is not a file (codec 0x{codec:02x})")
        node = decode_node(data)
        unixfs = decode_unixfs(node.data or b"")
        if unixfs.type not in (UNIXFS_FILE, UNIXFS_RAW):
            raise StoreError(f"{cid.encode()} is UnixFS type {unixfs.type}, not a file")
        out += unixfs.data
        stack.extend(reversed([link_cid(link.hash) for link in node.links]))
    return bytes(out)
