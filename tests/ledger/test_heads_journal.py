"""The heads journal (`ledger/heads.log`): what `LedgerStore` writes its head sets to, and
what it reads them from - older repos' heads files, torn tails, compaction, a second
writer. Real files in tmp_path; the head CIDs need no records (`_write_heads`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from qflow_node import fsio, ledger_store
from qflow_node.appendlog import FRAME, MAGIC, AppendLog, frame, scan
from qflow_node.codec import CID, dag_block, decode_dag, encode_dag
from qflow_node.core.ledger.testing import KEYS, PAYLOAD, SUBMISSION
from qflow_node.ledger_store import HEADS_DIR, JOURNAL, LOCK_FILE, LedgerStore, heads_entry
from qflow_node.repo import RepoPaths
from qflow_node.store import MemoryBlockStore

EXECS = [dag_block({"exec": i}).cid for i in range(6)]


def cids(label: str, count: int) -> list[CID]:
    return sorted((dag_block({label: i}).cid for i in range(count)), key=lambda c: c.cid_bytes)


def open_ledger(root: Path, store: MemoryBlockStore | None = None) -> LedgerStore:
    return LedgerStore(store if store is not None else MemoryBlockStore(), RepoPaths(root))


def journal(root: Path) -> Path:
    return RepoPaths(root).ledger / JOURNAL


def everything(ledger: LedgerStore) -> dict[CID, tuple[CID, ...]]:
    return {exec: ledger.heads(exec) for exec in ledger.executions()}


def legacy_file(root: Path, exec: CID, heads: list[CID], mtime: float) -> Path:
    """A heads file as repos from before the journal kept them."""
    path = RepoPaths(root).ledger / HEADS_DIR / f"{exec.encode()}.cbor"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_dag({"exec": exec, "heads": heads}))
    os.utime(path, (mtime, mtime))
    return path


def test_heads_survive_a_new_ledger_store_on_the_repo(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path)
    expected = {exec: tuple(cids(exec.encode(), i + 1)) for i, exec in enumerate(EXECS)}
    for exec, heads in expected.items():
        ledger._write_heads(exec, list(reversed(heads)))  # kept sorted by cid_bytes
    assert everything(ledger) == expected

    reopened = open_ledger(tmp_path)
    assert everything(reopened) == expected
    assert reopened.executions() == sorted(EXECS, key=CID.encode)
    for exec in EXECS:
        assert reopened.heads_changed_at(exec) == ledger.heads_changed_at(exec)
    assert sorted(p.name for p in RepoPaths(tmp_path).ledger.iterdir()) == sorted(
        [JOURNAL, LOCK_FILE]
    )


def test_a_reader_creates_nothing(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path)
    assert ledger.heads(EXECS[0]) == () and ledger.executions() == []
    assert ledger.changed_since(0) == [] and ledger.heads_changed_at(EXECS[0]) is None
    assert not tmp_path.joinpath("ledger").exists()


@pytest.mark.parametrize("tear", ["cut", "garbage"])
def test_a_torn_tail_is_ignored_and_cut_off_before_the_next_append(
    tmp_path: Path, tear: str
) -> None:
    first, second, later = cids("h", 3)
    ledger = open_ledger(tmp_path)
    ledger._write_heads(EXECS[0], [first])
    whole = journal(tmp_path).read_bytes()
    ledger._write_heads(EXECS[1], [second])
    data = journal(tmp_path).read_bytes()
    if tear == "cut":  # the last append did not all reach the disk
        journal(tmp_path).write_bytes(data[:-3])
    else:  # a batch torn after a whole one: its frame is there, not all of its payload
        whole = data
        journal(tmp_path).write_bytes(data + frame(heads_entry(EXECS[2], [later], 1.0))[:-5])

    reopened = open_ledger(tmp_path)
    expected = {EXECS[0]: (first,)} if tear == "cut" else {EXECS[0]: (first,), EXECS[1]: (second,)}
    assert everything(reopened) == expected
    reopened._write_heads(EXECS[3], [later])
    data = journal(tmp_path).read_bytes()
    assert data.startswith(whole) and data == whole + frame(data[len(whole) + FRAME.size :])
    assert everything(open_ledger(tmp_path)) == {**expected, EXECS[3]: (later,)}


def test_a_zeroed_tail_is_no_entry(tmp_path: Path) -> None:
    head, later = cids("h", 2)
    open_ledger(tmp_path)._write_heads(EXECS[0], [head])
    with journal(tmp_path).open("ab") as file:  # size on disk before the data: zeros
        file.write(bytes(2 * FRAME.size))
    reopened = open_ledger(tmp_path)
    assert everything(reopened) == {EXECS[0]: (head,)}
    reopened._write_heads(EXECS[1], [later])
    assert everything(open_ledger(tmp_path)) == {EXECS[0]: (head,), EXECS[1]: (later,)}


def test_an_older_repos_heads_files_are_read_and_the_journal_overrides_them(
    tmp_path: Path,
) -> None:
    old, new, other = cids("h", 3)
    path = legacy_file(tmp_path, EXECS[0], [old], 1_600_000_000.0)
    legacy_file(tmp_path, EXECS[1], [other], 1_600_000_100.0)
    (path.parent / "notes.cbor~").write_bytes(b"an editor's backup")
    (path.parent / "not-a-cid.cbor").write_bytes(b"not ours either")

    ledger = open_ledger(tmp_path)
    assert everything(ledger) == {EXECS[0]: (old,), EXECS[1]: (other,)}
    assert ledger.heads_changed_at(EXECS[0]) == 1_600_000_000.0  # their mtime
    assert ledger.changed_since(1_600_000_050.0) == [EXECS[1]]
    ledger._write_heads(EXECS[0], [new])

    reopened = open_ledger(tmp_path)
    assert everything(reopened) == {EXECS[0]: (new,), EXECS[1]: (other,)}
    assert reopened.heads_changed_at(EXECS[0]) == ledger.heads_changed_at(EXECS[0])
    assert path.exists()  # until a compaction takes the files in


def test_a_rewind_that_removes_the_execution_persists(tmp_path: Path) -> None:
    store = MemoryBlockStore()
    store.put_many([SUBMISSION, PAYLOAD])
    exec = SUBMISSION.cid
    ledger = open_ledger(tmp_path, store)
    started = ledger.append(exec, "exec.started", payload=PAYLOAD.cid, key=KEYS[0]).cid
    legacy_file(tmp_path, exec, [started], 1_600_000_000.0)  # older repo: a file as well
    ledger._write_heads(EXECS[0], cids("h", 1))
    assert set(open_ledger(tmp_path, store).executions()) == {exec, EXECS[0]}

    assert ledger.rewind(exec, started, [])
    entries, _ = scan(journal(tmp_path))
    assert decode_dag(entries[-1][1])["heads"] == []
    reopened = open_ledger(tmp_path, store)
    assert reopened.executions() == [EXECS[0]] and reopened.heads(exec) == ()
    assert reopened.heads_changed_at(exec) is None


def test_compaction_keeps_every_head_set_and_drops_the_older_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_store, "COMPACT_MIN_BYTES", 4096)
    rewritten: list[bytes] = []

    def atomic_write(path: Path, data: bytes) -> None:
        rewritten.append(data)
        fsio.atomic_write(path, data)

    monkeypatch.setattr(ledger_store, "atomic_write", atomic_write)
    kept = legacy_file(tmp_path, EXECS[4], cids("kept", 1), 1_600_000_000.0)
    gone = legacy_file(tmp_path, EXECS[5], cids("gone", 1), 1_600_000_000.0)
    ledger = open_ledger(tmp_path)
    ledger._write_heads(EXECS[5], [])  # removed: its file must not come back
    expected = {EXECS[4]: ledger.heads(EXECS[4])}
    sizes = []
    for round in range(40):  # the same few executions over and over: the journal grows
        for exec in EXECS[:4]:
            expected[exec] = tuple(cids(f"{exec.encode()}/{round}", 2))
            ledger._write_heads(exec, list(expected[exec]))
            sizes.append(journal(tmp_path).stat().st_size)
    assert everything(ledger) == expected

    shrank = [i for i in range(1, len(sizes)) if sizes[i] < sizes[i - 1]]
    assert shrank and max(sizes) <= 4096 and sizes[-1] < 4096  # rewritten, not only grown
    assert sizes[shrank[0]] < sizes[shrank[0] - 1] // 4
    assert not kept.parent.exists()  # taken in, then removed
    reopened = open_ledger(tmp_path)
    assert everything(reopened) == expected
    assert reopened.heads_changed_at(EXECS[4]) == 1_600_000_000.0
    for exec in EXECS[:4]:
        assert reopened.heads_changed_at(exec) == ledger.heads_changed_at(exec)

    # A crash after the first compaction, before the old files were removed: the
    # journal still wins over them, the removed execution included.
    journal(tmp_path).write_bytes(rewritten[0])
    legacy_file(tmp_path, EXECS[4], cids("kept", 1), 1_600_000_000.0)
    legacy_file(tmp_path, EXECS[5], cids("gone", 1), 1_600_000_000.0)
    legacy_file(tmp_path, EXECS[0], cids("stale", 1), 1_600_000_000.0)
    crashed = open_ledger(tmp_path)
    assert gone.exists() and set(crashed.executions()) == set(EXECS[:5])
    assert crashed.heads(EXECS[0]) != tuple(cids("stale", 1))
    assert crashed.heads(EXECS[4]) == expected[EXECS[4]]


def test_a_failed_compaction_loses_no_head_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_store, "COMPACT_MIN_BYTES", 1024)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ledger_store, "atomic_write", fail)
    ledger = open_ledger(tmp_path)
    expected = {}
    for round in range(20):
        expected[EXECS[0]] = tuple(cids(f"r{round}", 1))
        ledger._write_heads(EXECS[0], list(expected[EXECS[0]]))  # every write succeeds
    monkeypatch.undo()
    expected[EXECS[1]] = tuple(cids("after", 1))
    ledger._write_heads(EXECS[1], list(expected[EXECS[1]]))
    assert everything(open_ledger(tmp_path)) == expected


def test_a_batch_of_executions_is_one_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    real = AppendLog.append

    def append(log: AppendLog, payloads: Sequence[bytes]) -> list[int]:
        batches.append(len(payloads))
        return real(log, payloads)

    monkeypatch.setattr(AppendLog, "append", append)  # MemoryBlockStore: the journal only
    ledger = open_ledger(tmp_path)
    with ledger.batch():
        for exec in EXECS:
            ledger._write_heads(exec, cids(exec.encode(), 1))
    assert batches == [len(EXECS)]
    assert set(open_ledger(tmp_path).executions()) == set(EXECS)


def test_a_second_writer_never_writes_over_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = open_ledger(tmp_path), open_ledger(tmp_path)  # e.g. `qflow run` beside a node
    x, y, z = cids("h", 3)
    a._write_heads(EXECS[0], [x])
    b._write_heads(EXECS[1], [y])
    a._write_heads(EXECS[2], [z])  # reads b's entry first, appends after it
    expected: dict[CID, tuple[CID, ...]] = {EXECS[0]: (x,), EXECS[1]: (y,), EXECS[2]: (z,)}
    assert everything(open_ledger(tmp_path)) == expected == everything(a)

    monkeypatch.setattr(ledger_store, "COMPACT_MIN_BYTES", 512)
    compactions: list[Path] = []

    def atomic_write(path: Path, data: bytes) -> None:
        compactions.append(path)
        fsio.atomic_write(path, data)

    monkeypatch.setattr(ledger_store, "atomic_write", atomic_write)
    for round in range(30):  # b compacts: a's journal is replaced under it
        expected[EXECS[1]] = tuple(cids(f"b{round}", 1))
        b._write_heads(EXECS[1], list(expected[EXECS[1]]))
    assert compactions
    a._write_heads(EXECS[3], [x])
    expected[EXECS[3]] = (x,)
    assert everything(open_ledger(tmp_path)) == expected


def test_a_journal_that_is_not_one_is_an_error(tmp_path: Path) -> None:
    path = journal(tmp_path)
    path.parent.mkdir()
    path.write_bytes(b"not a journal")
    ledger = open_ledger(tmp_path)
    with pytest.raises(ledger_store.LedgerStoreError, match="bad header"):
        ledger.heads(EXECS[0])
    with pytest.raises(ledger_store.LedgerStoreError, match="bad header"):
        ledger._write_heads(EXECS[0], cids("h", 1))
    assert path.read_bytes() == b"not a journal"  # nothing written over it
    path.write_bytes(MAGIC)
    assert ledger.executions() == []
