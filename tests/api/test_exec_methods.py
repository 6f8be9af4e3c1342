"""`exec.status`, `exec.list`, `exec.records` over real ledgers written by the local
runner (the handlers called directly; tests/cli/test_exec_cmds.py goes over the socket)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from qflow_node.api import exec_methods as em
from qflow_node.api.errors import ApiError
from qflow_node.api.exec_methods import exec_methods
from qflow_node.api.server import Handler
from qflow_node.appendlog import AppendLog
from qflow_node.codec import CID, DAG_CBOR, cid_for, raw_block
from qflow_node.core.submission import build_submission
from qflow_node.flow_loader import load_flow
from qflow_node.identity.store import load_node_key
from qflow_node.ledger_store import JOURNAL, LedgerStore, heads_entry
from qflow_node.repo import RepoPaths
from qflow_node.runtime.exec_view import exec_view
from qflow_node.runtime.local import RunResult
from qflow_node.runtime.session import local_runner
from qflow_node.store import FileBlockStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "flows"
IMAGES = {
    "images": [{"name": "a", "width": 3, "height": 4}, {"name": "b", "width": 9, "height": 2}]
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    from qflow_node.cli.init_cmd import init_repo

    root = tmp_path / "repo"
    init_repo(root)
    return root


def open_ledger(repo: Path) -> LedgerStore:
    paths = RepoPaths(repo)
    return LedgerStore(FileBlockStore(paths.blocks), paths)


def run_flow(repo: Path, flow: str, inputs: Any, **options: Any) -> RunResult:
    loaded = load_flow(EXAMPLES / flow, store=FileBlockStore(RepoPaths(repo).blocks))
    with local_runner(repo, loaded.compiled.ir, **options) as runner:
        return runner.run(loaded.cid, loaded.compiled.ir, inputs)


def methods(repo: Path, active: list[CID] | None = None) -> dict[str, Handler]:
    driving = active if active is not None else []
    return exec_methods(open_ledger(repo), active=lambda: list(driving))


async def error_of(handler: Handler, params: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await handler(params)
    return caught.value


def set_heads(repo: Path, exec: CID, heads: tuple[CID, ...], at: float) -> None:
    """Append a heads-journal entry as the node would have written it at `at`."""
    log = AppendLog.open(RepoPaths(repo).ledger / JOURNAL)
    log.append([heads_entry(exec, heads, at)])
    log.close()


def age_heads(repo: Path, exec: CID, seconds: float) -> None:
    set_heads(repo, exec, open_ledger(repo).heads(exec), time.time() - seconds)


async def test_status_is_the_view_of_the_ledger(repo: Path) -> None:
    greet = run_flow(repo, "greet.yaml", {"who": "Ada"})
    failed = run_flow(repo, "validate.yaml", {"user": {"email": "ab", "age": 3}})
    api = methods(repo)
    for result in (greet, failed):
        status = await api["exec.status"]({"exec": result.exec.encode()})
        assert status == exec_view(open_ledger(repo), result.exec)
    status = await api["exec.status"]({"exec": failed.exec.encode()})
    assert (status["status"], status["error"]["kind"]) == ("failed", "validation")


async def test_status_of_an_unknown_execution_is_not_found(repo: Path) -> None:
    unknown = raw_block(b"?").cid.encode()
    error = await error_of(methods(repo)["exec.status"], {"exec": unknown})
    assert error.code == "not_found"
    assert error.message == (
        f"this node holds no records of execution {unknown} and is not running it "
        "(another repo, or a submission this node has not heard of?)"
    )
    error = await error_of(methods(repo)["exec.records"], {"exec": unknown})
    assert error.code == "not_found"


async def test_an_execution_driven_without_records_is_pending(repo: Path) -> None:
    paths = RepoPaths(repo)
    loaded = load_flow(EXAMPLES / "greet.yaml", store=FileBlockStore(paths.blocks))
    inputs = raw_block(b'{"who":"Ada"}')
    submission = build_submission(
        load_node_key(paths), flow=loaded.cid, inputs=inputs.cid, nonce=bytes(16), ts=1
    )
    open_ledger(repo).store.put_many([submission, inputs])
    api = methods(repo, active=[submission.cid])
    status = await api["exec.status"]({"exec": submission.cid.encode()})
    assert status == {
        "exec": submission.cid.encode(),
        "status": "pending",
        "flow": loaded.cid.encode(),
        "records": 0,
        "heads": [],
        "started_at": None,
        "finished_at": None,
        "output": None,
        "error": None,
        "steps": [],
    }
    records = await api["exec.records"]({"exec": submission.cid.encode()})
    assert (records["records"], records["status"], records["total"]) == ([], "pending", 0)
    listing = await api["exec.list"]({})
    assert listing["executions"] == [
        {"exec": submission.cid.encode(), "updated_at": None, "status": "pending", "records": 0}
    ]


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("exec.status", {}, "params.exec must be a CID string (e.g. bafy…)"),
        ("exec.status", {"exec": "bafyNOPE"}, "params.exec: cannot parse CID 'bafyNOPE'"),
        ("exec.status", {"exec": "x", "cid": "y"}, "unknown params for exec.status: cid"),
        ("exec.list", {"all": 1}, "params.all must be true or false"),
        ("exec.list", {"every": True}, "unknown params for exec.list: every (expected: all)"),
        ("exec.records", {"exec": "x", "after": -2}, "params.after must be a record index"),
        ("exec.records", {"exec": "x", "after": True}, "params.after must be a record index"),
        ("exec.records", {"exec": "x", "after": 1.5}, "params.after must be a record index"),
    ],
)
async def test_bad_params(repo: Path, method: str, params: dict[str, Any], message: str) -> None:
    if params.get("exec") == "x":
        params = {**params, "exec": raw_block(b"x").cid.encode()}
    error = await error_of(methods(repo)[method], params)
    assert error.code == "bad_request"
    assert message in error.message


async def test_list_shows_active_and_recently_finished_executions(repo: Path) -> None:
    old = run_flow(repo, "greet.yaml", {"who": "Old"})
    recent = run_flow(repo, "greet.yaml", {"who": "New"})
    waiting = run_flow(repo, "sleep.yaml", {"subject": "x"}, max_wait_ms=0)  # running
    driven = run_flow(repo, "sleep.yaml", {"subject": "y"}, max_wait_ms=0)
    for result in (old, waiting, driven):
        age_heads(repo, result.exec, 2 * em.RECENT_S)
    age_heads(repo, recent.exec, 60)
    api = methods(repo, active=[driven.exec])
    rows = (await api["exec.list"]({}))["executions"]
    assert [(r["exec"], r["status"], r["records"]) for r in rows] == [
        (recent.exec.encode(), "completed", 3),
        (driven.exec.encode(), "running", 2),
    ]
    assert all(isinstance(r["updated_at"], int) for r in rows)
    every = (await api["exec.list"]({"all": True}))["executions"]
    assert {r["exec"] for r in every} == {r.exec.encode() for r in (old, recent, waiting, driven)}
    updated = [r["updated_at"] for r in every]
    assert updated == sorted(updated, reverse=True)  # newest first


async def test_list_reports_an_unreadable_ledger_without_failing(repo: Path) -> None:
    good = run_flow(repo, "greet.yaml", {"who": "Ada"})
    bad = run_flow(repo, "greet.yaml", {"who": "Bo"})
    absent = cid_for(b"never stored", DAG_CBOR)
    set_heads(repo, bad.exec, (absent,), time.time())  # heads naming a missing record
    api = methods(repo)
    rows = {r["exec"]: r for r in (await api["exec.list"]({"all": True}))["executions"]}
    assert rows[good.exec.encode()]["status"] == "completed"
    broken = rows[bad.exec.encode()]
    assert (broken["status"], broken["records"]) == ("invalid", None)
    assert f"missing_block at {absent.encode()}" in broken["error"]
    error = await error_of(api["exec.status"], {"exec": bad.exec.encode()})
    assert error.code == "store_error"
    assert error.message.startswith(f"the ledger of {bad.exec.encode()} cannot be read: ")


async def test_records_in_replay_order_and_after(repo: Path) -> None:
    result = run_flow(repo, "foreach.yaml", IMAGES)
    api = methods(repo)
    exec = result.exec.encode()
    everything = await api["exec.records"]({"exec": exec})
    ledger = open_ledger(repo)
    expected = [(c.encode(), r.kind, r.step) for c, r in ledger.replay(result.exec)]
    assert [(r["cid"], r["kind"], r["step"]) for r in everything["records"]] == expected
    assert [r["index"] for r in everything["records"]] == list(range(len(expected)))
    assert (everything["status"], everything["total"], everything["more"]) == (
        "completed",
        len(expected),
        False,
    )
    assert everything["after_cid"] is None
    assert set(everything["records"][0]) == {
        "index", "cid", "kind", "step", "attempt", "node", "actor", "ts", "payload",
    }  # fmt: skip
    tail = await api["exec.records"]({"exec": exec, "after": 4})
    assert tail["records"] == everything["records"][5:]
    assert tail["after_cid"] == everything["records"][4]["cid"]
    beyond = await api["exec.records"]({"exec": exec, "after": 99})
    assert (beyond["records"], beyond["after_cid"], beyond["more"]) == ([], None, False)


async def test_records_come_in_pages(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(em, "MAX_RECORDS_PAGE", 3)
    result = run_flow(repo, "foreach.yaml", IMAGES)
    api = methods(repo)
    seen: list[int] = []
    after = -1
    for _ in range(10):  # bounded: 7 records, 3 a page
        page = await api["exec.records"]({"exec": result.exec.encode(), "after": after})
        seen += [r["index"] for r in page["records"]]
        after = seen[-1]
        if not page["more"]:
            break
    assert seen == list(range(7))


async def test_unchanged_heads_are_not_replayed_again(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_flow(repo, "greet.yaml", {"who": "Ada"})
    calls: list[CID] = []
    real = exec_view

    def counting(ledger: LedgerStore, exec: CID) -> dict[str, Any]:
        calls.append(exec)
        return real(ledger, exec)

    monkeypatch.setattr(em, "exec_view", counting)
    ledger = open_ledger(repo)  # the node's: the one its API reads and its services write
    api = exec_methods(ledger, active=list)
    params = {"exec": result.exec.encode()}
    first = await api["exec.status"](params)
    assert await api["exec.status"](params) == first
    assert len(calls) == 1
    # A new record moves the heads: the next answer replays and shows it.
    extra = raw_block(b'"again"')
    ledger.store.put(extra)
    key = load_node_key(RepoPaths(repo))
    ledger.append(result.exec, "step.completed", payload=extra.cid, key=key, step="x", attempt=1)
    again = await api["exec.status"](params)
    assert (len(calls), again["records"]) == (2, 4)
