"""Block packs: many blocks appended to one file instead of one file each (ADR 0009).

    ROOT/packs/<time_ns>-<pid>.pack   an `AppendLog` of entries, written by one process

An entry is `<kind u8><cid length u8><cid bytes><data>`: kind 1 stores the block, kind 0
deletes it. A batch of blocks is one append and one fdatasync; one file per block cost
an inode each (20-600 µs of CPU apiece on this project's machines, ADR 0009).

Each process appends only to packs it created (named by creation time and pid), so
writers never share a file; any process reads them all. The index (CID → pack, offset,
length) lives in memory: built by reading the packs on first use, kept by this
process's writes, and brought up to date from disk when a lookup misses (another process
may have written the block since). Entries apply in pack-name order, then file order: an
entry that overrides one this process has seen (a delete, or a put after a delete or of
a copy found corrupt) goes to a pack named after that one's, started if need be. So a
delete and a put of the same block by two processes at the same moment may apply in
either order, and a put is a no-op in a process that has not seen the block deleted
since it last saw it. The bytes are checked against their CID on every read
(`FileBlockStore`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final, NamedTuple

from qflow_node.appendlog import AppendLog, LogFormatError, entries, parse
from qflow_node.codec import CID, Block
from qflow_node.fsio import fsync_dir
from qflow_node.log import get_logger

PACKS_DIR: Final = "packs"
PACK_SUFFIX: Final = ".pack"
MAX_PACK_BYTES: Final = 64 * 1024 * 1024  # a new pack is started past this size
_PUT: Final = 1
_DELETE: Final = 0


class Located(NamedTuple):
    pack: str
    offset: int  # of the block's data in the pack file
    length: int


class Packs:
    """The packs of one block store: index, reads, and this process's appends."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._index: dict[bytes, Located] | None = None  # cid bytes -> where; lazy
        self._scanned: dict[str, int] = {}  # pack name -> where its read entries end
        self._foreign: set[str] = set()  # files named *.pack that are not packs: left alone
        # cid bytes -> the pack of an entry seen and no longer indexed (a delete, or a
        # copy found corrupt): a put of the block must go to a pack named after it.
        self._superseded: dict[bytes, str] = {}
        self._readers: dict[str, int] = {}  # pack name -> read-only fd
        self._writer: AppendLog | None = None

    # -- reads --------------------------------------------------------------------------

    def locate(self, cid: CID) -> Located | None:
        """Where the block is, looking on disk again if this process has not seen it."""
        key = cid.cid_bytes
        with self._lock:
            found = self._loaded().get(key)
            if found is None:
                self._refresh()
                found = self._loaded().get(key)
        return found

    def read(self, where: Located) -> bytes:
        with self._lock:
            fd = self._reader(where.pack)
        return os.pread(fd, where.length, where.offset)

    def cids(self) -> list[bytes]:
        with self._lock:
            self._refresh()
            return list(self._loaded())

    def forget(self, cid: CID) -> None:
        """Stop serving a copy found corrupt (a later put appends a good one)."""
        with self._lock:
            where = self._loaded().pop(cid.cid_bytes, None)
            if where is not None:
                self._superseded[cid.cid_bytes] = where.pack

    # -- writes -------------------------------------------------------------------------

    def put_many(self, blocks: Iterable[Block]) -> None:
        """Append the blocks not indexed yet; durable when this returns."""
        with self._lock:
            index = self._loaded()
            fresh: dict[bytes, Block] = {}
            for block in blocks:
                key = block.cid.cid_bytes
                if key not in index and key not in fresh:
                    fresh[key] = block
            if not fresh:
                return
            after = max((self._superseded.get(key, "") for key in fresh), default="")
            self._append_puts({key: block.data for key, block in fresh.items()}, after)
            for key in fresh:
                self._superseded.pop(key, None)

    def delete(self, cid: CID) -> bool:
        key = cid.cid_bytes
        with self._lock:
            self._refresh()
            index = self._loaded()
            if key not in index:
                return False
            # After every pack seen, not just the indexed copy's: others may hold copies.
            writer = self._writable(max(self._scanned, default=""))
            writer.append([_entry(_DELETE, key, b"")])
            self._scanned[writer.path.name] = writer.size
            del index[key]
            return True

    def compact(self, live: set[CID]) -> tuple[set[CID], int]:
        """Drop every packed block not in `live`: the live ones are copied into a new
        pack (durable first), then the old packs are removed. The blocks removed and the
        bytes freed. Like gc itself, it must not race another process writing blocks."""
        with self._lock:
            self._refresh()
            index = self._loaded()
            keep = {c.cid_bytes for c in live}
            dead = [key for key in index if key not in keep]
            if not dead:
                return set(), 0
            freed = sum(index[key].length for key in dead)
            kept = {key: self._read_locked(index[key]) for key in index if key in keep}
            old = sorted(self._scanned)
            self._close_all()
            self._index, self._scanned, self._superseded = {}, {}, {}
            if kept:
                self._append_puts(kept, old[-1])
            for name in old:
                (self.directory / name).unlink(missing_ok=True)
            fsync_dir(self.directory)
            return {CID(key) for key in dead}, freed

    def close(self) -> None:
        with self._lock:
            self._close_all()

    # -- internals ----------------------------------------------------------------------

    def _append_puts(self, blocks: dict[bytes, bytes], after: str) -> None:
        """Append and index blocks (cid bytes -> data) in one durable batch, in a pack
        named after `after`. Under `_lock`, the index loaded."""
        writer = self._writable(after)
        offsets = writer.append([_entry(_PUT, key, data) for key, data in blocks.items()])
        index = self._loaded()
        for (key, data), offset in zip(blocks.items(), offsets, strict=True):
            index[key] = _located(writer.path.name, offset, key, len(data))
        self._scanned[writer.path.name] = writer.size

    def _loaded(self) -> dict[bytes, Located]:
        if self._index is None:
            self._index = {}
            self._refresh()
        return self._index

    def _refresh(self) -> None:
        """Read what was appended to the packs since we last looked."""
        index = self._loaded()  # (on first use, `_loaded` comes back here with it empty)
        try:
            names = sorted(p.name for p in self.directory.iterdir() if p.name.endswith(PACK_SUFFIX))
        except FileNotFoundError:
            return
        mine = self._writer.path.name if self._writer is not None else None
        for name in names:
            if name == mine or name in self._foreign:
                continue  # everything in ours was written (and indexed) by us
            try:
                fd = self._reader(name)
            except FileNotFoundError:  # removed by a gc meanwhile
                continue
            start = self._scanned.get(name, 0)
            size = os.fstat(fd).st_size
            if size <= start:
                continue
            data = os.pread(fd, size - start, start)
            path = self.directory / name
            try:
                found, end = parse(path, data) if start == 0 else entries(data, start)
            except LogFormatError as exc:  # not a pack of ours: never read (nor removed)
                get_logger("store").warning("store.foreign_pack", path=str(path), error=str(exc))
                self._foreign.add(name)
                continue
            for offset, payload in found:
                if not _apply(index, name, offset, payload):
                    get_logger("store").warning(
                        "store.malformed_pack_entry", path=str(path), offset=offset
                    )
                elif payload[0] == _DELETE:
                    self._superseded[payload[2 : 2 + payload[1]]] = name
            self._scanned[name] = end

    def _reader(self, name: str) -> int:
        fd = self._readers.get(name)
        if fd is None:
            fd = os.open(self.directory / name, os.O_RDONLY)
            self._readers[name] = fd
        return fd

    def _read_locked(self, where: Located) -> bytes:
        return os.pread(self._reader(where.pack), where.length, where.offset)

    def _writable(self, after: str = "") -> AppendLog:
        """The pack to append to: a new one if ours is full or named before `after`."""
        writer = self._writer
        if writer is not None and writer.size < MAX_PACK_BYTES and writer.path.name >= after:
            return writer
        if writer is not None:
            writer.close()
        if not self.directory.is_dir():
            self.directory.mkdir(exist_ok=True)
            fsync_dir(self.directory.parent)
        stamp = time.time_ns()
        if after[:20].isdigit():  # named after it even if the clock went back
            stamp = max(stamp, int(after[:20]) + 1)
        name = f"{stamp:020d}-{os.getpid()}{PACK_SUFFIX}"
        self._writer = AppendLog.open(self.directory / name)
        self._scanned[name] = self._writer.size
        return self._writer

    def _close_all(self) -> None:
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _entry(kind: int, key: bytes, data: bytes) -> bytes:
    return bytes((kind, len(key))) + key + data


def _located(pack: str, entry_offset: int, key: bytes, length: int) -> Located:
    """Where the data of an entry (`_entry`) that starts at `entry_offset` lies."""
    return Located(pack, entry_offset + 2 + len(key), length)


def _apply(index: dict[bytes, Located], pack: str, offset: int, payload: bytes) -> bool:
    """Index one entry; False for a malformed one (its CRC held, so a bug wrote it)."""
    if len(payload) < 2 or payload[0] not in (_PUT, _DELETE) or len(payload) < 2 + payload[1]:
        return False
    key = payload[2 : 2 + payload[1]]
    if payload[0] == _PUT:
        index[key] = _located(pack, offset, key, len(payload) - 2 - len(key))
    else:
        index.pop(key, None)
    return True


__all__ = ["Located", "Packs"]
