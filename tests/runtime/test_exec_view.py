"""`exec_view`: an execution's status and step rows from real ledgers written by the local
runner, with a fake clock so that every record's ts is known."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qflow_node.cli.init_cmd import init_repo
from qflow_node.codec import raw_block
from qflow_node.flow_loader import load_flow
from qflow_node.identity.keys import SigningKey
from qflow_node.identity.store import load_node_key
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.runtime.exec_view import (
    MAX_INLINE_PAYLOAD,
    ExecNotFoundError,
    exec_view,
    payload_json,
    pending_view,
    record_json,
)
from qflow_node.runtime.local import RunResult
from qflow_node.runtime.session import local_runner
from qflow_node.store import FileBlockStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "flows"
T0 = 1_700_000_000_000
IMAGES = {
    "images": [{"name": "a", "width": 3, "height": 4}, {"name": "b", "width": 9, "height": 2}]
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    init_repo(root)
    return root


def open_ledger(repo: Path) -> LedgerStore:
    paths = RepoPaths(repo)
    return LedgerStore(FileBlockStore(paths.blocks), paths)


def run_flow(repo: Path, flow: str, inputs: Any, *, step_ms: int = 10) -> RunResult:
    """Run an example flow to its end; the clock moves `step_ms` per reading, and sleeps
    move it by their length (nothing waits)."""
    loaded = load_flow(EXAMPLES / flow, store=FileBlockStore(RepoPaths(repo).blocks))
    now = [T0]

    def clock() -> int:
        now[0] += step_ms
        return now[0]

    def sleep(seconds: float) -> None:
        now[0] += int(seconds * 1000)

    with local_runner(repo, loaded.compiled.ir, clock=clock, sleep=sleep) as runner:
        return runner.run(loaded.cid, loaded.compiled.ir, inputs)


def ts_of(repo: Path, result: RunResult) -> Callable[[str, str | None], int]:
    """The ts of the first record of `kind` (for `step`) in the ledger."""
    records = [record for _, record in open_ledger(repo).replay(result.exec)]

    def find(kind: str, step: str | None = None) -> int:
        return next(r.ts for r in records if r.kind == kind and r.step == step)

    return find


def test_a_completed_execution(repo: Path) -> None:
    result = run_flow(repo, "greet.yaml", {"who": "Ada"})
    ledger = open_ledger(repo)
    view = exec_view(ledger, result.exec)
    ts = ts_of(repo, result)
    me = load_node_key(RepoPaths(repo)).peer_id
    started, finished = ts("exec.started", None), ts("exec.completed", None)
    assert view == {
        "exec": result.exec.encode(),
        "status": "completed",
        "flow": load_flow(EXAMPLES / "greet.yaml").cid.encode(),
        "records": 3,
        "heads": [h.encode() for h in result.heads],
        "started_at": started,
        "finished_at": finished,
        "output": "Hello, Ada!",
        "error": None,
        "steps": [
            {
                "step": "greeting",
                "status": "completed",
                "attempt": 1,
                "node": me,
                # No step.started: it started with the record before its first (exec.started).
                "started_at": started,
                "finished_at": ts("step.completed", "greeting"),
                "duration_ms": ts("step.completed", "greeting") - started,
                "error": None,
            }
        ],
    }
    assert view["steps"][0]["duration_ms"] > 0


def test_a_failed_execution_has_its_error_and_the_failed_step(repo: Path) -> None:
    result = run_flow(repo, "validate.yaml", {"user": {"email": "ab", "age": 3}})
    view = exec_view(open_ledger(repo), result.exec)
    error = {
        "kind": "validation",
        "message": "age: 3 is less than the minimum of 18; "
        "email: 'ab' does not match '^[^@]+@[^@]+$'",
    }
    assert (view["status"], view["output"], view["error"]) == ("failed", None, error)
    assert view["finished_at"] == ts_of(repo, result)("exec.failed", None)
    [row] = view["steps"]  # `welcome` never ran: no record, no row
    assert (row["step"], row["status"], row["attempt"], row["error"]) == (
        "payload",
        "failed",
        1,
        error,
    )
    assert row["duration_ms"] == row["finished_at"] - row["started_at"]


def test_foreach_rows_come_in_ledger_order(repo: Path) -> None:
    result = run_flow(repo, "foreach.yaml", IMAGES)
    view = exec_view(open_ledger(repo), result.exec)
    assert view["status"] == "completed"
    records = [r for _, r in open_ledger(repo).replay(result.exec)]
    first_seen = list(dict.fromkeys(r.step for r in records if r.step is not None))
    assert [row["step"] for row in view["steps"]] == first_seen
    assert set(first_seen) == {
        "resized",
        "resized[0]/size",
        "resized[1]/size",
        "resized[0]/label",
        "resized[1]/label",
    }
    # Every start is the ts of the record just before the step's first record.
    by_step = {row["step"]: row for row in view["steps"]}
    for step, row in by_step.items():
        first = next(i for i, r in enumerate(records) if r.step == step)
        assert row["started_at"] == records[first - 1].ts
        assert row["duration_ms"] == row["finished_at"] - row["started_at"]


def test_a_timed_step_starts_at_its_step_started_record(repo: Path) -> None:
    result = run_flow(repo, "sleep.yaml", {"subject": "tax"})
    view = exec_view(open_ledger(repo), result.exec)
    ts = ts_of(repo, result)
    wait, remind = view["steps"]
    assert wait["step"] == "wait_a_day"
    assert wait["started_at"] == ts("step.started", "wait_a_day")
    assert wait["finished_at"] == ts("timer.fired", "wait_a_day")
    assert wait["duration_ms"] >= 86_400_000  # the day it slept, by the fake clock
    # The next step starts with the record before its first: the timer firing.
    assert remind["started_at"] == ts("timer.fired", "wait_a_day")


def test_an_unfinished_execution_has_no_finish(repo: Path) -> None:
    loaded = load_flow(EXAMPLES / "sleep.yaml", store=FileBlockStore(RepoPaths(repo).blocks))
    with local_runner(repo, loaded.compiled.ir, max_wait_ms=0) as runner:
        result = runner.run(loaded.cid, loaded.compiled.ir, {"subject": "x"})
    view = exec_view(open_ledger(repo), result.exec)
    assert (view["status"], view["finished_at"], view["output"]) == ("running", None, None)
    [row] = view["steps"]
    assert (row["status"], row["finished_at"], row["duration_ms"]) == ("started", None, None)
    assert row["started_at"] is not None


def test_unknown_and_pending_executions(repo: Path) -> None:
    ledger = open_ledger(repo)
    unknown = raw_block(b"nothing").cid
    with pytest.raises(ExecNotFoundError, match=f"no records of execution {unknown.encode()}"):
        exec_view(ledger, unknown)
    pending = pending_view(ledger, unknown)
    assert (pending["status"], pending["records"], pending["steps"], pending["flow"]) == (
        "pending",
        0,
        [],
        None,  # its submission is not here either
    )


def test_record_payloads(repo: Path) -> None:
    result = run_flow(repo, "greet.yaml", {"who": "Ada"})
    ledger = open_ledger(repo)
    rows = [
        record_json(ledger.store, i, c, r) for i, (c, r) in enumerate(ledger.replay(result.exec))
    ]
    assert [(r["index"], r["kind"], r["step"], r["attempt"]) for r in rows] == [
        (0, "exec.started", None, 0),
        (1, "step.completed", "greeting", 1),
        (2, "exec.completed", None, 0),
    ]
    submission = ledger.store.get(result.exec)
    # exec.started's payload is the submission (dag-cbor): by reference.
    assert rows[0]["payload"] == {"cid": result.exec.encode(), "size": len(submission)}
    assert rows[1]["payload"] == rows[2]["payload"] == "Hello, Ada!"
    big = raw_block(b'"' + b"x" * MAX_INLINE_PAYLOAD + b'"')
    nan = raw_block(b"NaN")
    ledger.store.put_many([big, nan])
    assert payload_json(ledger.store, big.cid) == {"cid": big.cid.encode(), "size": len(big.data)}
    assert payload_json(ledger.store, nan.cid) == {"cid": nan.cid.encode(), "size": 3}
    missing = raw_block(b"1").cid
    assert payload_json(ledger.store, missing) == {"cid": missing.encode(), "size": None}


def test_a_rejected_record_makes_no_row(repo: Path) -> None:
    result = run_flow(repo, "greet.yaml", {"who": "Ada"})
    ledger = open_ledger(repo)
    extra = raw_block(b'"again"')
    ledger.store.put(extra)
    key: SigningKey = load_node_key(RepoPaths(repo))
    ledger.append(result.exec, "step.completed", payload=extra.cid, key=key, step="nope", attempt=1)
    view = exec_view(ledger, result.exec)
    assert view["records"] == 4  # every record of the ledger, applied or not
    assert [row["step"] for row in view["steps"]] == ["greeting"]
