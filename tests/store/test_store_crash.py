"""Crash safety: leftovers of interrupted writes are ignored and cleaned; killed writers
never leave a partial or wrong block, and never lose a block they reported as stored.

SIGKILL tests atomicity (a reader never sees a half-written block under its name); it
cannot test durability across power loss, which rests on the fsync order checked in
test_filestore.py.
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

from qflow_node import fsio
from qflow_node.codec import cid_for, parse_cid, raw_block
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
    shard = root / block.cid.encode()[-3:-1]
    (shard / ".a.1.tmp").write_bytes(b"")
    (root / "pins" / ".b.2.tmp").write_bytes(b"")
    assert store.clean_temp(older_than=0) == 2
    assert temp_files(root) == []
    assert store.get(block.cid) == b"x"


def test_put_many_interrupted_between_renames(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileBlockStore(root)
    blocks = [raw_block(f"batch {i}".encode()) for i in range(5)]
    events: list[str] = []
    real_replace, real_syncfs = os.replace, fsio.syncfs

    def failing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if events.count("rename") == 2:
            raise OSError(5, "simulated I/O error")
        events.append("rename")
        real_replace(src, dst)

    def syncfs(path: Path) -> bool:
        events.append("sync")
        return real_syncfs(path)

    monkeypatch.setattr(os, "replace", failing_replace)
    monkeypatch.setattr(fsio, "syncfs", syncfs)
    monkeypatch.setattr(fsio, "fsync_dir", lambda _d: events.append("sync"))
    with pytest.raises(OSError, match="simulated I/O error"):
        store.put_many(blocks)
    monkeypatch.undo()

    assert set(store.iter_cids()) == {blocks[0].cid, blocks[1].cid}
    assert store.get(blocks[0].cid) == blocks[0].data
    assert store.get(blocks[1].cid) == blocks[1].data
    assert temp_files(root) == []  # the batch removes its temp files on failure
    # The blocks renamed before the failure were still made durable.
    assert events[-1] == "sync" and events.index("rename") < len(events) - 1
    store.put_many(blocks)  # a retry completes the batch
    assert set(store.iter_cids()) == {b.cid for b in blocks}


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
    """Assert every file is a whole, hash-correct block and nothing reported is lost."""
    store = FileBlockStore(root)
    names: set[str] = set()
    for shard in sorted(p for p in root.iterdir() if len(p.name) == 2):
        for path in shard.iterdir():
            if path.name.startswith("."):
                assert path.name.endswith(".tmp"), path
                continue
            cid = parse_cid(path.name)
            data = path.read_bytes()
            assert cid_for(data, cid.cid_bytes[1]) == cid, f"corrupt block file {path}"
            assert path.name[-3:-1] == shard.name
            names.add(path.name)
    assert list((root / "quarantine").iterdir()) == []
    assert {cid.encode() for cid in store.iter_cids()} == names
    assert blocks <= names, f"reported but missing: {sorted(blocks - names)[:5]}"
    for name in blocks:
        store.get(parse_cid(name))
    for path in (root / "pins").iterdir():
        if not path.name.startswith("."):
            assert path.read_bytes() in {b"recursive\n", b"direct\n"}
    assert pins <= {cid.encode() for cid in store.pins()}


@pytest.mark.slow
def test_killed_writers_never_corrupt_or_lose_blocks(
    root: Path, tmp_path: Path, writers: list[Writer]
) -> None:
    rng = random.Random(20240611)
    blocks: set[str] = set()
    pins: set[str] = set()

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

    assert len(blocks) > ROUNDS  # the writers did real work
    leftovers = temp_files(root)
    print(f"{len(blocks)} blocks, {len(pins)} pins, {len(leftovers)} writes cut by a kill")
    # Leftovers of the kills are cleaned once stale.
    age(leftovers, STALE_TEMP_SECONDS + 1)
    FileBlockStore(root)
    assert temp_files(root) == []
    check_store(root, blocks, pins)
