"""What `LedgerStore` keeps in memory: the records it holds (`holds`, the no-op merge)
and the heads index: each execution's heads and when they changed (`changed_since`),
read from the heads journal once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from qflow_node import ledger_store
from qflow_node.appendlog import AppendLog
from qflow_node.codec import CID, Block, dag_block, raw_block
from qflow_node.core.ledger.testing import KEYS, PAYLOAD, SUBMISSION
from qflow_node.ledger_store import JOURNAL, KnownRecords, LedgerStore, heads_entry
from qflow_node.repo import RepoPaths
from qflow_node.store import FileBlockStore

EXEC = SUBMISSION.cid


def open_ledger(root: Path) -> LedgerStore:
    paths = RepoPaths(root)
    paths.blocks.mkdir(parents=True, exist_ok=True)
    store = FileBlockStore(paths.blocks)
    store.put_many([SUBMISSION, PAYLOAD])
    return LedgerStore(store, paths)


def journal(root: Path) -> Path:
    return RepoPaths(root).ledger / JOURNAL


def append(ledger: LedgerStore, node: int, ts: int) -> CID:
    kind = "step.completed" if ledger.heads(EXEC) else "exec.started"
    step = None if kind == "exec.started" else f"s{ts}"
    return ledger.append(EXEC, kind, payload=PAYLOAD.cid, key=KEYS[node], ts=ts, step=step).cid


def send(source: LedgerStore, target: LedgerStore) -> None:
    """`target` gets every block of `source`'s ledger (as a fetch would), then merges."""
    target.store.put_many([Block(cid, source.store.get(cid)) for cid, _ in source.replay(EXEC)])
    assert target.merge(EXEC, source.heads(EXEC)).ok


class CountingVerifier:
    """Counts the ledger's verifications, whole (`verify_execution`) or of one record."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        for name in ("verify_execution", "verify_extension"):
            monkeypatch.setattr(ledger_store, name, self._counted(getattr(ledger_store, name)))

    def _counted(self, real: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        return counted


class NoLock:
    """Stands in for the ledger's lock where taking it would be a failure."""

    def __enter__(self) -> None:
        raise AssertionError("took the ledger lock")

    def __exit__(self, *exc: object) -> None:
        return None


# -- holds ------------------------------------------------------------------------------


def test_every_head_written_here_is_held(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path)
    written = [append(ledger, 0, 1000 + i) for i in range(3)]
    assert all(ledger.holds(EXEC, [cid]) for cid in written)
    assert ledger.holds(EXEC, written)
    assert not ledger.holds(EXEC, [*written, dag_block({"never": 1}).cid])
    assert not ledger.holds(EXEC, [])
    assert not ledger.holds(dag_block({"other": "exec"}).cid, written[:1])
    # Memory only: a reopened store knows nothing yet (a miss costs a merge, no more).
    assert not open_ledger(tmp_path).holds(EXEC, written[-1:])


def test_heads_a_merge_accepted_are_held(tmp_path: Path) -> None:
    a, b = open_ledger(tmp_path / "a"), open_ledger(tmp_path / "b")
    started = append(a, 0, 1000)
    middle = append(a, 0, 1001)
    top = append(a, 0, 1002)
    send(a, b)
    assert b.holds(EXEC, [top]) and not b.holds(EXEC, [middle])
    assert b.merge(EXEC, [started, middle]).ok  # ancestors: verified once, then known
    assert b.holds(EXEC, [started, middle, top])
    assert b.heads(EXEC) == (top,)


def test_a_merge_of_held_heads_neither_verifies_nor_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = open_ledger(tmp_path / "a"), open_ledger(tmp_path / "b")
    started = append(a, 0, 1000)
    send(a, b)
    mine = append(b, 1, 1001)
    assert b.merge(EXEC, [started]).ok
    index = journal(tmp_path / "b")
    before = (index.read_bytes(), index.stat().st_mtime_ns)
    verifier = CountingVerifier(monkeypatch)
    monkeypatch.setattr(b, "_lock", NoLock())  # nor waits behind another merge

    for heads in ([started], [mine], [started, mine]):
        report = b.merge(EXEC, heads)
        assert report.ok and report.heads == (mine,) and report.failure is None

    assert verifier.calls == 0
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before


def test_current_heads_merge_as_a_no_op_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = open_ledger(tmp_path)
    head = [append(ledger, 0, 1000 + i) for i in range(2)][-1]
    reopened = open_ledger(tmp_path)
    verifier = CountingVerifier(monkeypatch)
    assert reopened.merge(EXEC, [head]).heads == (head,)
    assert verifier.calls == 0 and reopened.holds(EXEC, [head])


def test_a_rewound_head_is_no_longer_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = open_ledger(tmp_path)
    started = append(ledger, 0, 1000)
    lost = append(ledger, 0, 1001)
    assert ledger.rewind(EXEC, lost, [started])
    assert not ledger.holds(EXEC, [lost]) and ledger.holds(EXEC, [started])
    verifier = CountingVerifier(monkeypatch)
    assert ledger.merge(EXEC, [lost]).heads == (lost,)  # heard again: verified, not assumed
    assert verifier.calls == 1 and ledger.holds(EXEC, [lost])
    # Rewinding the last record forgets the execution.
    assert ledger.rewind(EXEC, lost, [started]) and ledger.rewind(EXEC, started, [])
    assert ledger.heads(EXEC) == () and not ledger.holds(EXEC, [started])


