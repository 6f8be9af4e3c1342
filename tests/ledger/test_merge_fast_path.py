"""`LedgerStore.merge` of one record on top of the single head: checked alone, with the
same verdicts the full verification gives (hash, execution, clock rule, signature)."""

from __future__ import annotations

from pathlib import Path

from qflow_node.codec import decode_dag, encode_dag
from qflow_node.codec.block import dag_block
from qflow_node.core.ledger import Reason, new_record
from qflow_node.core.ledger.testing import KEYS, PAYLOAD, SUBMISSION, sign_obj
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.store import FileBlockStore

EXEC = SUBMISSION.cid


def two_stores(tmp_path: Path) -> tuple[LedgerStore, LedgerStore]:
    ledgers = []
    for name in ("a", "b"):
        paths = RepoPaths(tmp_path / name)
        paths.blocks.mkdir(parents=True)
        store = FileBlockStore(paths.blocks)
        store.put_many([SUBMISSION, PAYLOAD])
        ledgers.append(LedgerStore(store, paths))
    return ledgers[0], ledgers[1]


def test_a_chain_grows_one_merged_record_at_a_time(tmp_path: Path) -> None:
    a, b = two_stores(tmp_path)
    for i in range(4):
        kind = "exec.started" if i == 0 else "step.completed"
        block = a.append(
            EXEC,
            kind,
            payload=PAYLOAD.cid,
            key=KEYS[i % 2],
            ts=10 + i,
            step=None if i == 0 else f"s{i}",
        )
        b.store.put(block)
        report = b.merge(EXEC, [block.cid])
        assert report.ok and report.heads == (block.cid,)
        assert report.records == i + 1
    assert b.verify(EXEC).ok  # the fast path never let anything wrong in


def test_bad_extensions_are_refused_as_the_full_verification_would(tmp_path: Path) -> None:
    a, b = two_stores(tmp_path)
    first = a.append(EXEC, "exec.started", payload=PAYLOAD.cid, key=KEYS[0], ts=1)
    b.store.put(first)
    assert b.merge(EXEC, [first.cid]).ok
    parent = b.record(first.cid)

    # A clock that skips a count.
    block, _ = new_record(
        EXEC,
        "step.completed",
        parents={first.cid: parent.clock},
        payload=PAYLOAD.cid,
        key=KEYS[1],
        ts=2,
        step="s1",
    )
    obj = decode_dag(block.data)
    obj["clock"] = {**obj["clock"], KEYS[1].peer_id: 5}
    skipped = sign_obj(obj, KEYS[1])
    b.store.put(skipped)
    report = b.merge(EXEC, [skipped.cid])
    assert not report.ok and report.failure is not None
    assert report.failure.reason == Reason.CLOCK_INCONSISTENT

    # A forged signature: the content changed after signing.
    obj = decode_dag(block.data)
    obj["ts"] = 3
    forged = dag_block(obj)
    assert forged.data == encode_dag(obj)
    b.store.put(forged)
    report = b.merge(EXEC, [forged.cid])
    assert not report.ok and report.failure is not None
    assert report.failure.reason == Reason.BAD_SIGNATURE

    assert b.heads(EXEC) == (first.cid,)  # nothing bad became a head
