"""FileBlockStore specifics: layout, verify-on-read, quarantine, persistence, durability.

New blocks go to pack files (test_packs.py has their own tests); the verify-on-read,
quarantine and foreign-file tests here use block files of the older per-block layout,
written by `put_file`, which older repos still hold and the store still reads."""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path

import pytest

from qflow_node import appendlog
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


def put_file(root: Path, block: Block, data: bytes | None = None) -> Path:
    """Store the block as an older repo did: a file of its own in its shard directory
    (`data` instead of the block's bytes to plant a corrupt copy)."""
    path = block_file(root, block)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(block.data if data is None else data)
    return path


def quarantined(root: Path) -> list[Path]:
    return sorted((root / "quarantine").iterdir())


# -- layout ------------------------------------------------------------------------------


def test_layout_on_disk(store: FileBlockStore, root: Path) -> None:
    block = raw_block(b"where am I")
    store.put(block)
    name = block.cid.encode()
    assert name == "bafkreihpapo7robbqigl3p3g5hhapcdblnnab7eeqvceq2dqkq4nngm5si"
    [pack] = (root / "packs").iterdir()  # new blocks are appended to a pack, no file each
    assert re.fullmatch(rf"\d{{20}}-{os.getpid()}\.pack", pack.name)
    content = pack.read_bytes()
    assert content.startswith(appendlog.MAGIC)
    assert block.cid.cid_bytes + b"where am I" in content
    assert not block_file(root, block).exists()
    store.pin(block.cid)
    assert (root / "pins" / name).read_bytes() == b"recursive\n"
    store.pin(block.cid, recursive=False)
    assert (root / "pins" / name).read_bytes() == b"direct\n"
    assert sorted(p.name for p in root.iterdir()) == ["packs", "pins", "quarantine"]


def test_legacy_block_files_are_read(store: FileBlockStore, root: Path) -> None:
    block = raw_block(b"where am I")
    path = put_file(root, block)
    assert path == root / "5s" / block.cid.encode()  # the two characters before the last
    assert store.has(block.cid)
    assert store.get(block.cid) == b"where am I"
    assert store.stat(block.cid).size == 10
    assert list(store.iter_cids()) == [block.cid]


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
    path = put_file(root, block)
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
    assert callable(damage)
    put_file(root, block, damage(block.data))
    with pytest.raises(CorruptBlockError) as info:
        store.get(block.cid)
    assert info.value.reason.startswith(reason_start)
    assert len(quarantined(root)) == 1


def test_file_over_the_size_limit_is_corrupt(root: Path) -> None:
    store = FileBlockStore(root, max_block_size=100)
    block = raw_block(b"a" * 50)
    put_file(root, block, b"a" * 500)
    with pytest.raises(CorruptBlockError) as info:
        store.get(block.cid)
    assert info.value.reason == "file is larger than the 100-byte block size limit"


def test_each_corruption_is_quarantined_separately(store: FileBlockStore, root: Path) -> None:
    block = raw_block(b"fragile")
    for attempt in range(2):
        put_file(root, block, f"bad {attempt}".encode())
        with pytest.raises(CorruptBlockError):
            store.get(block.cid)
    assert sorted(p.read_bytes() for p in quarantined(root)) == [b"bad 0", b"bad 1"]
    assert all(p.name.startswith(block.cid.encode() + ".") for p in quarantined(root))


def test_put_repairs_a_corrupt_copy(store: FileBlockStore, root: Path) -> None:
    block = raw_block(b"self healing")
    path = put_file(root, block, b"self-healing")  # same size, different bytes
    store.put(block)  # appended to a pack, whose copy is served from now on
    assert store.get(block.cid) == b"self healing"
    assert FileBlockStore(root).get(block.cid) == b"self healing"
    assert list(store.iter_cids()) == [block.cid]  # listed once
    # The bad file is never read again (gc removes it with the block); not quarantined.
    assert path.read_bytes() == b"self-healing"
    assert quarantined(root) == []


def test_corrupt_block_in_a_pinned_dag_is_reported_by_gc(store: FileBlockStore, root: Path) -> None:
    leaf = dag_block({"leaf": True})
    top = dag_block({"kid": leaf.cid})
    put_file(root, leaf, b"\xa0")
    put_file(root, top)
    store.pin(top.cid)
    report = store.gc()
    assert [(p.root, p.cid, p.kind) for p in report.problems] == [(top.cid, leaf.cid, "corrupt")]
    assert "is corrupt" in report.problems[0].detail
    assert (report.removed, report.live) == (0, 1)
    assert [p.read_bytes() for p in quarantined(root)] == [b"\xa0"]  # quarantined, not deleted


