"""`FileBlockStore`: blocks in the node repo, written crash-safely, verified on read.

Blocks are appended to pack files (`packs.py`, ADR 0009): a batch is one append and one
fdatasync, durable when `put`/`put_many` returns, and a crash leaves at most a torn tail
that is never read. Blocks of older repos, one file each under a shard directory
(`layout.py`), stay readable; new blocks never go there. Pins are one file each,
written by `atomic_write` (temp file, fsync, rename, directory fsync).

Concurrency: the store is safe for several threads and processes (each process appends
to packs of its own; a lookup that misses reads what other processes appended since).
`gc` must not race a caller that has put blocks but not yet pinned them, nor another
process writing blocks: the later `BlockService` serialises the first, as Kubo's GC lock
does, and one node process owns a repo. Filesystem failures (EIO, EACCES, ENOSPC…)
propagate as `OSError`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

from qflow_node.codec import CID, MAX_BLOCK_SIZE, Block, cid_codec
from qflow_node.fsio import atomic_write, fsync_dir
from qflow_node.store.collect import mark_live
from qflow_node.store.errors import (
    BlockNotFoundError,
    CorruptBlockError,
    PinnedBlockError,
    StoreNotFoundError,
)
from qflow_node.store.layout import Layout, is_temp, parse_name
from qflow_node.store.model import BlockStat, GcReport, PinMode
from qflow_node.store.packs import PACKS_DIR, Packs
from qflow_node.store.validate import check_block, corruption, is_storable

# A temp file older than this cannot belong to a live write (a write of a block that
# fits the size limit takes milliseconds), so opening the store removes it. Younger ones
# may belong to another process writing into the same store right now.
STALE_TEMP_SECONDS: Final = 600.0


class FileBlockStore:
    """The node's on-disk block store. `root` must exist (`qflow init` creates it)."""

    def __init__(self, root: Path, *, max_block_size: int = MAX_BLOCK_SIZE) -> None:
        root = Path(root)
        if not root.is_dir():
            raise StoreNotFoundError(f"no block store at {root}: the directory does not exist")
        self._layout = Layout(root)
        self._packs = Packs(root / PACKS_DIR)
        self._max = max_block_size
        created = [d for d in (self._layout.pins, self._layout.quarantine) if _mkdir(d)]
        if created:
            fsync_dir(root)
        self.clean_temp()

    def __repr__(self) -> str:
        return f"FileBlockStore({str(self.root)!r})"

    @property
    def root(self) -> Path:
        return self._layout.root

    @property
    def max_block_size(self) -> int:
        return self._max

    # -- blocks -------------------------------------------------------------------------

    def put(self, block: Block) -> None:
        self.put_many([block])

    def put_many(self, blocks: Iterable[Block]) -> None:
        batch = list(blocks)
        for block in batch:  # refuse the whole batch before writing any of it
            check_block(block, self._max)
        self._packs.put_many(batch)

    def get(self, cid: CID) -> bytes:
        if not is_storable(cid):
            raise BlockNotFoundError(cid)
        where = self._packs.locate(cid)
        if where is not None:
            data = self._packs.read(where)
            reason = corruption(cid, data, self._max)
            if reason is None:
                return data
            self._packs.forget(cid)  # never served again; a put appends a good copy
            raise CorruptBlockError(cid, self._packs.directory / where.pack, reason, None)
        return self._read_verified(cid, self._file(cid))

    def has(self, cid: CID) -> bool:
        if not is_storable(cid):
            return False
        return self._packs.locate(cid) is not None or self._file(cid).is_file()

    def stat(self, cid: CID) -> BlockStat:
        if not is_storable(cid):
            raise BlockNotFoundError(cid)
        where = self._packs.locate(cid)
        if where is not None:
            return BlockStat(cid, where.length, cid_codec(cid))
        try:
            size = self._file(cid).stat().st_size
        except FileNotFoundError:
            raise BlockNotFoundError(cid) from None
        return BlockStat(cid, size, cid_codec(cid))

    def delete(self, cid: CID) -> bool:
        if not is_storable(cid):
            return False
        name = cid.encode()
        if self._layout.pin_path(name).exists():
            raise PinnedBlockError(cid)
        packed = self._packs.delete(cid)
        path = self._layout.block_path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return packed
        fsync_dir(path.parent)
        return True

    def iter_cids(self) -> Iterator[CID]:
        packed = set(self._packs.cids())
        for key in packed:
            yield CID(key)
        for shard in self._layout.shard_dirs():
            for cid, _entry in self._layout.iter_blocks(shard):
                if cid.cid_bytes not in packed:
                    yield cid

    def close(self) -> None:
        """Close the pack files (the store stays usable: they reopen on demand)."""
        self._packs.close()

    # -- pins ---------------------------------------------------------------------------

    def pin(self, cid: CID, recursive: bool = True) -> None:
        if not self.has(cid):
            raise BlockNotFoundError(cid)
        mode = PinMode.RECURSIVE if recursive else PinMode.DIRECT
        path = self._layout.pin_path(cid.encode())
        content = f"{mode.value}\n".encode()
        try:
            if path.read_bytes() == content:
                return
        except FileNotFoundError:
            pass
        atomic_write(path, content)

    def unpin(self, cid: CID) -> bool:
        if not is_storable(cid):
            return False
        try:
            self._layout.pin_path(cid.encode()).unlink()
        except FileNotFoundError:
            return False
        fsync_dir(self._layout.pins)
        return True

    def pins(self) -> dict[CID, PinMode]:
        try:
            with os.scandir(self._layout.pins) as it:
                names = [e.name for e in it]
        except FileNotFoundError:
            return {}
        result: dict[CID, PinMode] = {}
        for name in names:
            cid = parse_name(name)
            if cid is None:
                continue
            try:
                text = self._layout.pin_path(name).read_text(errors="replace").strip()
            except FileNotFoundError:  # unpinned meanwhile
                continue
            # Anything but "direct" counts as recursive: a damaged pin file keeps more
            # blocks alive rather than fewer.
            result[cid] = PinMode.DIRECT if text == PinMode.DIRECT.value else PinMode.RECURSIVE
        return result

    def gc(self) -> GcReport:
        live, problems = mark_live(self.pins(), self.has, self.get, max_block_size=self._max)
        removed: set[CID] = set()
        freed = 0
        dirty: set[Path] = set()
        try:
            for shard in self._layout.shard_dirs():
                for cid, entry in self._layout.iter_blocks(shard):
                    if cid in live:
                        continue
                    try:
                        size = entry.stat().st_size
                        Path(entry.path).unlink()
                    except FileNotFoundError:  # deleted meanwhile
                        continue
                    removed.add(cid)
                    freed += size
                    dirty.add(shard)
        finally:
            for directory in sorted(dirty):
                fsync_dir(directory)
        packed, packed_bytes = self._packs.compact(live)
        removed |= packed  # a block both packed and in a file counts once
        freed += packed_bytes
        self.clean_temp()
        return GcReport(
            removed=len(removed), freed_bytes=freed, live=len(live), problems=tuple(problems)
        )

    # -- maintenance --------------------------------------------------------------------

    def clean_temp(self, older_than: float = STALE_TEMP_SECONDS) -> int:
        """Remove temp files left by crashed writes, if older than `older_than` seconds.

        Runs on open and after gc. `older_than=0` removes every temp file: only safe when
        no other process is writing into this store.
        """
        cutoff = time.time() - older_than
        removed = 0
        for directory in [*self._layout.shard_dirs(), self._layout.pins]:
            try:
                with os.scandir(directory) as it:
                    temps = [e for e in it if is_temp(e.name)]
            except FileNotFoundError:
                continue
            for entry in temps:
                try:
                    if entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                        Path(entry.path).unlink()
                        removed += 1
                except FileNotFoundError:  # its writer renamed or removed it meanwhile
                    continue
        return removed

    # -- internals ----------------------------------------------------------------------

    def _file(self, cid: CID) -> Path:
        """Where an older repo keeps the block as a file of its own."""
        return self._layout.block_path(cid.encode())

    def _read_verified(self, cid: CID, path: Path) -> bytes:
        try:
            with path.open("rb") as fh:
                ident = os.fstat(fh.fileno())
                data = fh.read(self._max + 1)
        except FileNotFoundError:
            raise BlockNotFoundError(cid) from None
        reason = corruption(cid, data, self._max)
        if reason is None:
            return data
        raise CorruptBlockError(cid, path, reason, self._quarantine(path, ident))

    def _quarantine(self, path: Path, ident: os.stat_result) -> Path | None:
        """Move a corrupt file aside (kept for inspection, never served again)."""
        try:
            current = path.stat()
        except FileNotFoundError:
            return None
        if (current.st_dev, current.st_ino) != (ident.st_dev, ident.st_ino):
            return None  # a concurrent put replaced it with a fresh copy: leave that alone
        _mkdir(self._layout.quarantine)
        target = self._layout.quarantine / f"{path.name}.{time.time_ns()}"
        try:
            path.replace(target)
        except FileNotFoundError:
            return None
        fsync_dir(self._layout.quarantine)
        fsync_dir(path.parent)
        return target


def _mkdir(directory: Path) -> bool:
    """Create `directory`; True if this call created it (its parent then needs an fsync)."""
    try:
        directory.mkdir()
    except FileExistsError:
        return False
    return True
