"""`BlockService.local_dag`: the blocks of a DAG held here, root first, bounded. The
start record's announcement carries the submission's DAG this way (found by the
simulator, seed 3036/3/hostile: a launcher killed before anyone fetched the flow and
inputs from it left the survivors holding records they could not run)."""

from __future__ import annotations

from pathlib import Path

from qflow_node.codec import dag_block, raw_block
from qflow_node.store import FileBlockStore
from qflow_node.store.service import BlockService


def test_the_local_blocks_of_a_dag_root_first_bounded_and_without_missing_ones(
    tmp_path: Path,
) -> None:
    leaf, absent = raw_block(b"inputs"), raw_block(b"never stored")
    middle = dag_block({"inputs": leaf.cid, "module": absent.cid})
    root = dag_block({"flow": middle.cid, "again": leaf.cid})
    store = FileBlockStore(tmp_path)
    store.put_many([root, middle, leaf])
    blocks = BlockService(store)
    assert [b.cid for b in blocks.local_dag(root.cid, 8)] == [root.cid, middle.cid, leaf.cid]
    assert [b.cid for b in blocks.local_dag(root.cid, 2)] == [root.cid, middle.cid]
    assert blocks.local_dag(absent.cid, 8) == []
