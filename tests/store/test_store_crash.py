"""Crash safety: leftovers of interrupted writes are ignored and cleaned; killed writers
never leave a partial or wrong block, and never lose a block they reported as stored.

SIGKILL tests atomicity (a reader never sees a half-written block: a batch cut by the
kill is a torn pack tail, never read); it cannot test durability across power loss,
which rests on the flushes checked in test_filestore.py.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from qflow_node import appendlog
from qflow_node.codec import CID, cid_for, parse_cid, raw_block
from qflow_node.store import STALE_TEMP_SECONDS, BlockNotFoundError, FileBlockStore, PinMode

WRITER = Path(__file__).with_name("crash_writer.py")
ROUNDS = 40
MAX_EVENTS_BEFORE_KILL = 25
MAX_KILL_DELAY = 0.02  # seconds after the last event read
EVENT_TIMEOUT = 30.0  # seconds to wait for any one line from a writer


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "blocks"
    path.mkdir()
    return path


def temp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*.tmp") if p.is_file())


def age(paths: list[Path], seconds: float) -> None:
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


# -- deterministic crash leftovers -------------------------------------------------------


def test_temp_files_left_by_a_crash_are_ignored_then_cleaned(root: Path) -> None:
    kept = raw_block(b"finished before the crash")
    lost = raw_block(b"being written when the process died")
    store = FileBlockStore(root)
    store.put(kept)
    store.pin(kept.cid)
    # What atomic_write leaves if the process dies between mkstemp and rename.
    lost_name = lost.cid.encode()
    shard = root / lost_name[-3:-1]
    shard.mkdir(exist_ok=True)
    leftovers = [
        shard / f".{lost_name}.k2j4h_x1.tmp",
        root / "pins" / f".{lost_name}.a8f0zz1q.tmp",
    ]
    leftovers[0].write_bytes(lost.data[:10])
    leftovers[1].write_bytes(b"recur")

    reopened = FileBlockStore(root)
    # Young temp files may belong to a live writer in another process: kept, but unseen.
    assert temp_files(root) == sorted(leftovers)
    assert list(reopened.iter_cids()) == [kept.cid]
    assert not reopened.has(lost.cid)
    with pytest.raises(BlockNotFoundError):
        reopened.get(lost.cid)
    assert reopened.pins() == {kept.cid: PinMode.RECURSIVE}
    assert reopened.gc().removed == 0

    age(leftovers, STALE_TEMP_SECONDS + 1)
    FileBlockStore(root)  # opening cleans stale temp files
    assert temp_files(root) == []
    assert FileBlockStore(root).get(kept.cid) == kept.data


def test_clean_temp_now_removes_every_temp_file(root: Path) -> None:
    store = FileBlockStore(root)
    block = raw_block(b"x")
    store.put(block)
    shard = root / block.cid.encode()[-3:-1]  # an older repo's shard, with a leftover
    shard.mkdir()
    (shard / ".a.1.tmp").write_bytes(b"")
    (root / "pins" / ".b.2.tmp").write_bytes(b"")
    assert store.clean_temp(older_than=0) == 2
    assert temp_files(root) == []
    assert store.get(block.cid) == b"x"


def test_put_many_whose_flush_fails_leaves_nothing(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileBlockStore(root)
    before = raw_block(b"stored before")
    store.put(before)
    [pack] = (root / "packs").iterdir()
    size = pack.stat().st_size
    blocks = [raw_block(f"batch {i}".encode()) for i in range(5)]
    real_fdatasync = os.fdatasync

    def failing_fdatasync(fd: int) -> None:
        # The batch reached the file (the page cache), then the flush failed.
        assert pack.stat().st_size > size
        raise OSError(5, "simulated I/O error")

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    with pytest.raises(OSError, match="simulated I/O error"):
        store.put_many(blocks)
    monkeypatch.setattr(os, "fdatasync", real_fdatasync)

    assert pack.stat().st_size == size  # cut back: no later batch follows a failed one
    for reader in (store, FileBlockStore(root)):
        assert list(reader.iter_cids()) == [before.cid]
        assert not any(reader.has(b.cid) for b in blocks)
        with pytest.raises(BlockNotFoundError):
            reader.get(blocks[0].cid)
    store.put_many(blocks)  # a retry writes the whole batch
    reopened = FileBlockStore(root)
    assert set(reopened.iter_cids()) == {before.cid, *(b.cid for b in blocks)}
    for block in [before, *blocks]:
        assert reopened.get(block.cid) == block.data


# -- killed writers ------------------------------------------------------------------------


class Writer:
    """A crash_writer.py subprocess whose stdout lines are read by a thread."""

    def __init__(self, root: Path, seed: int, stderr: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(root), str(seed)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
        self.stderr_path = Path(stderr.name)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if raw.endswith(b"\n"):  # a line cut short by the kill was never reported
                self._lines.put(raw.decode().rstrip("\n"))
        self._lines.put(None)

    def next_line(self) -> str:
        try:
            line = self._lines.get(timeout=EVENT_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"writer silent for {EVENT_TIMEOUT}s") from None
        if line is None:
            self.proc.wait(timeout=10)
            raise AssertionError(
                f"writer exited early (rc={self.proc.returncode}): "
                f"{self.stderr_path.read_text(errors='replace')}"
            )
        return line

    def kill(self, after: float) -> list[str]:
        """SIGKILL `after` seconds from now, then every line the writer had written."""
        # Waiting on the process (not sleeping) lands the kill at a random point of the
        # write in progress; the writer never exits on its own, so this always times out.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=after)
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        assert not self._reader.is_alive()
        rest: list[str] = []
        while (line := self._lines.get_nowait()) is not None:
            rest.append(line)
        return rest

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    spawned: list[Writer] = []
    try:
        yield spawned
    finally:
        for writer in spawned:
            writer.stop()


def check_store(root: Path, blocks: set[str], pins: set[str]) -> None:
    """Assert every stored block is whole and hash-correct and nothing reported is lost."""
    # What the packs hold, read raw: every whole entry (a torn tail is not one) is a
    # whole block whose bytes hash to its CID.
    for pack in sorted((root / "packs").iterdir()):
        found, _end = appendlog.scan(pack)
        for _offset, payload in found:
            assert payload[0] == 1, "the writers never delete"
            cid = CID(payload[2 : 2 + payload[1]])
            data = payload[2 + payload[1] :]
            assert cid_for(data, cid.cid_bytes[1]) == cid, f"corrupt block in {pack}"
    assert not [p for p in root.iterdir() if len(p.name) == 2], "no block files any more"
    store = FileBlockStore(root)  # a fresh store: what a restarted node would see
    names = {cid.encode() for cid in store.iter_cids()}
    assert blocks <= names, f"reported but missing: {sorted(blocks - names)[:5]}"
    for name in names:
        cid = parse_cid(name)
        assert cid_for(store.get(cid), cid.cid_bytes[1]) == cid  # never CorruptBlockError
    assert list((root / "quarantine").iterdir()) == []
    for path in (root / "pins").iterdir():
        if not path.name.startswith("."):
            assert path.read_bytes() in {b"recursive\n", b"direct\n"}
    assert pins <= {cid.encode() for cid in store.pins()}
    store.close()


@pytest.mark.slow
def test_killed_writers_never_corrupt_or_lose_blocks(
    root: Path, tmp_path: Path, writers: list[Writer]
) -> None:
    rng = random.Random(20240611)
    blocks: set[str] = set()
    pins: set[str] = set()
    # Open through all the rounds, like a node beside the writers: it learns of their
    # blocks on lookups that miss, reading past what the kills left.
    live = FileBlockStore(root)

    def record(line: str) -> None:
        kind, _, name = line.partition(" ")
        assert kind in {"block", "pin"}, line
        (blocks if kind == "block" else pins).add(name)

    for round_no in range(ROUNDS):
        with (tmp_path / f"writer-{round_no}.err").open("wb") as stderr:
            writer = Writer(root, seed=round_no, stderr=stderr)
            writers.append(writer)
            assert writer.next_line() == "ready"
            for _ in range(rng.randint(1, MAX_EVENTS_BEFORE_KILL)):
                record(writer.next_line())
            for line in writer.kill(after=rng.uniform(0, MAX_KILL_DELAY)):
                record(line)
            assert writer.proc.returncode == -9
        check_store(root, blocks, pins)
        for name in blocks:
            cid = parse_cid(name)
            assert cid_for(live.get(cid), cid.cid_bytes[1]) == cid

    assert len(blocks) > ROUNDS  # the writers did real work
    leftovers = temp_files(root)
    torn = [p for p in (root / "packs").iterdir() if appendlog.scan(p)[1] != p.stat().st_size]
    print(
        f"{len(blocks)} blocks, {len(pins)} pins; cut by a kill: {len(torn)} batches,"
        f" {len(leftovers)} pin writes"
    )
    # Leftovers of the kills are cleaned once stale.
    age(leftovers, STALE_TEMP_SECONDS + 1)
    FileBlockStore(root)
    assert temp_files(root) == []
    check_store(root, blocks, pins)
