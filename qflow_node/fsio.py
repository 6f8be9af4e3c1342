"""Crash-safe file writes shared by every part of the node that persists state."""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path


def _find_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library already loaded
        found: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):  # not Linux (or no libc found): fsync file by file
        return None
    return found


_SYNCFS = _find_syncfs()


def syncfs(path: Path) -> bool:
    """Make everything written on the filesystem holding `path` durable in one call
    (Linux syncfs(2)): file data, new inodes and directory entries alike. False, and
    nothing done, where the call does not exist. OSError if the flush failed."""
    if _SYNCFS is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), str(path))
    finally:
        os.close(fd)
    return True


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry so a rename or create inside it survives a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, sync_dir: bool = True) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one.

    Temp file in the same directory, write, fsync, chmod, rename over the target, then
    fsync the directory (skip that with `sync_dir=False` when the caller batches it).
    """
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(directory)


def atomic_write_many(items: Sequence[tuple[Path, bytes]], *, mode: int = 0o644) -> None:
    """`atomic_write` for several files (their directories must exist), made durable
    together (ADR 0007): every temp file written, one `syncfs`, every rename, one
    `syncfs` - two flushes for the whole batch instead of two fsyncs per file. A crash
    leaves each file either absent or whole, as with `atomic_write`. Where syncfs does
    not exist, each file is fsynced before its rename and each directory once after."""
    if not items:
        return
    if _SYNCFS is None:
        for path, data in items:
            atomic_write(path, data, mode=mode, sync_dir=False)
        for directory in sorted({path.parent for path, _ in items}):
            fsync_dir(directory)
        return
    temps: list[tuple[Path, Path]] = []
    renamed = 0
    try:
        for path, data in items:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append((Path(tmp_name), path))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            temps[-1][0].chmod(mode)
        syncfs(items[0][0].parent)  # the data and the temp inodes, before any rename
        for tmp, path in temps:
            tmp.replace(path)
            renamed += 1
    except BaseException:
        for tmp, _ in temps[renamed:]:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    finally:
        if renamed:  # the renames (even of a batch cut short) must become durable too
            syncfs(items[0][0].parent)
