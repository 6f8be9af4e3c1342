"""`AppendLog`: one append-only file of framed entries, made durable with one fdatasync.

Creating a file costs far more than appending to one: a new inode, a directory entry,
and on ext4 an inode search that measured 20-600 µs of CPU per file on this project's
machines, against ~1 µs for an append and ~60 µs for the fdatasync of a whole batch
(ADR 0009). The block packs and the heads journal are such logs.

Layout: an 8-byte header (`MAGIC`), then entries of `<u32 length><u32 crc32><payload>`
(little-endian; the CRC-32 is of the payload). An entry is whole or it is not there:

* `append` writes a batch with one `write` and one `fdatasync`; it returns only once the
  batch is durable.
* A crash mid-append can leave a torn tail: a short frame, a payload cut off, a payload
  whose CRC does not match, or zeros (pages of an unsynced batch reach the disk in any
  order). `scan` stops at the first such frame; the entries before it are intact. (An
  entry damaged in place, with a whole entry right after it, is skipped instead.) A
  batch cut short by a crash may keep its first entries: it was not acknowledged, so
  its callers must accept either (a block or a head set is whole on its own). The
  writer cuts the tail off when it opens the log, so nothing is appended after garbage.

One process appends to a given log (nothing here stops a second one: the block packs
use a file per process, the heads journal a lock file); any number may read it. A
reader may see a batch being written as a torn tail: it is simply not there yet.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from qflow_node.fsio import fsync_dir

MAGIC: Final = b"QFLOG\x00\x01\n"  # format name and version 1
FRAME: Final = struct.Struct("<II")
MAX_ENTRY: Final = 64 * 1024 * 1024  # a length above this is a torn frame, not an entry


class LogFormatError(Exception):
    """A file that is not an append log of this format (wrong or missing header)."""


def scan(path: Path) -> tuple[list[tuple[int, bytes]], int]:
    """Every whole entry of the log at `path` as (payload offset, payload), and the offset
    where the whole entries end (the file size unless the tail is torn). A missing file
    is an empty log."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    return parse(path, data)


def parse(path: Path, data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """`scan` of bytes already read."""
    if not data:
        return [], 0
    if not data.startswith(MAGIC):
        if len(data) < len(MAGIC) and MAGIC.startswith(data):
            return [], 0  # a header torn while the log was created
        raise LogFormatError(f"{path}: not a qflow append log (bad header)")
    return entries(memoryview(data)[len(MAGIC) :], len(MAGIC))


def entries(data: bytes | memoryview, base: int) -> tuple[list[tuple[int, bytes]], int]:
    """The whole entries of `data`, which starts at file offset `base` on an entry
    boundary: (payload offset in the file, payload) each, and the file offset where they
    end."""
    found = []
    end = base
    for offset, payload in _entries(data, 0):
        found.append((base + offset, payload))
        end = base + offset + len(payload)
    return found, end


def _entries(data: bytes | memoryview, pos: int) -> Iterator[tuple[int, bytes]]:
    size = len(data)
    while pos + FRAME.size <= size:
        length, crc = FRAME.unpack_from(data, pos)
        start = pos + FRAME.size
        if not 0 < length <= MAX_ENTRY or start + length > size:
            return  # (a zero length is a zero-filled tail: no entry is ever empty)
        payload = bytes(data[start : start + length])
        if zlib.crc32(payload) == crc:
            yield start, payload
        elif not _whole_frame_at(data, start + length):
            return  # a torn tail; a damaged entry with whole ones after it is skipped
        pos = start + length


def _whole_frame_at(data: bytes | memoryview, pos: int) -> bool:
    """Whether a whole entry starts at `pos`: then the entry before it, whose CRC failed,
    was damaged in place (bit rot), not torn, and the log goes on past it."""
    if pos + FRAME.size > len(data):
        return False
    length, crc = FRAME.unpack_from(data, pos)
    start = pos + FRAME.size
    if not 0 < length <= MAX_ENTRY or start + length > len(data):
        return False
    return bool(zlib.crc32(data[start : start + length]) == crc)


def frame(payload: bytes) -> bytes:
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


class AppendLog:
    """The writer's handle on one log. `open` creates the file (durably) if needed and
    cuts off a torn tail; `append` adds a durable batch."""

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path = path
        self._fd = fd
        self.size = size

    @classmethod
    def open(cls, path: Path, end: int | None = None) -> AppendLog:
        """Open for appending. `end` is where the whole entries end, if the caller has
        just scanned the file (else it is scanned here)."""
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if end is None:
                _, end = parse(path, _read_all(fd))
            if end == 0:  # new (or only a torn header): write the header
                os.ftruncate(fd, 0)
                os.pwrite(fd, MAGIC, 0)
                os.fsync(fd)
                end = len(MAGIC)
            elif os.fstat(fd).st_size != end:  # a torn tail: never append after it
                os.ftruncate(fd, end)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        if created:
            fsync_dir(path.parent)
        return cls(path, fd, end)

    def append(self, payloads: Sequence[bytes]) -> list[int]:
        """Append the entries; durable when this returns. Their payload offsets."""
        offsets = []
        pos = self.size
        frames = []
        for payload in payloads:
            if not payload:
                raise ValueError(f"{self.path}: an empty entry cannot be told from zeros")
            offsets.append(pos + FRAME.size)
            frames.append(frame(payload))
            pos += FRAME.size + len(payload)
        data = b"".join(frames)
        written = os.pwrite(self._fd, data, self.size)
        if written != len(data):  # a short write (disk full): cut it off again
            self._cut()
            raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")
        try:
            os.fdatasync(self._fd)
        except OSError:
            # The batch may be partly on disk: cut it so no later batch follows it.
            self._cut()
            raise
        self.size = pos
        return offsets

    def _cut(self) -> None:
        with contextlib.suppress(OSError):  # the caller's error is the one to report
            os.ftruncate(self._fd, self.size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""
