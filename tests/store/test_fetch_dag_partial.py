"""`BlockService.fetch_dag` either makes the whole DAG local or raises: an exchange that
returns fewer blocks than it was asked for (without saying why) must not let the walk
pass over the rest. Found by the simulator (seeds 3041 and 3014, 3 nodes, hostile): a
node cut off from the only holders of a record finished its walk "complete", refused the
merge for the block still missing, and took the heads for a forgery; they never came
again."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
import trio

from qflow_node.codec import CID, dag_block, raw_block
from qflow_node.store import FileBlockStore
from qflow_node.store.errors import BlockUnavailableError
from qflow_node.store.service import BlockService


class Holding:
    """An exchange that answers with the blocks it holds and says nothing of the rest
    (as the simulator's does once a fetch's deadline passed)."""

    def __init__(self, blocks: dict[CID, bytes]) -> None:
        self.blocks = blocks

    async def fetch_many(
        self,
        cids: Iterable[CID],
        peers: Sequence[str] | None = None,
        within: float | None = None,
    ) -> dict[CID, bytes]:
        await trio.lowlevel.checkpoint()
        return {cid: self.blocks[cid] for cid in cids if cid in self.blocks}

    def block_added(self, cid: CID, data: bytes) -> None:
        pass


async def test_a_block_the_exchange_did_not_return_fails_the_walk(tmp_path: Path) -> None:
    got, lost = raw_block(b"inputs"), raw_block(b"only on an unreachable peer")
    root = dag_block({"inputs": got.cid, "module": lost.cid})
    store = FileBlockStore(tmp_path)
    blocks = BlockService(store, Holding({root.cid: root.data, got.cid: got.data}))
    with pytest.raises(BlockUnavailableError) as raised:
        await blocks.fetch_dag([root.cid])
    assert set(raised.value.missing) == {lost.cid}
    assert store.has(root.cid) and store.has(got.cid)  # what came is kept
    with pytest.raises(BlockUnavailableError):
        await blocks.get(lost.cid)
    blocks.exchange = Holding({lost.cid: lost.data})
    report = await blocks.fetch_dag([root.cid], skip_present=False)
    assert report.fetched == 1 and store.has(lost.cid)
