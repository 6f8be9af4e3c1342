"""`LedgerStore.rewind`: a head replaced by its parents, the head set kept an antichain.

The ledgers are real (a file block store and a heads journal per node, two or three
signing keys for two or three nodes); branches come from each node appending on its own
heads, joined with `merge` as records learnt from a peer would be.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qflow_node.codec import CID, Block
from qflow_node.core.ledger.testing import KEYS, PAYLOAD, SUBMISSION
from qflow_node.ledger_store import JOURNAL, LedgerStore, LedgerStoreError
from qflow_node.repo import RepoPaths
from qflow_node.store import FileBlockStore

EXEC = SUBMISSION.cid


def open_ledger(root: Path) -> LedgerStore:
    paths = RepoPaths(root)
    paths.blocks.mkdir(parents=True)
    store = FileBlockStore(paths.blocks)
    store.put_many([SUBMISSION, PAYLOAD])
    return LedgerStore(store, paths)


def journal(root: Path) -> Path:
    return RepoPaths(root).ledger / JOURNAL


def reopen(root: Path) -> LedgerStore:
    paths = RepoPaths(root)
    return LedgerStore(FileBlockStore(paths.blocks), paths)


class Nodes:
    """One ledger per node (same repo layout as a node's), records passed between them."""

    def __init__(self, tmp_path: Path, count: int) -> None:
        self.roots = [tmp_path / f"n{i}" for i in range(count)]
        self.ledgers = [open_ledger(root) for root in self.roots]
        self.ts = 1_700_000_000_000

    def append(self, node: int, kind: str = "step.completed") -> CID:
        self.ts += 1
        step = None if kind == "exec.started" else f"s{self.ts}"
        block = self.ledgers[node].append(
            EXEC, kind, payload=PAYLOAD.cid, key=KEYS[node], ts=self.ts, step=step
        )
        return block.cid

    def send(self, src: int, dst: int) -> None:
        """`dst` learns `src`'s heads (and every record under them), as after a fetch."""
        source, target = self.ledgers[src], self.ledgers[dst]
        target.store.put_many([Block(cid, source.store.get(cid)) for cid, _ in source.replay(EXEC)])
        report = target.merge(EXEC, source.heads(EXEC))
        assert report.ok, report.failure


def rewind_parents(ledger: LedgerStore, head: CID) -> tuple[CID, ...]:
    return tuple(ledger.record(head).prev)


def assert_verifies(ledger: LedgerStore) -> None:
    report = ledger.verify(EXEC)
    assert report.ok, report.failure
    assert report.heads == ledger.heads(EXEC)


def test_a_parent_under_another_head_is_dropped(tmp_path: Path) -> None:
    nodes = Nodes(tmp_path, 2)
    ours = nodes.ledgers[0]
    started = nodes.append(0, "exec.started")
    nodes.send(0, 1)
    mine = nodes.append(0)  # on `started`
    theirs = nodes.append(1)  # on `started` too, concurrent with `mine`
    nodes.send(1, 0)
    assert set(ours.heads(EXEC)) == {mine, theirs}
    assert_verifies(ours)

    assert rewind_parents(ours, mine) == (started,)
    assert ours.rewind(EXEC, mine, [started]) is True
    # Not {theirs, started}: `started` lies under `theirs`.
    assert ours.heads(EXEC) == (theirs,)
    assert_verifies(ours)
    assert ours.verify(EXEC).records == 2


def test_a_parent_under_no_other_head_becomes_a_head(tmp_path: Path) -> None:
    nodes = Nodes(tmp_path, 2)
    ours = nodes.ledgers[0]
    started = nodes.append(0, "exec.started")
    nodes.send(0, 1)
    first = nodes.append(0)
    second = nodes.append(0)  # on `first`
    theirs = nodes.append(1)  # on `started`
    nodes.send(1, 0)
    assert set(ours.heads(EXEC)) == {second, theirs}

    assert ours.rewind(EXEC, second, rewind_parents(ours, second)) is True
    assert set(ours.heads(EXEC)) == {first, theirs}
    assert len(ours.heads(EXEC)) == 2
    assert_verifies(ours)

    # Again: `first`'s parent `started` is under `theirs`, so only `theirs` remains.
    assert rewind_parents(ours, first) == (started,)
    assert ours.rewind(EXEC, first, rewind_parents(ours, first)) is True
    assert ours.heads(EXEC) == (theirs,)
    assert_verifies(ours)


def test_a_merge_record_rewound_keeps_only_the_parents_not_under_another_head(
    tmp_path: Path,
) -> None:
    nodes = Nodes(tmp_path, 3)
    ours = nodes.ledgers[0]
    nodes.append(0, "exec.started")
    nodes.send(0, 1)
    nodes.send(0, 2)
    a = nodes.append(0)
    b = nodes.append(1)
    nodes.send(1, 0)
    nodes.send(1, 2)
    merged = nodes.append(0)  # links a and b
    assert set(rewind_parents(ours, merged)) == {a, b}
    c = nodes.append(2)  # node 2 saw b (not a): c lies over b
    nodes.send(2, 0)
    assert set(ours.heads(EXEC)) == {merged, c}
    assert_verifies(ours)

    assert ours.rewind(EXEC, merged, rewind_parents(ours, merged)) is True
    assert set(ours.heads(EXEC)) == {a, c}  # b is under c
    assert len(ours.heads(EXEC)) == 2
    assert_verifies(ours)


def test_rewinding_a_cid_that_is_not_a_head_changes_nothing(tmp_path: Path) -> None:
    nodes = Nodes(tmp_path, 2)
    ours = nodes.ledgers[0]
    started = nodes.append(0, "exec.started")
    nodes.send(0, 1)
    mine = nodes.append(0)
    theirs = nodes.append(1)
    nodes.send(1, 0)
    index = journal(nodes.roots[0])
    before = index.read_bytes()
    heads = ours.heads(EXEC)

    assert ours.rewind(EXEC, started, []) is False  # under both heads, not a head
    assert ours.rewind(EXEC, PAYLOAD.cid, [started]) is False  # not a record at all
    assert ours.heads(EXEC) == heads
    assert set(heads) == {mine, theirs}
    assert index.read_bytes() == before
    assert_verifies(ours)

    # A rewind that already happened does not happen twice.
    assert ours.rewind(EXEC, mine, [started]) is True
    after = index.read_bytes()
    assert ours.rewind(EXEC, mine, [started]) is False
    assert index.read_bytes() == after
    assert ours.heads(EXEC) == (theirs,)
    assert_verifies(ours)


def test_rewinding_exec_started_forgets_the_execution(tmp_path: Path) -> None:
    nodes = Nodes(tmp_path, 1)
    ours = nodes.ledgers[0]
    started = nodes.append(0, "exec.started")
    assert reopen(nodes.roots[0]).executions() == [EXEC]
    assert ours.executions() == [EXEC]
    assert_verifies(ours)

    assert rewind_parents(ours, started) == ()
    assert ours.rewind(EXEC, started, []) is True
    reread = reopen(nodes.roots[0])  # the removal is in the journal
    assert reread.heads(EXEC) == () and reread.executions() == []
    assert ours.heads(EXEC) == ()
    assert ours.executions() == []
    with pytest.raises(LedgerStoreError, match="no local records"):
        ours.verify(EXEC)
    assert ours.rewind(EXEC, started, []) is False

    # The execution can start again from nothing, and verifies.
    again = ours.append(EXEC, "exec.started", payload=PAYLOAD.cid, key=KEYS[0], ts=1)
    assert ours.heads(EXEC) == (again.cid,)
    assert_verifies(ours)
