"""LedgerStore: records in a real block store, heads journal on disk, merges between nodes."""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from qflow_node.appendlog import FRAME, AppendLog, scan
from qflow_node.codec import CID, DAG_CBOR, cid_for, decode_dag, encode_dag
from qflow_node.core.ledger import Reason, RecordError
from qflow_node.core.ledger.testing import KEYS, OTHER_SUBMISSION, PAYLOAD, SUBMISSION, sign_obj
from qflow_node.identity.keys import SigningKey
from qflow_node.ledger_store import (
    JOURNAL,
    LedgerStore,
    LedgerStoreError,
    ParallelSignatureChecker,
)
from qflow_node.repo import RepoPaths
from qflow_node.store import BlockStore, FileBlockStore, MemoryBlockStore

EXEC = SUBMISSION.cid


class JournalAppends:
    """Every `AppendLog.append` to a heads journal (the block store's packs are logs
    too: left alone), recorded, or failed with `fail` instead of writing."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[list[bytes]] = []
        self.fail: BaseException | None = None
        real = AppendLog.append

        def append(log: AppendLog, payloads: Sequence[bytes]) -> list[int]:
            if log.path.name == JOURNAL:
                if self.fail is not None:
                    raise self.fail
                self.batches.append(list(payloads))
            return real(log, payloads)

        monkeypatch.setattr(AppendLog, "append", append)


def make_repo(root: Path) -> RepoPaths:
    paths = RepoPaths(root)
    paths.blocks.mkdir(parents=True)
    return paths


def open_ledger(paths: RepoPaths, store: BlockStore | None = None) -> LedgerStore:
    if store is None:
        store = FileBlockStore(paths.blocks)
        store.put_many([SUBMISSION, PAYLOAD])
    return LedgerStore(store, paths)


def append_steps(ledger: LedgerStore, key: SigningKey, count: int) -> list[CID]:
    written = []
    for i in range(count):
        kind = "exec.started" if not ledger.heads(EXEC) else "step.completed"
        step = None if kind == "exec.started" else f"s{i}"
        block = ledger.append(EXEC, kind, payload=PAYLOAD.cid, key=key, ts=1000 + i, step=step)
        written.append(block.cid)
    return written


def test_append_persists_heads_and_the_ledger_verifies(tmp_path: Path) -> None:
    paths = make_repo(tmp_path / "repo")
    ledger = open_ledger(paths)
    written = append_steps(ledger, KEYS[0], 4)
    assert ledger.heads(EXEC) == (written[-1],)

    reopened = open_ledger(paths, FileBlockStore(paths.blocks))
    assert reopened.heads(EXEC) == (written[-1],)
    assert reopened.executions() == [EXEC]
    report = reopened.verify(EXEC, resolve_links=True)
    assert report.ok and report.records == 4 and list(report.order) == written
    replayed = list(reopened.replay(EXEC))
    assert [cid for cid, _ in replayed] == written
    assert [record.kind for _, record in replayed] == ["exec.started"] + ["step.completed"] * 3

    entries, _ = scan(paths.ledger / JOURNAL)
    assert len(entries) == 4  # one per append
    last = decode_dag(entries[-1][1])
    assert last == {"exec": EXEC, "heads": [written[-1]], "at": last["at"]}
    assert isinstance(last["at"], float) and not (paths.ledger / "heads").exists()


def test_append_uses_the_wall_clock_when_no_ts_is_given(tmp_path: Path) -> None:
    ledger = open_ledger(make_repo(tmp_path / "repo"))
    cid = ledger.append(EXEC, "exec.started", payload=PAYLOAD.cid, key=KEYS[0]).cid
    assert ledger.record(cid).ts > 1_700_000_000_000


def test_the_first_record_must_start_the_execution(tmp_path: Path) -> None:
    ledger = open_ledger(make_repo(tmp_path / "repo"))
    with pytest.raises(RecordError) as info:
        ledger.append(EXEC, "step.completed", payload=PAYLOAD.cid, key=KEYS[0], step="s")
    assert info.value.reason is Reason.BAD_FIELD
    append_steps(ledger, KEYS[0], 1)
    with pytest.raises(RecordError, match="empty 'prev'"):
        ledger.append(EXEC, "exec.started", payload=PAYLOAD.cid, key=KEYS[0])
    assert ledger.executions() == [EXEC]


def test_two_nodes_branch_and_merge(tmp_path: Path) -> None:
    shared = MemoryBlockStore()  # stands in for bitswap: every block reaches both
    shared.put_many([SUBMISSION, PAYLOAD])
    a = open_ledger(make_repo(tmp_path / "a"), shared)
    b = open_ledger(make_repo(tmp_path / "b"), shared)
    genesis = append_steps(a, KEYS[0], 1)[0]
    assert b.merge(EXEC, [genesis]).ok
    a1 = a.append(EXEC, "step.completed", payload=PAYLOAD.cid, key=KEYS[0], step="a").cid
    b1 = b.append(EXEC, "step.completed", payload=PAYLOAD.cid, key=KEYS[1], step="b").cid
    report = b.merge(EXEC, a.heads(EXEC))
    assert report.ok and report.records == 3
    assert b.heads(EXEC) == tuple(sorted([a1, b1], key=lambda c: c.cid_bytes))
    joined = b.append(EXEC, "exec.completed", payload=PAYLOAD.cid, key=KEYS[1]).cid
    assert set(b.record(joined).prev) == {a1, b1}
    assert a.merge(EXEC, [joined]).ok
    assert a.heads(EXEC) == (joined,)
    # Merging what is already known changes nothing.
    assert a.merge(EXEC, [a1, genesis]).heads == (joined,)


def test_merge_of_an_invalid_ledger_changes_nothing(tmp_path: Path) -> None:
    store = MemoryBlockStore()
    store.put_many([SUBMISSION, PAYLOAD])
    ledger = open_ledger(make_repo(tmp_path / "repo"), store)
    written = append_steps(ledger, KEYS[0], 2)
    bad = ledger.record(written[-1]).to_obj()
    bad.update(prev=[written[-1]], step="forged", clock={KEYS[0].peer_id: 3})
    forged = sign_obj(bad, KEYS[1])  # node says KEYS[0]
    store.put(forged)
    report = ledger.merge(EXEC, [forged.cid])
    assert not report.ok and report.failure is not None
    assert report.failure.reason is Reason.BAD_SIGNATURE and report.failure.cid == forged.cid
    missing = cid_for(b"never fetched", DAG_CBOR)
    failure = ledger.merge(EXEC, [missing]).failure
    assert failure is not None and failure.reason is Reason.MISSING_BLOCK
    assert ledger.heads(EXEC) == (written[-1],)


def test_a_crash_before_the_heads_update_leaves_a_valid_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal_appends = JournalAppends(monkeypatch)
    paths = make_repo(tmp_path / "repo")
    ledger = open_ledger(paths)
    written = append_steps(ledger, KEYS[0], 2)
    journal_appends.fail = OSError("power cut")
    with pytest.raises(OSError, match="power cut"):
        ledger.append(EXEC, "step.completed", payload=PAYLOAD.cid, key=KEYS[0], step="lost")
    journal_appends.fail = None

    reopened = open_ledger(paths, FileBlockStore(paths.blocks))
    assert reopened.heads(EXEC) == (written[-1],)
    after = append_steps(reopened, KEYS[0], 1)
    report = reopened.verify(EXEC)
    assert report.ok and list(report.order) == [*written, *after]


def test_a_flipped_bit_on_disk_is_found_by_verify(tmp_path: Path) -> None:
    paths = make_repo(tmp_path / "repo")
    ledger = open_ledger(paths)
    written = append_steps(ledger, KEYS[0], 3)
    target = written[1]
    # Damage the packed copy in place, its frame's CRC made to match (so the pack still
    # reads whole and only the hash check can tell).
    store = ledger.store
    assert isinstance(store, FileBlockStore)
    where = store._packs.locate(target)
    assert where is not None
    path = paths.blocks / "packs" / where.pack
    data = bytearray(path.read_bytes())
    data[where.offset + 20] ^= 0x04
    payload_at = where.offset - 2 - len(target.cid_bytes)
    payload = bytes(data[payload_at : where.offset + where.length])
    FRAME.pack_into(data, payload_at - FRAME.size, len(payload), zlib.crc32(payload))
    path.write_bytes(bytes(data))
    store._packs.close()  # read from disk again
    report = ledger.verify(EXEC)
    assert report.failure is not None
    assert report.failure.reason is Reason.HASH_MISMATCH
    assert report.failure.cid == target and report.failure.linked_from == written[2]
    # The store stopped serving the corrupt copy: now the block is simply missing.
    again = ledger.verify(EXEC)
    assert again.failure is not None and again.failure.reason is Reason.MISSING_BLOCK
    with pytest.raises(LedgerStoreError, match="invalid"):
        list(ledger.replay(EXEC))


def append_raw(paths: RepoPaths, *payloads: bytes) -> list[int]:
    """Entries appended to the heads journal as they are (whole, their CRC right)."""
    log = AppendLog.open(paths.ledger / JOURNAL)
    try:
        return log.append(payloads)
    finally:
        log.close()


def test_a_corrupt_heads_journal_entry_is_an_error(tmp_path: Path) -> None:
    paths = make_repo(tmp_path / "repo")
    written = append_steps(open_ledger(paths), KEYS[0], 1)
    journal = paths.ledger / JOURNAL
    good = journal.read_bytes()
    (offset,) = append_raw(paths, b"\xff")
    # Damage is found when the journal is read: by the next process that opens the repo
    # (the one that wrote the heads keeps them in memory).
    with pytest.raises(
        LedgerStoreError, match=re.escape(f"{journal} is corrupt at offset {offset}:")
    ):
        open_ledger(paths).heads(EXEC)
    other = cid_for(b"other", DAG_CBOR)
    journal.write_bytes(good)
    (offset,) = append_raw(paths, encode_dag({"exec": other, "heads": [other]}))  # no "at"
    ledger = open_ledger(paths)
    with pytest.raises(
        LedgerStoreError, match=re.escape(f"{journal}: the entry at offset {offset} is not")
    ):
        ledger.heads(EXEC)
    with pytest.raises(LedgerStoreError, match="not a heads entry"):
        ledger.append(EXEC, "step.completed", payload=PAYLOAD.cid, key=KEYS[0], step="s")
    for bad in (
        {"exec": EXEC, "heads": [PAYLOAD.cid], "at": 1.0},  # a raw block is no record
        {"exec": EXEC, "heads": written, "at": 1},
        {"exec": "x", "heads": written, "at": 1.0},
    ):
        journal.write_bytes(good)
        append_raw(paths, encode_dag(bad))
        with pytest.raises(LedgerStoreError, match="not a heads entry"):
            open_ledger(paths).executions()
    journal.write_bytes(good)
    assert ledger.heads(EXEC) == tuple(written)  # a failed read is not remembered
    journal.write_bytes(b"QFLOG\x00\x09\n")
    with pytest.raises(LedgerStoreError, match=r"heads journal .*bad header"):
        open_ledger(paths).heads(EXEC)


def test_a_corrupt_heads_file_of_an_older_repo_is_an_error(tmp_path: Path) -> None:
    paths = make_repo(tmp_path / "repo")
    legacy = paths.ledger / "heads" / f"{EXEC.encode()}.cbor"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"\xff")
    with pytest.raises(LedgerStoreError, match=r"heads index .* is corrupt"):
        open_ledger(paths).heads(EXEC)
    other = cid_for(b"other", DAG_CBOR)
    legacy.write_bytes(encode_dag({"exec": other, "heads": [other]}))
    with pytest.raises(LedgerStoreError, match="not a heads index"):
        open_ledger(paths).heads(EXEC)


def test_heads_and_records_read_once_are_kept_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_repo(tmp_path / "repo")
    written = append_steps(open_ledger(paths), KEYS[0], 3)
    ledger = open_ledger(paths)
    assert ledger.heads(EXEC) == (written[-1],)
    records = [ledger.record(cid) for cid in written]
    reads: list[object] = []

    def read(what: object) -> bytes:
        reads.append(what)
        return b""

    monkeypatch.setattr(Path, "read_bytes", read)
    monkeypatch.setattr(Path, "open", read)  # the heads journal
    monkeypatch.setattr(ledger, "lookup", read)  # record blocks
    assert ledger.heads(EXEC) == (written[-1],)
    assert [ledger.record(cid) for cid in written] == records
    assert reads == []


def test_unknown_execution_and_missing_record(tmp_path: Path) -> None:
    ledger = open_ledger(make_repo(tmp_path / "repo"))
    assert ledger.heads(EXEC) == () and ledger.executions() == []
    with pytest.raises(LedgerStoreError, match="no local records"):
        ledger.verify(EXEC)
    with pytest.raises(ValueError, match="needs heads"):
        ledger.verify()
    with pytest.raises(LedgerStoreError, match="not in the block store"):
        ledger.record(cid_for(b"absent", DAG_CBOR))


def test_parallel_checker_matches_the_inline_verdict(tmp_path: Path) -> None:
    store = MemoryBlockStore()
    store.put_many([SUBMISSION, PAYLOAD])
    ledger = open_ledger(make_repo(tmp_path / "repo"), store)
    written = append_steps(ledger, KEYS[0], 40)
    obj = ledger.record(written[-1]).to_obj()
    obj.update(prev=[written[-1]], clock={KEYS[0].peer_id: 41}, step="forged")
    forged = sign_obj(obj, KEYS[2])
    store.put(forged)
    obj2 = dict(obj, prev=[forged.cid], clock={KEYS[0].peer_id: 42}, step="after")
    put_after = sign_obj(obj2, KEYS[0])
    store.put(put_after)
    with ParallelSignatureChecker(2, chunk=8, min_batch=4) as checker:
        good = ledger.verify(EXEC, checker=checker)
        bad = ledger.verify(heads=[put_after.cid], checker=checker)
    assert good.ok and good.records == 40
    inline = ledger.verify(heads=[put_after.cid])
    assert bad.failure == inline.failure
    assert bad.failure is not None and bad.failure.cid == forged.cid and bad.failure.index == 40


def test_a_batch_writes_every_head_set_together_and_shows_them_to_its_thread_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal_appends = JournalAppends(monkeypatch)
    paths = make_repo(tmp_path / "repo")
    ledger = open_ledger(paths)
    other = OTHER_SUBMISSION.cid
    ledger.store.put(OTHER_SUBMISSION)
    before = append_steps(ledger, KEYS[0], 1)
    writes = journal_appends.batches
    writes.clear()
    seen_elsewhere: list[tuple[CID, ...]] = []
    with ledger.batch():
        first = append_steps(ledger, KEYS[0], 1)  # on the head written inside: visible
        started = ledger.append(other, "exec.started", payload=PAYLOAD.cid, key=KEYS[0])
        assert ledger.heads(EXEC) == (first[0],) and ledger.heads(other) == (started.cid,)
        reader = threading.Thread(target=lambda: seen_elsewhere.append(ledger.heads(EXEC)))
        reader.start()  # another thread: the ledger lock is ours, heads() needs none
        reader.join(timeout=10)
        assert writes == []  # nothing on disk yet
    assert seen_elsewhere == [(before[0],)]
    # One append (one fdatasync) for the batch.
    assert [{decode_dag(entry)["exec"] for entry in w} for w in writes] == [{EXEC, other}]
    reopened = open_ledger(paths, FileBlockStore(paths.blocks))
    assert reopened.heads(EXEC) == (first[0],) and reopened.heads(other) == (started.cid,)
    assert reopened.verify(EXEC).ok and reopened.verify(other).ok


def test_a_batch_whose_heads_cannot_be_written_changes_no_head_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal_appends = JournalAppends(monkeypatch)
    paths = make_repo(tmp_path / "repo")
    ledger = open_ledger(paths)
    ledger.store.put(OTHER_SUBMISSION)
    before = append_steps(ledger, KEYS[0], 1)

    journal_appends.fail = OSError("disk full")
    lost: list[CID] = []
    with pytest.raises(OSError, match="disk full"), ledger.batch():
        lost += append_steps(ledger, KEYS[0], 1)
        ledger.append(OTHER_SUBMISSION.cid, "exec.started", payload=PAYLOAD.cid, key=KEYS[0])
    assert ledger.heads(EXEC) == (before[0],) and ledger.heads(OTHER_SUBMISSION.cid) == ()
    assert not ledger.holds(EXEC, lost)  # never said to be held: a merge still takes it
    journal_appends.fail = None
    reopened = open_ledger(paths, FileBlockStore(paths.blocks))
    assert reopened.executions() == [EXEC] and reopened.heads(EXEC) == (before[0],)
    after = append_steps(ledger, KEYS[0], 1)  # the journal takes appends again
    assert open_ledger(paths, FileBlockStore(paths.blocks)).heads(EXEC) == (after[0],)
