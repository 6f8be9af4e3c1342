"""The BlockStore contract, run against every implementation."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qflow_node.codec import (
    CID,
    DAG_CBOR,
    MAX_BLOCK_SIZE,
    RAW,
    Block,
    cid_for,
    dag_block,
    encode_dag,
    raw_block,
)
from qflow_node.store import (
    BlockNotFoundError,
    BlockStat,
    BlockStore,
    BlockTooLargeError,
    FileBlockStore,
    GcProblem,
    GcReport,
    InvalidBlockError,
    MemoryBlockStore,
    PinMode,
    PinnedBlockError,
    StoreError,
)

STORE_KINDS = ("memory", "file")


def open_store(kind: str, root: Path, *, max_block_size: int = MAX_BLOCK_SIZE) -> BlockStore:
    if kind == "memory":
        return MemoryBlockStore(max_block_size=max_block_size)
    root.mkdir(parents=True, exist_ok=True)
    return FileBlockStore(root, max_block_size=max_block_size)


@dataclass(frozen=True)
class Dag:
    """root -> [left, right]; left -> [leaf_a, leaf_b]; right -> [leaf_a, leaf_c]."""

    root: Block
    left: Block
    right: Block
    leaf_a: Block
    leaf_b: Block
    leaf_c: Block

    @property
    def blocks(self) -> list[Block]:
        return [self.root, self.left, self.right, self.leaf_a, self.leaf_b, self.leaf_c]


def make_dag(tag: str) -> Dag:
    leaf_a = raw_block(f"{tag}-a".encode())
    leaf_b = raw_block(f"{tag}-b".encode())
    leaf_c = dag_block({"tag": tag, "leaf": "c"})
    left = dag_block({"name": "left", "kids": [leaf_a.cid, leaf_b.cid]})
    right = dag_block({"name": "right", "kids": {"x": leaf_a.cid, "y": [leaf_c.cid]}})
    root = dag_block({"name": tag, "left": left.cid, "right": right.cid, "n": 1.5})
    return Dag(root, left, right, leaf_a, leaf_b, leaf_c)


@pytest.fixture(params=STORE_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(kind: str, tmp_path: Path) -> BlockStore:
    return open_store(kind, tmp_path / "blocks")


def cids(store: BlockStore) -> set[CID]:
    return set(store.iter_cids())


# -- put / get / has / stat ----------------------------------------------------------


def test_implements_protocol(store: BlockStore) -> None:
    assert isinstance(store, BlockStore)


def test_put_then_get_returns_the_exact_bytes(store: BlockStore) -> None:
    raw = raw_block(b"hello world")
    dag = dag_block({"a": 1, "b": [raw.cid]})
    store.put(raw)
    store.put(dag)
    assert store.get(raw.cid) == b"hello world"
    assert store.get(dag.cid) == encode_dag({"a": 1, "b": [raw.cid]})
    assert store.has(raw.cid) and store.has(dag.cid)
    assert cids(store) == {raw.cid, dag.cid}


def test_stat_reports_size_and_codec(store: BlockStore) -> None:
    raw = raw_block(b"x" * 37)
    dag = dag_block({})
    store.put_many([raw, dag])
    assert store.stat(raw.cid) == BlockStat(raw.cid, 37, RAW)
    assert store.stat(dag.cid) == BlockStat(dag.cid, 1, DAG_CBOR)
    assert store.stat(raw.cid).codec_name == "raw"
    assert store.stat(dag.cid).codec_name == "dag-cbor"


def test_empty_block_is_a_valid_block(store: BlockStore) -> None:
    empty = raw_block(b"")
    store.put(empty)
    assert store.get(empty.cid) == b""
    assert store.stat(empty.cid).size == 0


def test_missing_block(store: BlockStore) -> None:
    cid = raw_block(b"never stored").cid
    with pytest.raises(BlockNotFoundError) as info:
        store.get(cid)
    assert info.value.cid == cid
    assert str(info.value) == f"block {cid.encode()} not found"
    assert isinstance(info.value, StoreError)
    assert not store.has(cid)
    with pytest.raises(BlockNotFoundError):
        store.stat(cid)


def test_unsupported_cid_is_never_found(store: BlockStore) -> None:
    dag_pb = CID(bytes([0x01, 0x70, 0x12, 0x20]) + hashlib.sha256(b"x").digest())
    assert not store.has(dag_pb)
    with pytest.raises(BlockNotFoundError):
        store.get(dag_pb)
    assert store.delete(dag_pb) is False


def test_put_is_idempotent(store: BlockStore) -> None:
    block = raw_block(b"same")
    store.put(block)
    store.put(block)
    store.put_many([block, block])
    assert list(store.iter_cids()) == [block.cid]
    assert store.get(block.cid) == b"same"


def test_put_refuses_bytes_that_do_not_hash_to_the_cid(store: BlockStore) -> None:
    good = raw_block(b"genuine")
    forged = Block(good.cid, b"forged")
    with pytest.raises(InvalidBlockError) as info:
        store.put(forged)
    assert str(info.value) == (
        f"refusing block {good.cid.encode()}: its bytes hash to {cid_for(b'forged', RAW).encode()}"
    )
    assert not store.has(good.cid)
    assert cids(store) == set()


def test_put_refuses_unsupported_cids(store: BlockStore) -> None:
    data = b"dag-pb bytes"
    dag_pb = CID(bytes([0x01, 0x70, 0x12, 0x20]) + hashlib.sha256(data).digest())
    with pytest.raises(InvalidBlockError, match="unsupported codec 0x70"):
        store.put(Block(dag_pb, data))
    assert cids(store) == set()


def test_size_limit(kind: str, tmp_path: Path) -> None:
    store = open_store(kind, tmp_path / "blocks", max_block_size=100)
    assert store.max_block_size == 100
    fits = raw_block(b"a" * 100)
    store.put(fits)
    too_big = raw_block(b"a" * 101)
    with pytest.raises(BlockTooLargeError) as info:
        store.put(too_big)
    assert (info.value.size, info.value.limit, info.value.cid) == (101, 100, too_big.cid)
    assert isinstance(info.value, InvalidBlockError)
    with pytest.raises(BlockTooLargeError):
        store.put_many([raw_block(b"ok"), too_big])
    assert cids(store) == {fits.cid}


def test_put_many_stores_a_batch_from_any_iterable(store: BlockStore) -> None:
    blocks = [raw_block(bytes([i]) * 10) for i in range(50)]

    def generate() -> Iterator[Block]:
        yield from blocks

    store.put_many(generate())
    assert cids(store) == {b.cid for b in blocks}
    for block in blocks:
        assert store.get(block.cid) == block.data


def test_put_many_refuses_the_whole_batch_if_one_block_is_bad(store: BlockStore) -> None:
    good = [raw_block(b"one"), raw_block(b"two")]
    bad = Block(raw_block(b"three").cid, b"not three")
    with pytest.raises(InvalidBlockError):
        store.put_many([*good, bad])
    assert cids(store) == set()


def test_put_many_of_nothing(store: BlockStore) -> None:
    store.put_many([])
    assert cids(store) == set()


# -- delete ----------------------------------------------------------------------------


def test_delete(store: BlockStore) -> None:
    block = raw_block(b"doomed")
    keep = raw_block(b"kept")
    store.put_many([block, keep])
    assert store.delete(block.cid) is True
    assert store.delete(block.cid) is False
    assert not store.has(block.cid)
    with pytest.raises(BlockNotFoundError):
        store.get(block.cid)
    assert cids(store) == {keep.cid}


def test_delete_refuses_a_pin_root(store: BlockStore) -> None:
    block = raw_block(b"precious")
    store.put(block)
    store.pin(block.cid)
    with pytest.raises(PinnedBlockError):
        store.delete(block.cid)
    assert store.get(block.cid) == b"precious"
    store.unpin(block.cid)
    assert store.delete(block.cid) is True


# -- pins --------------------------------------------------------------------------------


def test_pin_requires_the_block(store: BlockStore) -> None:
    cid = raw_block(b"absent").cid
    with pytest.raises(BlockNotFoundError):
        store.pin(cid)
    assert store.pins() == {}


def test_pins_record_their_mode(store: BlockStore) -> None:
    a, b = raw_block(b"a"), raw_block(b"b")
    store.put_many([a, b])
    store.pin(a.cid)
    store.pin(b.cid, recursive=False)
    assert store.pins() == {a.cid: PinMode.RECURSIVE, b.cid: PinMode.DIRECT}
    store.pin(b.cid, recursive=True)  # re-pinning sets the mode
    store.pin(a.cid)  # idempotent
    assert store.pins() == {a.cid: PinMode.RECURSIVE, b.cid: PinMode.RECURSIVE}
    assert store.unpin(a.cid) is True
    assert store.unpin(a.cid) is False
    assert store.pins() == {b.cid: PinMode.RECURSIVE}


# -- gc ----------------------------------------------------------------------------------


def test_gc_of_an_empty_store(store: BlockStore) -> None:
    assert store.gc() == GcReport(removed=0, freed_bytes=0, live=0, problems=())


def test_gc_removes_everything_unpinned(store: BlockStore) -> None:
    blocks = [raw_block(b"1" * 10), raw_block(b"2" * 20), dag_block({"x": 1})]
    store.put_many(blocks)
    report = store.gc()
    assert report == GcReport(removed=3, freed_bytes=10 + 20 + len(blocks[2].data), live=0)
    assert cids(store) == set()


def test_recursive_pin_keeps_the_whole_dag(store: BlockStore) -> None:
    dag = make_dag("kept")
    loose = make_dag("loose")
    store.put_many(dag.blocks + loose.blocks)
    store.pin(dag.root.cid)
    report = store.gc()
    assert cids(store) == {b.cid for b in dag.blocks}
    assert report.removed == len(loose.blocks)
    assert report.freed_bytes == sum(len(b.data) for b in loose.blocks)
    assert report.live == len(dag.blocks)
    assert report.problems == ()
    for block in dag.blocks:
        assert store.get(block.cid) == block.data


def test_direct_pin_keeps_only_the_block(store: BlockStore) -> None:
    dag = make_dag("direct")
    store.put_many(dag.blocks)
    store.pin(dag.root.cid, recursive=False)
    report = store.gc()
    assert cids(store) == {dag.root.cid}
    assert (report.removed, report.live, report.problems) == (5, 1, ())


def test_direct_and_recursive_pins_on_one_dag(store: BlockStore) -> None:
    # A direct pin on an inner node must not stop a recursive pin from following it.
    dag = make_dag("both")
    store.put_many(dag.blocks)
    store.pin(dag.left.cid, recursive=False)
    store.pin(dag.root.cid)
    assert store.gc().removed == 0
    assert cids(store) == {b.cid for b in dag.blocks}


def test_shared_subgraph_survives_while_any_pin_reaches_it(store: BlockStore) -> None:
    dag = make_dag("shared")
    store.put_many(dag.blocks)
    store.pin(dag.root.cid)
    store.pin(dag.right.cid)
    store.unpin(dag.root.cid)
    report = store.gc()
    assert cids(store) == {dag.right.cid, dag.leaf_a.cid, dag.leaf_c.cid}
    assert report.removed == 3


def test_unpinned_dag_is_collected(store: BlockStore) -> None:
    dag = make_dag("gone")
    store.put_many(dag.blocks)
    store.pin(dag.root.cid)
    store.gc()
    store.unpin(dag.root.cid)
    assert store.gc().removed == 6
    assert cids(store) == set()


def test_recursive_pin_of_a_raw_block(store: BlockStore) -> None:
    leaf = raw_block(b"raw root")
    store.put_many([leaf, raw_block(b"other")])
    store.pin(leaf.cid)
    assert store.gc() == GcReport(removed=1, freed_bytes=5, live=1)
    assert cids(store) == {leaf.cid}


def test_missing_child_is_reported_not_fatal(store: BlockStore) -> None:
    dag = make_dag("holey")
    store.put_many(dag.blocks)
    store.pin(dag.root.cid)
    assert store.delete(dag.left.cid) is True  # not a pin root, so delete is allowed
    assert store.delete(dag.leaf_c.cid) is True
    report = store.gc()
    assert [(p.root, p.cid, p.kind) for p in report.problems] == [
        (dag.root.cid, dag.left.cid, "missing"),
        (dag.root.cid, dag.leaf_c.cid, "missing"),
    ]
    assert report.missing == (dag.left.cid, dag.leaf_c.cid)
    # leaf_b was reachable only through the missing `left`: nothing links to it any more.
    assert cids(store) == {dag.root.cid, dag.right.cid, dag.leaf_a.cid}
    assert report.removed == 1
    assert str(report.problems[0]) == (
        f"missing block {dag.left.cid.encode()} (pinned via {dag.root.cid.encode()}): "
        "not in the store"
    )


def test_undecodable_pinned_block_is_kept_and_reported(store: BlockStore) -> None:
    junk = b"\xff\x00 not cbor"
    bogus = Block(cid_for(junk, DAG_CBOR), junk)  # hashes fine, is not dag-cbor
    store.put_many([bogus, raw_block(b"loose")])
    store.pin(bogus.cid)
    report = store.gc()
    assert cids(store) == {bogus.cid}
    assert [(p.root, p.cid, p.kind) for p in report.problems] == [
        (bogus.cid, bogus.cid, "undecodable")
    ]
    assert report.problems[0].detail.startswith("links not followed: ")
    assert isinstance(report.problems[0], GcProblem)


def test_gc_walks_a_long_chain_without_recursion(store: BlockStore) -> None:
    prev: CID | None = None
    chain = []
    for i in range(3000):
        block = dag_block({"i": i, "prev": prev})
        chain.append(block)
        prev = block.cid
    store.put_many(chain)
    store.pin(chain[-1].cid)
    report = store.gc()
    assert (report.removed, report.live, report.problems) == (0, 3000, ())