def test_known_records_forget_the_least_recently_used_execution() -> None:
    known = KnownRecords(capacity=2)
    a, b, c = (dag_block({"exec": i}).cid for i in range(3))
    record = dag_block({"record": 1}).cid
    known.add(a, [record])
    known.add(b, [record])
    assert known.holds(a, [record])  # a used last: b goes first
    known.add(c, [record])
    assert known.holds(a, [record]) and known.holds(c, [record])
    assert not known.holds(b, [record])
    known.discard(a, record)
    known.forget(c)
    assert not known.holds(a, [record]) and not known.holds(c, [record])
    with pytest.raises(ValueError, match="capacity"):
        KnownRecords(capacity=0)


# -- changed_since ------------------------------------------------------------------------


def write_heads(ledger: LedgerStore, exec: CID) -> None:
    ledger._write_heads(exec, [dag_block({"head of": exec}).cid])


def test_changed_since_reads_the_journal_once_newest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    execs = [dag_block({"exec": i}).cid for i in range(4)]
    ages = [300, 100, 200, 5000]
    writer = open_ledger(tmp_path)
    for exec in execs:
        write_heads(writer, exec)
    now = time.time()
    log = AppendLog.open(journal(tmp_path))  # the same heads, written longer ago
    log.append([heads_entry(e, writer.heads(e), now - a) for e, a in zip(execs, ages, strict=True)])
    log.close()

    ledger = open_ledger(tmp_path)
    loads = []
    real = ledger._load

    def load() -> Any:
        loads.append(1)
        return real()

    monkeypatch.setattr(ledger, "_load", load)
    assert ledger.changed_since(now - 1000) == [execs[1], execs[2], execs[0]]
    assert ledger.changed_since(now - 1000, limit=2) == [execs[1], execs[2]]
    assert ledger.changed_since(now - 150) == [execs[1]]
    assert ledger.changed_since(0) == [execs[1], execs[2], execs[0], execs[3]]
    assert ledger.executions() == sorted(execs, key=CID.encode)
    assert len(loads) == 1
    for age, exec in zip(ages, execs, strict=True):  # the same times as heads_changed_at
        assert ledger.heads_changed_at(exec) == pytest.approx(now - age)


def test_changed_since_follows_this_process_writes(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path)
    started = append(ledger, 0, 1000)
    other = dag_block({"exec": "other"}).cid
    write_heads(ledger, other)
    assert ledger.changed_since(0) == [other, EXEC]
    lost = append(ledger, 0, 1001)
    assert ledger.changed_since(0) == [EXEC, other]
    assert ledger.changed_since(0, limit=1) == [EXEC]
    changed = ledger.heads_changed_at(EXEC)
    assert changed is not None and ledger.changed_since(changed) == [EXEC]
    assert ledger.rewind(EXEC, lost, [started]) and ledger.rewind(EXEC, started, [])
    assert ledger.changed_since(0) == [other]
    assert ledger.heads_changed_at(EXEC) is None
    reopened = open_ledger(tmp_path)  # the same, from the journal
    assert reopened.changed_since(0) == [other] and reopened.heads_changed_at(EXEC) is None
    assert reopened.heads_changed_at(other) == ledger.heads_changed_at(other)


def test_a_write_during_the_first_load_waits_for_it(tmp_path: Path) -> None:
    first, second = (dag_block({"exec": i}).cid for i in range(2))
    write_heads(open_ledger(tmp_path), first)
    ledger = open_ledger(tmp_path)
    loading, written = threading.Event(), threading.Event()
    real = ledger._load
    written_during_load = []

    def slow_load() -> Any:
        found = real()  # sees `first` only
        loading.set()
        written_during_load.append(written.wait(0.2))  # the writer waits for the load
        return found

    def write_second() -> None:
        loading.wait(5)
        write_heads(ledger, second)
        written.set()

    ledger._load = slow_load  # type: ignore[method-assign]  # the real load, held open
    writer = threading.Thread(target=write_second)
    writer.start()
    try:
        assert first in ledger.changed_since(0)
    finally:
        writer.join(5)
    assert written_during_load == [False]
    assert set(ledger.changed_since(0)) == {first, second}
    assert set(open_ledger(tmp_path).executions()) == {first, second}


def test_known_records_per_execution_are_bounded() -> None:
    known = ledger_store.KnownRecords(capacity=2)
    exec_ = raw_block(b"exec").cid
    cids = [raw_block(f"r{i}".encode()).cid for i in range(ledger_store.KNOWN_PER_EXECUTION + 5)]
    for cid in cids:
        known.add(exec_, [cid])
    assert known.holds(exec_, cids[-5:])  # the newest stay
    assert not known.holds(exec_, cids[:1])  # the oldest were forgotten (a miss is safe)