def test_missing_pin_root_is_reported(store: FileBlockStore, root: Path) -> None:
    a, b = raw_block(b"a"), dag_block({"b": 1})
    put_file(root, a)
    put_file(root, b)
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
    put_file(root, block)
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


# -- durability: what gets written and flushed, in which order ------------------------------


class SyncLog:
    """Records the write, flush and rename syscalls, in order, with the paths they touched."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        self.written: list[bytes] = []
        real_fsync, real_fdatasync, real_pwrite = os.fsync, os.fdatasync, os.pwrite
        real_replace = os.replace

        def fsync(fd: int) -> None:
            kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            self.events.append((f"fsync-{kind}", fd_path(fd)))
            real_fsync(fd)

        def fdatasync(fd: int) -> None:
            self.events.append(("fdatasync", fd_path(fd)))
            real_fdatasync(fd)

        def pwrite(fd: int, data: bytes, offset: int) -> int:
            self.events.append(("pwrite", fd_path(fd)))
            self.written.append(bytes(data))
            return real_pwrite(fd, data, offset)

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            self.events.append(("rename", f"{os.fspath(src)} -> {os.fspath(dst)}"))
            real_replace(src, dst)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(os, "replace", replace)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


def fd_path(fd: int) -> str:
    return str(Path(f"/proc/self/fd/{fd}").readlink())


def only_pack(root: Path) -> str:
    [pack] = (root / "packs").iterdir()
    return str(pack)


def test_first_put_creates_the_pack_durably(
    store: FileBlockStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = SyncLog(monkeypatch)
    block = raw_block(b"first")
    store.put(block)
    pack = only_pack(root)
    assert log.events == [
        ("fsync-dir", str(root)),  # packs/ was created: its entry in the root
        ("pwrite", pack),  # the pack's header
        ("fsync-file", pack),
        ("fsync-dir", str(root / "packs")),  # the pack's entry
        ("pwrite", pack),  # the block
        ("fdatasync", pack),
    ]
    assert log.written[0] == appendlog.MAGIC
    assert log.written[1] == appendlog.frame(b"\x01" + bytes([36]) + block.cid.cid_bytes + b"first")

    # Another store (another process) on the same root starts a pack of its own; packs/
    # exists already, so the root is not flushed again.
    other = FileBlockStore(root)
    log.events.clear()
    other.put(raw_block(b"second"))
    [new] = {str(p) for p in (root / "packs").iterdir()} - {pack}
    assert log.events == [
        ("pwrite", new),
        ("fsync-file", new),
        ("fsync-dir", str(root / "packs")),
        ("pwrite", new),
        ("fdatasync", new),
    ]


def test_put_many_is_one_write_and_one_fdatasync(
    store: FileBlockStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put(raw_block(b"opens the pack"))
    pack = only_pack(root)
    log = SyncLog(monkeypatch)
    blocks = [raw_block(f"block {i}".encode()) for i in range(20)]
    store.put_many(blocks + blocks[:5])  # repeats within a batch are written once
    assert log.events == [("pwrite", pack), ("fdatasync", pack)]
    [written] = log.written
    for block in blocks:
        assert written.count(block.cid.cid_bytes + block.data) == 1
    for block in blocks:
        assert store.get(block.cid) == block.data

    log.events.clear()
    store.put_many(blocks)  # all stored already: nothing written, nothing flushed
    store.put(blocks[0])
    assert log.events == []

    more = [raw_block(b"late"), blocks[3]]
    store.put_many(more)  # only the new block is written
    assert log.events == [("pwrite", pack), ("fdatasync", pack)]
    assert blocks[3].data not in log.written[-1]


def test_pin_fsyncs_file_then_renames_then_fsyncs_pins(
    store: FileBlockStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = raw_block(b"pinned")
    store.put(block)
    log = SyncLog(monkeypatch)
    store.pin(block.cid)
    final = str(root / "pins" / block.cid.encode())
    assert log.kinds() == ["fsync-file", "rename", "fsync-dir"]
    tmp = log.events[0][1]
    assert Path(tmp).parent == root / "pins"
    assert log.events[1:] == [("rename", f"{tmp} -> {final}"), ("fsync-dir", str(root / "pins"))]
    log.events.clear()
    store.pin(block.cid)  # unchanged: nothing written
    assert log.events == []


def test_dag_cbor_cid_over_garbage_is_still_hash_checked(
    store: FileBlockStore,
) -> None:
    # The store is codec-agnostic on put (like Kubo's blockstore): it checks the hash only.
    junk = b"\xff"
    block = Block(cid_for(junk, DAG_CBOR), junk)
    store.put(block)
    assert store.get(block.cid) == junk
