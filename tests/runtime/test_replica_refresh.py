"""`refresh` of a replica (qflow_node/runtime/replica.py): a short chain of new records on
its heads is applied record by record; a longer gap is folded again from the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from qflow_node.cli.init_cmd import init_repo
from qflow_node.codec import CID
from qflow_node.core import engine as eng
from qflow_node.core.critical import CriticalKeys
from qflow_node.core.flow import FlowIR
from qflow_node.core.submission import Submission
from qflow_node.flow_loader import load_flow
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.runtime import replica as replica_module
from qflow_node.runtime.replay import Replay, replay
from qflow_node.runtime.session import local_runner
from qflow_node.store import FileBlockStore

MODULE = Path(__file__).resolve().parents[2] / "examples" / "steps" / "transform.wasm"
SEQUENTIAL = "name: chain\nsteps:\n" + "".join(
    f"  - id: s{i}\n    run: {MODULE}\n    with: {{user: {{first: '\"s{i}\"'}}, tags: '[{i}]'}}\n"
    for i in range(6)
)


@dataclass
class History:
    ledger: LedgerStore  # empty at first, over the blocks of the finished execution
    records: list[CID]  # the finished execution's records, in order
    exec: CID

    ir: FlowIR

    def replica_at(self, record: int) -> replica_module.Replica:
        """A replica brought up to `record` when the ledger held the records up to it.
        (A local run's execution has no pubsub submission; `refresh` never reads it.)"""
        self.ledger.merge(self.exec, [self.records[record]])
        state = eng.initial(self.ir, self.exec.encode())
        replica = replica_module.Replica(self.exec, cast(Submission, None), self.ir, {}, state)
        assert replica_module.refresh(replica, self.ledger)
        return replica


@pytest.fixture
def history(tmp_path: Path) -> History:
    repo = tmp_path / "repo"
    init_repo(repo)
    paths = RepoPaths(repo)
    store = FileBlockStore(paths.blocks)
    source = tmp_path / "chain.yaml"
    source.write_text(SEQUENTIAL, encoding="utf-8")
    loaded = load_flow(source, store=store)
    with local_runner(repo, loaded.compiled.ir) as runner:
        result = runner.run(loaded.cid, loaded.compiled.ir, {})
    assert result.status == "completed"
    records = [cid for cid, _ in LedgerStore(store, paths).replay(result.exec)]
    other = RepoPaths(tmp_path / "other")
    other.ledger.mkdir(parents=True)
    return History(LedgerStore(store, other), records, result.exec, loaded.compiled.ir)


def test_a_short_chain_is_applied_without_folding_the_ledger_again(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = history.replica_at(2)
    assert replica.records == 3

    def no_fold(*_args: object) -> Replay:
        raise AssertionError("folded the whole ledger again")

    monkeypatch.setattr(replica_module, "replay", no_fold)
    history.ledger.merge(history.exec, [history.records[4]])  # two records on
    assert replica_module.refresh(replica, history.ledger)
    assert replica.records == 5 and replica.heads == (history.records[4],)
    monkeypatch.undo()
    folded = replay(history.ledger, history.exec).state
    assert (replica.state.status, replica.state.instances) == (folded.status, folded.instances)


def test_a_longer_gap_is_folded_again(history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    replica = history.replica_at(0)
    folds: list[CID] = []

    def counted(ledger: LedgerStore, exec: CID, critical: CriticalKeys | None = None) -> Replay:
        folds.append(exec)
        return replay(ledger, exec, critical=critical)

    monkeypatch.setattr(replica_module, "replay", counted)
    history.ledger.merge(history.exec, [history.records[-1]])  # the other seven at once
    assert replica_module.refresh(replica, history.ledger)
    assert folds == [history.exec]
    assert replica.records == len(history.records) and replica.finished
