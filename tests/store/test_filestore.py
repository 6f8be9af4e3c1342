"""FileBlockStore specifics: layout, verify-on-read, quarantine, persistence, fsync order."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from qflow_node import fsio
from qflow_node.codec import DAG_CBOR, Block, cid_for, dag_block, raw_block
from qflow_node.store import (
    BlockNotFoundError,
    CorruptBlockError,
    FileBlockStore,
    GcReport,
    PinMode,
    StoreError,
    StoreNotFoundError,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "blocks"
    path.mkdir()
    return path


@pytest.fixture
def store(root: Path) -> FileBlockStore:
    return FileBlockStore(root)


def block_file(root: Path, block: Block) -> Path:
    name = block.cid.encode()
    return root / name[-3:-1] / name


def quarantined(root: Path) -> list[Path]:
    return sorted((root / "quarantine").iterdir())


# -- layout ------------------------------------------------------------------------------


def test_layout_on_disk(store: FileBlockStore, root: Path) -> None:
    block = raw_block(b"where am I")
    store.put(block)
    name = block.cid.encode()
    assert name == "bafkreihpapo7robbqigl3p3g5hhapcdblnnab7eeqvceq2dqkq4nngm5si"
    path = root / "5s" / name  # shard = the two characters before the last one
    assert path.read_bytes() == b"where am I"
    store.pin(block.cid)
    assert (root / "pins" / name).read_bytes() == b"recursive\n"
    store.pin(block.cid, recursive=False)
    assert (root / "pins" / name).read_bytes() == b"direct\n"
    assert sorted(p.name for p in root.iterdir()) == ["5s", "pins", "quarantine"]


def test_missing_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError) as info:
        FileBlockStore(tmp_path / "nope")
    assert isinstance(info.value, StoreError)
    assert str(info.value) == f"no block store at {tmp_path / 'nope'}: the directory does not exist"
    assert not (tmp_path / "nope").exists()


# -- verify on read ------------------------------------------------------------------------


def test_flipped_byte_is_detected_quarantined_and_never_returned(
    store: FileBlockStore, root: Path
) -> None:
    block = raw_block(b"important payload")
    store.put(block)
    path = block_file(root, block)
    damaged = bytearray(path.read_bytes())
    damaged[3] ^= 0x01
    path.write_bytes(damaged)

    with pytest.raises(CorruptBlockError) as info:
        store.get(block.cid)
    err = info.value
    assert err.cid == block.cid
    assert err.path == path
    assert err.reason == f"its 17 bytes hash to {cid_for(bytes(damaged), 0x55).encode()}"
    assert [err.quarantined] == quarantined(root)
    assert err.quarantined is not None
    assert err.quarantined.read_bytes() == bytes(damaged)  # kept for inspection
    assert str(err) == (
        f"block {block.cid.encode()} at {path} is corrupt: {err.reason}; moved to {err.quarantined}"
    )
    # Gone from the store: never served, not listed.
    assert not path.exists()
    assert not store.has(block.cid)
    assert list(store.iter_cids()) == []
    with pytest.raises(BlockNotFoundError):
        store.get(block.cid)


@pytest.mark.parametrize(
    ("damage", "reason_start"),
    [
        (lambda data: data[:-1], "its 9 bytes hash to "),
        (lambda data: b"", "its 0 bytes hash to "),
        (lambda data: data + b"!", "its 11 bytes hash to "),
    ],
    ids=["truncated", "empty", "appended"],
)
def test_partial_or_extended_files_are_corrupt(
    store: FileBlockStore, root: Path, damage: object, reason_start: str
) -> None:
    block = raw_block(b"0123456789")
    store.put(block)
    path = block_file(root, block)
    assert callable(damage)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptBlockError) as info:
        store.get(block.cid)
    assert info.value.reason.startswith(reason_start)
    assert len(quarantined(root)) == 1


def test_file_over_the_size_limit_is_corrupt(root: Path) -> None:
    store = FileBlockStore(root, max_block_size=100)
    block = raw_block(b"a" * 50)
    store.put(block)
    block_file(root, block).write_bytes(b"a" * 500)
    with pytest.raises(CorruptBlockError) as info:
        store.get(block.cid)
    assert info.value.reason == "file is larger than the 100-byte block size limit"


def test_each_corruption_is_quarantined_separately(store: FileBlockStore, root: Path) -> None:
    block = raw_block(b"fragile")
    for attempt in range(2):
        store.put(block)
        block_file(root, block).write_bytes(f"bad {attempt}".encode())
        with pytest.raises(CorruptBlockError):
            store.get(block.cid)
    assert sorted(p.read_bytes() for p in quarantined(root)) == [b"bad 0", b"bad 1"]
    assert all(p.name.startswith(block.cid.encode() + ".") for p in quarantined(root))


def test_put_repairs_a_corrupt_copy(store: FileBlockStore, root: Path) -> None:
    block = raw_block(b"self healing")
    store.put(block)
    block_file(root, block).write_bytes(b"self-healing")  # same size, different bytes
    store.put(block)  # a re-put checks the existing file instead of trusting it
    assert store.get(block.cid) == b"self healing"
    assert [p.read_bytes() for p in quarantined(root)] == [b"self-healing"]


def test_corrupt_block_in_a_pinned_dag_is_reported_by_gc(store: FileBlockStore, root: Path) -> None:
    leaf = dag_block({"leaf": True})
    top = dag_block({"kid": leaf.cid})
    store.put_many([leaf, top])
    store.pin(top.cid)
    block_file(root, leaf).write_bytes(b"\xa0")
    report = store.gc()
    assert [(p.root, p.cid, p.kind) for p in report.problems] == [(top.cid, leaf.cid, "corrupt")]
    assert "is corrupt" in report.problems[0].detail
    assert (report.removed, report.live) == (0, 1)
    assert [p.read_bytes() for p in quarantined(root)] == [b"\xa0"]  # quarantined, not deleted


def test_missing_pin_root_is_reported(store: FileBlockStore, root: Path) -> None:
    a, b = raw_block(b"a"), dag_block({"b": 1})
    store.put_many([a, b])
    store.pin(a.cid, recursive=False)
    store.pin(b.cid)
    block_file(root, a).unlink()  # lost behind the store's back
    block_file(root, b).unlink()
    report = store.gc()
    # Recursive pins are walked first, then direct pins are checked.
    assert [(p.root, p.cid, p.kind) for p in report.problems] == [
        (b.cid, b.cid, "missing"),
        (a.cid, a.cid, "missing"),
    ]
    assert store.pins() == {a.cid: PinMode.DIRECT, b.cid: PinMode.RECURSIVE}


# -- persistence ---------------------------------------------------------------------------


def test_reopen_keeps_blocks_and_pins(root: Path) -> None:
    leaf = raw_block(b"leaf")
    top = dag_block({"kid": leaf.cid})
    loose = raw_block(b"loose")
    first = FileBlockStore(root)
    first.put_many([leaf, top, loose])
    first.pin(top.cid)
    first.pin(loose.cid, recursive=False)
    del first

    second = FileBlockStore(root)
    assert set(second.iter_cids()) == {leaf.cid, top.cid, loose.cid}
    assert second.pins() == {top.cid: PinMode.RECURSIVE, loose.cid: PinMode.DIRECT}
    assert second.get(leaf.cid) == b"leaf"
    assert second.unpin(loose.cid) is True
    assert second.gc() == GcReport(removed=1, freed_bytes=5, live=2)

    third = FileBlockStore(root)
    assert set(third.iter_cids()) == {leaf.cid, top.cid}
    assert third.pins() == {top.cid: PinMode.RECURSIVE}


def test_damaged_pin_file_counts_as_recursive(store: FileBlockStore, root: Path) -> None:
    leaf = raw_block(b"leaf")
    top = dag_block({"kid": leaf.cid})
    store.put_many([leaf, top])
    store.pin(top.cid, recursive=False)
    (root / "pins" / top.cid.encode()).write_bytes(b"\x00garbage")
    assert store.pins() == {top.cid: PinMode.RECURSIVE}  # keeps more, never less
    assert store.gc().removed == 0


def test_foreign_files_are_ignored_and_left_alone(store: FileBlockStore, root: Path) -> None:
    block = raw_block(b"real")
    store.put(block)
    name = block.cid.encode()
    shard = root / name[-3:-1]
    other = raw_block(b"elsewhere").cid.encode()
    foreign = [
        shard / "README",
        shard / name.upper(),  # not the canonical spelling
        shard / other,  # a valid CID in the wrong shard
        root / "pins" / "notes.txt",
    ]
    for path in foreign:
        path.write_bytes(b"x")
    (root / "zz").mkdir()  # a shard dir with no blocks
    assert list(store.iter_cids()) == [block.cid]
    assert store.pins() == {}
    assert store.gc() == GcReport(removed=1, freed_bytes=4, live=0)
    assert all(path.exists() for path in foreign)


def test_concurrent_puts_from_threads(store: FileBlockStore) -> None:
    blocks = [raw_block(bytes([i % 7]) * (i + 1)) for i in range(40)]
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(len(blocks)):
                store.put(blocks[(i + offset) % len(blocks)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n * 5,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert errors == []
    assert set(store.iter_cids()) == {b.cid for b in blocks}
    for block in blocks:
        assert store.get(block.cid) == block.data


# -- durability: what gets fsynced, and in which order -------------------------------------


class SyncLog:
    """Records fsync and rename syscalls, in order, with the paths they touched."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str, str]] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            self.events.append((f"fsync-{kind}", str(Path(f"/proc/self/fd/{fd}").readlink()), ""))
            real_fsync(fd)

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            self.events.append(("rename", os.fspath(src), os.fspath(dst)))
            real_replace(src, dst)

        real_syncfs = fsio.syncfs

        def syncfs(path: Path) -> bool:
            self.events.append(("syncfs", str(path), ""))
            return real_syncfs(path)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(fsio, "syncfs", syncfs)

    def of(self, kind: str) -> list[str]:
        return [path for k, path, _ in self.events if k == kind]


