"""An accepted submission is kept across a crash until a record of it exists.

Found by the simulator (seed 3010, hostile, 3 nodes): a node accepted a submission, its
gossip was lost, and the node crashed before the start record was written; restarted,
it knew no ledger of the execution and the flow was never run. `LedgerStore.accept`
marks it durably; `accepted` lists what a restart must open again."""

from __future__ import annotations

from pathlib import Path

from qflow_node.core.ledger.testing import KEYS, OTHER_SUBMISSION, PAYLOAD, SUBMISSION
from qflow_node.ledger_store import ACCEPTED_DIR, LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.store import FileBlockStore


def ledger(root: Path) -> LedgerStore:
    paths = RepoPaths(root)
    paths.blocks.mkdir(parents=True, exist_ok=True)
    store = FileBlockStore(paths.blocks)
    store.put_many([SUBMISSION, OTHER_SUBMISSION, PAYLOAD])
    return LedgerStore(store, paths)


def test_an_accepted_submission_is_listed_after_a_restart_until_it_has_a_record(
    tmp_path: Path,
) -> None:
    before = ledger(tmp_path)
    assert before.accepted() == []
    before.accept(SUBMISSION.cid)
    before.accept(OTHER_SUBMISSION.cid)
    before.accept(SUBMISSION.cid)  # again: one mark
    after = ledger(tmp_path)  # a restart: a new store on the same repo
    assert sorted(after.accepted(), key=str) == sorted(
        [SUBMISSION.cid, OTHER_SUBMISSION.cid], key=str
    )
    after.append(SUBMISSION.cid, "exec.started", payload=PAYLOAD.cid, key=KEYS[0], ts=1)
    assert after.accepted() == [OTHER_SUBMISSION.cid]  # started: its ledger says the rest
    marks = sorted(p.name for p in (tmp_path / "ledger" / ACCEPTED_DIR).iterdir())
    assert marks == [OTHER_SUBMISSION.cid.encode()]


def test_stray_files_among_the_marks_are_ignored(tmp_path: Path) -> None:
    store = ledger(tmp_path)
    store.accept(SUBMISSION.cid)
    (tmp_path / "ledger" / ACCEPTED_DIR / ".x.tmp").write_bytes(b"")
    assert store.accepted() == [SUBMISSION.cid]
