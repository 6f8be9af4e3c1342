"""Block packs (qflow_node/store/packs.py) through `FileBlockStore`, on real files: blocks
persist across reopening, torn tails and corrupt entries are never served, deletes and
gc compaction persist, several stores (processes) share one root, packs rotate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qflow_node import appendlog
from qflow_node.codec import Block, cid_for, dag_block, raw_block
from qflow_node.store import (
    BlockNotFoundError,
    CorruptBlockError,
    FileBlockStore,
    GcReport,
    PinMode,
)
from qflow_node.store import packs as packs_module

REPO = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT = 60.0  # seconds for the child process of the two-process test


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "blocks"
    path.mkdir()
    return path


def pack_files(root: Path) -> list[Path]:
    return sorted((root / "packs").glob("*.pack"))


def put_file(root: Path, block: Block) -> Path:
    """Store the block as an older repo did: a file of its own in its shard directory."""
    name = block.cid.encode()
    path = root / name[-3:-1] / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(block.data)
    return path


def frame_of(pack: Path, block: Block) -> tuple[int, bytes]:
    """File offset and payload of the last entry storing `block` in `pack`."""
    found, _end = appendlog.scan(pack)
    key = block.cid.cid_bytes
    puts = [(off, p) for off, p in found if p[0] == 1 and p[2 : 2 + p[1]] == key]
    offset, payload = puts[-1]
    return offset - appendlog.FRAME.size, payload


def blocks_of(count: int, size: int = 100, tag: str = "block") -> list[Block]:
    return [raw_block(f"{tag} {i} ".encode().ljust(size, b".")) for i in range(count)]


# -- round trip ----------------------------------------------------------------------------


def test_round_trip_and_reopen(root: Path) -> None:
    leaf = raw_block(b"leaf")
    top = dag_block({"kid": leaf.cid})
    empty = raw_block(b"")
    big = raw_block(os.urandom(300_000))
    store = FileBlockStore(root)
    store.put_many([leaf, top])
    store.put(empty)
    store.put(big)
    for reader in (store, FileBlockStore(root)):
        for block in (leaf, top, empty, big):
            assert reader.has(block.cid)
            assert reader.get(block.cid) == block.data
            assert reader.stat(block.cid).size == len(block.data)
        assert set(reader.iter_cids()) == {leaf.cid, top.cid, empty.cid, big.cid}
        assert not reader.has(raw_block(b"never stored").cid)
    assert len(pack_files(root)) == 1  # one store, one pack
    assert not [p for p in root.iterdir() if len(p.name) == 2]  # no block files


def test_close_then_use_again(root: Path) -> None:
    store = FileBlockStore(root)
    first, second = raw_block(b"first"), raw_block(b"second")
    store.put(first)
    store.close()
    assert store.get(first.cid) == b"first"  # the pack is reopened for reading
    store.put(second)  # and a new one started for writing
    store.close()
    assert len(pack_files(root)) == 2
    reopened = FileBlockStore(root)
    assert [reopened.get(b.cid) for b in (first, second)] == [b"first", b"second"]


# -- torn tails ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    ["truncate 1", "truncate 5", "truncate to frame header", "bad crc", "garbage"],
)
def test_torn_tail_is_ignored(root: Path, damage: str) -> None:
    early = blocks_of(3, tag="early")
    last = raw_block(b"the last entry " * 10)
    writer = FileBlockStore(root)
    writer.put_many(early)
    writer.put(last)
    writer.close()
    [pack] = pack_files(root)
    start, payload = frame_of(pack, last)
    assert start + appendlog.FRAME.size + len(payload) == pack.stat().st_size
    content = pack.read_bytes()
    if damage.startswith("truncate"):
        cut = {"truncate 1": 1, "truncate 5": 5}.get(damage, len(payload) + 3)
        content = content[:-cut]
    elif damage == "bad crc":  # pages of an unsynced batch reached the disk out of order
        content = content[:-1] + bytes([content[-1] ^ 0xFF])
    else:  # a batch begun after `last`, cut off
        content += appendlog.frame(b"\x01" + b"x" * 60)[:30]
    pack.write_bytes(content)

    reader = FileBlockStore(root)
    for block in early:
        assert reader.get(block.cid) == block.data
    survived = damage == "garbage"
    assert reader.has(last.cid) is survived
    assert set(reader.iter_cids()) == {b.cid for b in early} | ({last.cid} if survived else set())
    if not survived:
        with pytest.raises(BlockNotFoundError):
            reader.get(last.cid)

    # A new store writes a pack of its own; the torn one is only read, never appended to.
    again = raw_block(b"written after the crash")
    reader.put_many([last, again])
    assert pack.read_bytes() == content
    assert len(pack_files(root)) == 2
    reopened = FileBlockStore(root)
    for block in [*early, last, again]:
        assert reopened.get(block.cid) == block.data


def test_a_batch_seen_half_written_is_read_once_whole(root: Path) -> None:
    writer = FileBlockStore(root)
    first = raw_block(b"first")
    writer.put(first)
    reader = FileBlockStore(root)
    assert reader.get(first.cid) == b"first"  # the reader has scanned the pack
    batch = blocks_of(4, size=500)
    writer.put_many(batch)
    [pack] = pack_files(root)
    whole = pack.read_bytes()
    # Another process reading while the batch is being written sees part of it.
    pack.write_bytes(whole[: len(whole) - 700])
    assert not reader.has(batch[-1].cid)
    pack.write_bytes(whole)  # the write completes
    for block in batch:
        assert reader.get(block.cid) == block.data


def test_foreign_files_in_packs_are_ignored_and_left_alone(root: Path) -> None:
    store = FileBlockStore(root)
    block = raw_block(b"real")
    store.put(block)
    foreign = [root / "packs" / "notes.txt", root / "packs" / "future.pack"]
    foreign[0].write_bytes(b"not a pack")
    foreign[1].write_bytes(b"QFLOG\x00\x02\n" + appendlog.frame(b"a later format"))
    reader = FileBlockStore(root)
    assert list(reader.iter_cids()) == [block.cid]
    assert reader.get(block.cid) == b"real"
    assert reader.gc() == GcReport(removed=1, freed_bytes=4, live=0)  # compacts the packs
    assert all(path.exists() for path in foreign)  # a file it cannot read is not deleted
    assert list(FileBlockStore(root).iter_cids()) == []


# -- corrupt entries -------------------------------------------------------------------------


def test_corrupt_packed_block_is_never_served_and_a_put_repairs_it(root: Path) -> None:
    before, victim, after = raw_block(b"before"), raw_block(b"important payload"), raw_block(b"x")
    store = FileBlockStore(root)
    store.put_many([before, victim, after])
    [pack] = pack_files(root)
    # A valid frame with wrong content: the CRC matches, the hash does not.
    start, payload = frame_of(pack, victim)
    damaged = bytearray(payload)
    damaged[-3] ^= 0x01
    with pack.open("r+b") as fh:
        fh.seek(start)
        fh.write(appendlog.frame(bytes(damaged)))
    bad_data = bytes(damaged[2 + damaged[1] :])

    with pytest.raises(CorruptBlockError) as info:
        store.get(victim.cid)
    err = info.value
    assert err.cid == victim.cid
    assert err.path == pack
    assert err.reason == f"its 17 bytes hash to {cid_for(bad_data, 0x55).encode()}"
    assert err.quarantined is None  # other blocks share the file: nothing is moved
    assert str(err) == f"block {victim.cid.encode()} at {pack} is corrupt: {err.reason}"
    # This store forgets the copy: not served, not listed; the others are untouched.
    assert not store.has(victim.cid)
    with pytest.raises(BlockNotFoundError):
        store.get(victim.cid)
    with pytest.raises(BlockNotFoundError):
        store.stat(victim.cid)
    assert set(store.iter_cids()) == {before.cid, after.cid}
    assert store.get(before.cid) == b"before" and store.get(after.cid) == b"x"
    assert list((root / "quarantine").iterdir()) == []

    # A store opened afresh finds the bad copy again, and refuses it again.
    fresh = FileBlockStore(root)
    assert fresh.has(victim.cid)
    with pytest.raises(CorruptBlockError):
        fresh.get(victim.cid)

    store.put(victim)  # appends a good copy, which wins over the bad one
    assert store.get(victim.cid) == victim.data
    assert FileBlockStore(root).get(victim.cid) == victim.data


def test_corrupt_packed_block_in_a_pinned_dag_is_reported_and_kept_by_gc(root: Path) -> None:
    leaf = dag_block({"leaf": True})
    top = dag_block({"kid": leaf.cid})
    store = FileBlockStore(root)
    store.put_many([leaf, top])
    store.pin(top.cid)
    [pack] = pack_files(root)
    start, payload = frame_of(pack, leaf)
    with pack.open("r+b") as fh:
        fh.seek(start)
        fh.write(appendlog.frame(payload[:-1] + bytes([payload[-1] ^ 0x20])))
    report = store.gc()
    assert [(p.root, p.cid, p.kind) for p in report.problems] == [(top.cid, leaf.cid, "corrupt")]
    assert (report.removed, report.live) == (0, 1)
    store.put(leaf)  # the repair survives the gc that follows
    assert store.gc().problems == ()
    assert FileBlockStore(root).get(leaf.cid) == leaf.data


# -- delete ----------------------------------------------------------------------------------


def test_delete_persists_and_a_re_put_works(root: Path) -> None:
    gone, kept = raw_block(b"to delete"), raw_block(b"to keep")
    store = FileBlockStore(root)
    store.put_many([gone, kept])
    size = pack_files(root)[0].stat().st_size
    assert store.delete(gone.cid) is True
    assert pack_files(root)[0].stat().st_size > size  # a tombstone, appended
    assert store.delete(gone.cid) is False
    assert not store.has(gone.cid)
    reopened = FileBlockStore(root)
    assert not reopened.has(gone.cid)
    assert list(reopened.iter_cids()) == [kept.cid]
    assert reopened.delete(gone.cid) is False

    reopened.put(gone)
    assert reopened.get(gone.cid) == b"to delete"
    assert set(FileBlockStore(root).iter_cids()) == {gone.cid, kept.cid}


def test_delete_removes_packed_and_file_copies(root: Path) -> None:
    block = raw_block(b"in both places")
    path = put_file(root, block)
    store = FileBlockStore(root)
    store.put(block)  # the older file is not consulted: a packed copy is added
    assert store.delete(block.cid) is True
    assert not path.exists()
    assert not FileBlockStore(root).has(block.cid)


# -- several stores on one root ----------------------------------------------------------


def test_two_stores_see_each_others_blocks(root: Path) -> None:
    one, two = FileBlockStore(root), FileBlockStore(root)
    a, b = raw_block(b"from one"), raw_block(b"from two")
    assert not two.has(a.cid)  # two has read the (empty) packs before one writes
    one.put(a)
    assert two.has(a.cid)  # a lookup that misses reads what was appended since
    assert two.get(a.cid) == b"from one"
    two.put(b)
    assert one.get(b.cid) == b"from two"
    assert set(one.iter_cids()) == set(two.iter_cids()) == {a.cid, b.cid}
    # Each wrote a pack of its own.
    first, second = pack_files(root)
    assert [frame_of(first, a)[1][-8:], frame_of(second, b)[1][-8:]] == [b"from one", b"from two"]
    with pytest.raises(IndexError):
        frame_of(first, b)
    two.put(a)  # known to two: not written again
    assert pack_files(root) == [first, second]
    assert b"from one" not in second.read_bytes()


def test_a_delete_wins_over_a_put_it_saw_in_a_newer_pack(root: Path) -> None:
    one, two = FileBlockStore(root), FileBlockStore(root)
    one.put(raw_block(b"one's pack is created first"))
    block = raw_block(b"written by two, deleted by one")
    two.put(block)  # lands in two's pack, which sorts after one's
    assert one.delete(block.cid) is True
    assert not one.has(block.cid)
    assert not FileBlockStore(root).has(block.cid)  # the tombstone applies after the put
    # A put after the delete, by a store that has read the tombstone, wins in turn.
    assert not two.has(raw_block(b"unknown").cid)  # a miss: two reads the tombstone
    assert not two.has(block.cid)
    two.put(block)
    assert FileBlockStore(root).get(block.cid) == block.data


def test_another_process_sees_and_adds_blocks(root: Path) -> None:
    store = FileBlockStore(root)
    ours = raw_block(b"from the test")
    store.put(ours)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from qflow_node.codec import parse_cid, raw_block\n"
        "from qflow_node.store import FileBlockStore\n"
        "store = FileBlockStore(Path(sys.argv[1]))\n"
        "assert store.get(parse_cid(sys.argv[2])) == b'from the test'\n"
        "block = raw_block(b'from the child')\n"
        "store.put(block)\n"
        "print(block.cid.encode())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(root), ours.cid.encode()],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    theirs = raw_block(b"from the child")
    assert done.stdout.strip() == theirs.cid.encode()
    assert store.get(theirs.cid) == b"from the child"  # found on a miss, no reopen
    pids = sorted(int(p.stem.split("-")[1]) for p in pack_files(root))
    assert len(pids) == 2 and os.getpid() in pids  # the child wrote its own pack


# -- gc compaction ---------------------------------------------------------------------------


def test_gc_compacts_the_packs(root: Path) -> None:
    leaf = raw_block(b"leaf")
    top = dag_block({"kid": leaf.cid})
    direct = raw_block(b"pinned directly")
    loose = [raw_block(b"loose one"), raw_block(b"loose two!")]
    old_file = raw_block(b"an older repo's file")
    put_file(root, old_file)
    store = FileBlockStore(root)
    store.put_many([leaf, top, direct, *loose])
    other = FileBlockStore(root)
    other.put(raw_block(b"in a second pack"))
    store.pin(top.cid)
    store.pin(direct.cid, recursive=False)
    old_packs = pack_files(root)
    assert len(old_packs) == 2

    report = store.gc()
    assert report == GcReport(removed=4, freed_bytes=9 + 10 + 20 + 16, live=3)
    [pack] = pack_files(root)
    assert pack not in old_packs  # the live blocks were copied to a new pack
    survivors = {leaf.cid, top.cid, direct.cid}
    for reader in (store, FileBlockStore(root)):
        assert set(reader.iter_cids()) == survivors
        for block in (leaf, top, direct):
            assert reader.get(block.cid) == block.data
        assert reader.pins() == {top.cid: PinMode.RECURSIVE, direct.cid: PinMode.DIRECT}
    assert not [p for p in root.iterdir() if len(p.name) == 2 and any(p.iterdir())]

    # Nothing left to collect: the pack is left as it is.
    assert store.gc() == GcReport(removed=0, freed_bytes=0, live=3)
    assert pack_files(root) == [pack]
    store.put(loose[0])  # and the store writes on
    assert FileBlockStore(root).get(loose[0].cid) == loose[0].data


def test_gc_counts_a_block_in_a_pack_and_a_file_once(root: Path) -> None:
    block = raw_block(b"in both places")
    path = put_file(root, block)
    store = FileBlockStore(root)
    store.put(block)
    # Both copies are freed, the block counts once.
    assert store.gc() == GcReport(removed=1, freed_bytes=2 * 14, live=0)
    assert not path.exists()
    assert not FileBlockStore(root).has(block.cid)


# -- listing -------------------------------------------------------------------------------


def test_iter_cids_lists_packed_and_file_blocks_once(root: Path) -> None:
    packed, filed, both = raw_block(b"packed"), raw_block(b"filed"), raw_block(b"both")
    put_file(root, filed)
    put_file(root, both)
    store = FileBlockStore(root)
    store.put_many([packed, both])
    for reader in (store, FileBlockStore(root)):
        listed = list(reader.iter_cids())
        assert sorted(listed, key=str) == sorted([packed.cid, filed.cid, both.cid], key=str)
        assert len(listed) == 3


# -- rotation --------------------------------------------------------------------------------


def test_packs_rotate_past_their_size_limit(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packs_module, "MAX_PACK_BYTES", 4096)
    blocks = blocks_of(40, size=1000)
    store = FileBlockStore(root)
    for i in range(0, len(blocks), 3):
        store.put_many(blocks[i : i + 3])
    packs = pack_files(root)
    assert len(packs) >= 5
    # A pack is only started past the limit: each holds at most one batch beyond it.
    assert all(p.stat().st_size < 4096 + 3 * 1100 for p in packs)
    assert store.delete(blocks[0].cid)  # a block of the first pack
    for reader in (store, FileBlockStore(root)):
        assert set(reader.iter_cids()) == {b.cid for b in blocks[1:]}
        for block in blocks[1:]:
            assert reader.get(block.cid) == block.data
    other = FileBlockStore(root)
    other.put(blocks[0])
    assert store.get(blocks[0].cid) == blocks[0].data
