"""Heads refused by a catch-up only for a block still missing are caught up again when
announced again; only heads whose ledger verifies badly (a forgery) are remembered and
ignored. Found by the simulator (seeds 3041 and 3014, 3 nodes, hostile): a node cut off
from the holders of a record it lacked took the heads of a finished execution for a
forgery, and never converged on them after the partition healed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import trio

from qflow_node.codec import CID
from qflow_node.core.ledger.testing import KEYS, PAYLOAD, SUBMISSION
from qflow_node.identity import SigningKey
from qflow_node.ledger_store import LedgerStore
from qflow_node.net.gossip import Gossip
from qflow_node.repo import RepoPaths
from qflow_node.runtime.heads_service import HeadsService
from qflow_node.store import BlockStore, FileBlockStore
from qflow_node.store.service import BlockService, DagFetch

EXEC = SUBMISSION.cid


class CutOff(BlockService):
    """A block service whose DAG walks end, while `cut_off`, without fetching anything
    (as a walk did against an exchange that returned what it had and said nothing)."""

    cut_off = True

    async def fetch_dag(self, roots: Iterable[CID], **options: Any) -> DagFetch:
        if self.cut_off:
            await trio.lowlevel.checkpoint()
            return DagFetch()
        return await super().fetch_dag(roots, **options)


class Peer:
    """The announcer's blocks, served to whoever asks."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store

    async def fetch_many(
        self,
        cids: Iterable[CID],
        peers: Sequence[str] | None = None,
        within: float | None = None,
    ) -> dict[CID, bytes]:
        await trio.lowlevel.checkpoint()
        return {cid: self.store.get(cid) for cid in cids if self.store.has(cid)}

    def block_added(self, cid: CID, data: bytes) -> None:
        pass


async def caught_up(heads: HeadsService, head: CID) -> None:
    """Hear `head` announced, and wait until the catch-up it starts (if any) ended."""
    heads._heard_entry(EXEC, (head,), "announcer")
    with trio.fail_after(10):
        while EXEC in heads._busy:
            await heads._changed.wait()


def ledger(root: Path) -> LedgerStore:
    paths = RepoPaths(root)
    paths.blocks.mkdir(parents=True)
    store = FileBlockStore(paths.blocks)
    store.put_many([SUBMISSION, PAYLOAD])
    return LedgerStore(store, paths)


async def test_heads_refused_for_a_missing_block_are_caught_up_when_heard_again(
    tmp_path: Path,
) -> None:
    writer, reader = ledger(tmp_path / "w"), ledger(tmp_path / "r")
    records = [writer.append(EXEC, "exec.started", payload=PAYLOAD.cid, key=KEYS[0], ts=1)]
    for i in range(3):
        record = writer.append(
            EXEC, "step.completed", payload=PAYLOAD.cid, key=KEYS[1], ts=2 + i, step=f"s{i}"
        )
        records.append(record)
    reader.store.put(records[0])
    assert reader.merge(EXEC, [records[0].cid]).ok
    # The later records came by gossip, refused for the one between: present, not merged.
    reader.store.put_many(records[2:])
    blocks = CutOff(reader.store, Peer(writer.store))
    heads = HeadsService(SigningKey.generate(), cast(Gossip, None), blocks, reader, subnets=["s"])
    head = records[-1].cid
    async with trio.open_nursery() as nursery:
        heads._nursery = nursery  # as `run` sets it (not run: nothing is announced)
        await caught_up(heads, head)
        assert reader.heads(EXEC) == (records[0].cid,)
        assert heads.rejected == 0 and heads.merges == 0
        blocks.cut_off = False  # the partition healed: the same heads, announced again
        await caught_up(heads, head)
    assert heads.merges == 1
    assert reader.heads(EXEC) == (head,)
