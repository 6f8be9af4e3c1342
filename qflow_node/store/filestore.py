"""`FileBlockStore`: blocks as files in the node repo, written crash-safely, verified on read.

Crash safety: every block and pin is written by `atomic_write` (temp file in the target
directory, write, fsync, rename, directory fsync), so after a crash a file either holds
the whole block or does not exist. `put` returns only once the file, its directory entry
and (when a shard directory was created) the root's entry are on disk. `put_many` makes
the whole batch durable together with `atomic_write_many` (two filesystem flushes for
the batch, ADR 0007).

Concurrency: the store is safe for several threads and processes (renames are atomic and
a block's content never changes). `gc` must not race a caller that has put blocks but not
yet pinned them: the later `BlockService` serialises the two, as Kubo's GC lock does.
Filesystem failures (EIO, EACCES, ENOSPC…) propagate as `OSError`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

from qflow_node.codec import CID, MAX_BLOCK_SIZE, Block, cid_codec
from qflow_node.fsio import atomic_write, atomic_write_many, fsync_dir
from qflow_node.store.collect import mark_live
from qflow_node.store.errors import (
    BlockNotFoundError,
    CorruptBlockError,
    PinnedBlockError,
    StoreNotFoundError,
)
from qflow_node.store.layout import Layout, is_temp, parse_name
from qflow_node.store.model import BlockStat, GcReport, PinMode
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
        check_block(block, self._max)
        _wrote, new_shard = self._write(block, sync_dir=True)
        if new_shard:
            fsync_dir(self.root)

    def put_many(self, blocks: Iterable[Block]) -> None:
        batch = list(blocks)
        for block in batch:  # refuse the whole batch before writing any of it
            check_block(block, self._max)
        writes: dict[Path, bytes] = {}
        for block in batch:
            path = self._layout.block_path(block.cid.encode())
            if path not in writes and not self._present(block.cid, path):
                writes[path] = block.data
        if [shard for shard in {path.parent for path in writes} if _mkdir(shard)]:
            fsync_dir(self.root)  # the new shard directories' entries
        atomic_write_many(list(writes.items()))

    def get(self, cid: CID) -> bytes:
        if not is_storable(cid):
            raise BlockNotFoundError(cid)
        return self._read_verified(cid, self._layout.block_path(cid.encode()))

    def has(self, cid: CID) -> bool:
        return is_storable(cid) and self._layout.block_path(cid.encode()).is_file()

    def stat(self, cid: CID) -> BlockStat:
        if not is_storable(cid):
            raise BlockNotFoundError(cid)
        try:
            size = self._layout.block_path(cid.encode()).stat().st_size
        except FileNotFoundError:
            raise BlockNotFoundError(cid) from None
        return BlockStat(cid, size, cid_codec(cid))

    def delete(self, cid: CID) -> bool:
        if not is_storable(cid):
            return False
        name = cid.encode()
        if self._layout.pin_path(name).exists():
            raise PinnedBlockError(cid)
        path = self._layout.block_path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(path.parent)
        return True

    def iter_cids(self) -> Iterator[CID]:
        for shard in self._layout.shard_dirs():
            for cid, _entry in self._layout.iter_blocks(shard):
                yield cid

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
        removed = freed = 0
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
                    removed += 1
                    freed += size
                    dirty.add(shard)
        finally:
            for directory in sorted(dirty):
                fsync_dir(directory)
        self.clean_temp()
        return GcReport(
            removed=removed, freed_bytes=freed, live=len(live), problems=tuple(problems)
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

    def _write(self, block: Block, *, sync_dir: bool) -> tuple[bool, bool]:
        """Write one checked block. Returns (file written, root entry needs an fsync)."""
        path = self._layout.block_path(block.cid.encode())
        if self._present(block.cid, path):
            return False, False
        try:
            atomic_write(path, block.data, sync_dir=sync_dir)
        except FileNotFoundError:
            # First block of this shard. fsync the root even if a concurrent writer made
            # the directory: our put must not return before its entry is durable.
            path.parent.mkdir(exist_ok=True)
            atomic_write(path, block.data, sync_dir=sync_dir)
            return True, True
        return True, False

    def _present(self, cid: CID, path: Path) -> bool:
        """Whether a good copy of the block is stored (a corrupt one is quarantined)."""
        try:
            self._read_verified(cid, path)
        except (BlockNotFoundError, CorruptBlockError):
            return False  # absent, or corrupt and now quarantined: (re)write it
        return True

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