def distinct_shard_blocks(count: int) -> list[Block]:
    blocks: list[Block] = []
    shards: set[str] = set()
    i = 0
    while len(blocks) < count:
        block = raw_block(f"block {i}".encode())
        i += 1
        if block.cid.encode()[-3:-1] not in shards:
            shards.add(block.cid.encode()[-3:-1])
            blocks.append(block)
    return blocks


def same_shard_block(block: Block) -> Block:
    shard = block.cid.encode()[-3:-1]
    i = 0
    while True:
        other = raw_block(f"neighbour {i}".encode())
        if other.cid.encode()[-3:-1] == shard:
            return other
        i += 1


def test_put_fsyncs_file_then_shard_then_root(
    store: FileBlockStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = raw_block(b"first")
    second = same_shard_block(first)
    log = SyncLog(monkeypatch)
    store.put(first)
    final = str(block_file(root, first))
    kinds = [k for k, _, _ in log.events]
    assert kinds == ["fsync-file", "rename", "fsync-dir", "fsync-dir"]
    tmp = log.events[0][1]
    assert log.events[1] == ("rename", tmp, final)
    assert Path(tmp).parent == Path(final).parent
    assert log.of("fsync-dir") == [str(Path(final).parent), str(root)]  # new shard: root too

    log.events.clear()
    store.put(second)  # an existing shard: no root fsync
    assert block_file(root, second).parent == Path(final).parent
    assert log.of("fsync-dir") == [str(Path(final).parent)]

    log.events.clear()
    store.put(first)  # already there and intact: nothing written, nothing synced
    assert log.events == []


def test_put_many_flushes_the_whole_batch_twice_around_its_renames(
    store: FileBlockStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not fsio.syncfs(root):
        pytest.skip("no syncfs(2) here: the fallback is tested below")
    blocks = distinct_shard_blocks(5)
    store.put_many(blocks[:2])  # some shard directories exist, others are created
    log = SyncLog(monkeypatch)
    batch = blocks + [raw_block(b"late " + b.data) for b in blocks]
    store.put_many(batch)

    renames = [i for i, e in enumerate(log.events) if e[0] == "rename"]
    written = batch[2:]  # the first two were stored already
    assert [log.events[i][2] for i in renames] == [str(block_file(root, b)) for b in written]
    syncs = [i for i, e in enumerate(log.events) if e[0] == "syncfs"]
    # One flush after every temp file is written and before any rename (data and inodes
    # durable), one after the last rename (the directory entries); no per-file fsync.
    assert len(syncs) == 2
    assert syncs[0] < renames[0] and renames[-1] < syncs[1]
    assert log.of("fsync-file") == []
    assert log.of("fsync-dir") == [str(root)]  # shard directories were created
    for block in batch:
        assert store.get(block.cid) == block.data
    assert not [p for p in root.rglob("*.tmp")]


def test_put_many_without_syncfs_fsyncs_every_file_and_each_dir_once(
    store: FileBlockStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fsio, "_SYNCFS", None)
    blocks = distinct_shard_blocks(5)
    extra = [raw_block(f"{b.cid.encode()} #{i}".encode()) for i, b in enumerate(blocks[:3])]
    store.put_many(extra)  # creates some shard dirs first
    log = SyncLog(monkeypatch)
    batch = blocks + [raw_block(b"late " + b.data) for b in blocks]
    store.put_many(batch)

    renames = [(src, dst) for k, src, dst in log.events if k == "rename"]
    assert [dst for _, dst in renames] == [str(block_file(root, b)) for b in batch]
    for src, _dst in renames:
        fsync_at = log.events.index(("fsync-file", src, ""))
        assert fsync_at < log.events.index(("rename", src, _dst))
    assert len(log.of("fsync-file")) == len(batch)
    # Shard directory fsyncs: all after the last rename, one per touched shard.
    last_rename = max(i for i, e in enumerate(log.events) if e[0] == "rename")
    shard_syncs = [i for i, e in enumerate(log.events) if e[0] == "fsync-dir" and e[1] != str(root)]
    assert min(shard_syncs) > last_rename
    touched = sorted({str(block_file(root, b).parent) for b in batch})
    assert log.of("fsync-dir") == [str(root), *touched]  # root: shards were created


def test_put_many_of_blocks_already_stored_syncs_nothing(
    store: FileBlockStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = [raw_block(bytes([i])) for i in range(10)]
    store.put_many(blocks)
    log = SyncLog(monkeypatch)
    store.put_many(blocks)
    assert log.events == []


def test_dag_cbor_cid_over_garbage_is_still_hash_checked(
    store: FileBlockStore,
) -> None:
    # The store is codec-agnostic on put (like Kubo's blockstore): it checks the hash only.
    junk = b"\xff"
    block = Block(cid_for(junk, DAG_CBOR), junk)
    store.put(block)
    assert store.get(block.cid) == junk
