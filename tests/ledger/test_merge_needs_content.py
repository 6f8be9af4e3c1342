"""A record becomes a head only with its own blocks (submission, payload, state) local.

Found by the simulator: a heads re-announcement carries the record block alone; merged
without its payload, the replica folded the record as unreadable, skipped its event and
never looked again (same records, different state). Now the merge refuses it with
`missing_block`, and the receiver fetches the record's DAG."""

from __future__ import annotations

from pathlib import Path

from qflow_node.codec.block import dag_block
from qflow_node.core.ledger import Reason
from qflow_node.core.ledger.testing import KEYS, PAYLOAD, SUBMISSION
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.store import FileBlockStore

EXEC = SUBMISSION.cid
OUTPUT = dag_block({"output": "only the writer has this at first"})


def ledger(root: Path) -> LedgerStore:
    paths = RepoPaths(root)
    paths.blocks.mkdir(parents=True)
    store = FileBlockStore(paths.blocks)
    store.put_many([SUBMISSION, PAYLOAD])
    return LedgerStore(store, paths)


def test_the_fast_path_refuses_a_record_whose_payload_is_missing(tmp_path: Path) -> None:
    writer, reader = ledger(tmp_path / "w"), ledger(tmp_path / "r")
    first = writer.append(EXEC, "exec.started", payload=PAYLOAD.cid, key=KEYS[0], ts=1)
    reader.store.put(first)
    assert reader.merge(EXEC, [first.cid]).ok
    writer.store.put(OUTPUT)
    second = writer.append(EXEC, "step.completed", payload=OUTPUT.cid, key=KEYS[1], ts=2, step="s1")
    reader.store.put(second)  # the record alone, as a re-announcement carries it
    report = reader.merge(EXEC, [second.cid])
    assert not report.ok and report.failure is not None
    assert report.failure.reason == Reason.MISSING_BLOCK
    assert report.failure.cid == OUTPUT.cid
    assert reader.heads(EXEC) == (first.cid,)
    reader.store.put(OUTPUT)
    assert reader.merge(EXEC, [second.cid]).ok
    assert reader.heads(EXEC) == (second.cid,)


def test_the_full_verification_refuses_it_too(tmp_path: Path) -> None:
    writer, reader = ledger(tmp_path / "w"), ledger(tmp_path / "r")
    first = writer.append(EXEC, "exec.started", payload=PAYLOAD.cid, key=KEYS[0], ts=1)
    writer.store.put(OUTPUT)
    second = writer.append(EXEC, "step.completed", payload=OUTPUT.cid, key=KEYS[1], ts=2, step="s1")
    reader.store.put_many([first, second])  # no heads yet: verified as a whole
    report = reader.merge(EXEC, [second.cid])
    assert not report.ok and report.failure is not None
    assert report.failure.reason == Reason.MISSING_BLOCK
    assert reader.heads(EXEC) == ()
