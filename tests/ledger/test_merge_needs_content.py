"""A record becomes a head only with its own blocks (submission, payload, state) local.

Found by the simulator: a heads re-announcement carries the record block alone; merged
without its payload, the replica folded the record as unreadable, skipped its event and
never looked again (same records, different state). Now the merge refuses it with
`missing_block`, and the receiver fetches the record's DAG."""

from __future__ import annotations

from pathlib import Path

from qflow_node.codec.block import dag_block, raw_block
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


# An execution whose submission links a real DAG: the flow (linking its module) and the
# inputs, as every submission does.
MODULE = raw_block(b"\0asm a module")
FLOW = dag_block({"module": MODULE.cid})
INPUTS = raw_block(b'{"n": 1}')
LINKED = dag_block({"flow": FLOW.cid, "inputs": INPUTS.cid})


def test_the_first_heads_need_the_submissions_whole_dag(tmp_path: Path) -> None:
    """Found by the simulator (seed 3012/3/hostile): a node merged the start record with
    the submission block alone, its fetch of the flow and inputs cut short; its heads made
    it look like a holder of the execution, the launcher was killed, and no survivor
    could ever run the flow. Now the merge names the first block missing (to be fetched:
    `fetch_and_merge` walks the record's DAG again, submission included)."""
    writer, reader = ledger(tmp_path / "w"), ledger(tmp_path / "r")
    writer.store.put_many([LINKED, FLOW, MODULE, INPUTS])
    first = writer.append(LINKED.cid, "exec.started", payload=PAYLOAD.cid, key=KEYS[0], ts=1)
    reader.store.put_many([LINKED, first])  # the record and the submission block only
    for missing in (FLOW, MODULE, INPUTS):
        report = reader.merge(LINKED.cid, [first.cid])
        assert not report.ok and report.failure is not None
        assert report.failure.reason == Reason.MISSING_BLOCK
        assert report.failure.cid in (FLOW.cid, MODULE.cid, INPUTS.cid)
        assert reader.heads(LINKED.cid) == ()
        reader.store.put(missing)
    assert reader.merge(LINKED.cid, [first.cid]).ok
    assert reader.heads(LINKED.cid) == (first.cid,)
