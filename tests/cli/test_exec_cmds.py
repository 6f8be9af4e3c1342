"""`qflow watch|status|logs` against a real control API server (`exec_methods` over
ledgers written by the local runner), and their polling logic against scripted answers."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner, Result

from qflow_node.api.exec_methods import exec_methods
from qflow_node.api.server import serve_api
from qflow_node.cli import exec_cmds
from qflow_node.cli.init_cmd import init_repo
from qflow_node.cli.main import qflow
from qflow_node.codec import CID, raw_block
from qflow_node.flow_loader import load_flow
from qflow_node.identity.store import load_node_key
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.runtime.local import RunResult
from qflow_node.runtime.session import local_runner
from qflow_node.store import FileBlockStore

WAIT = 20  # seconds: a bound on every wait, never an expected duration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "flows"


@pytest.fixture
def repo() -> Iterator[Path]:
    # Short: the API socket path inside the repo must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="qf", dir="/tmp")) / "r"
    init_repo(root)
    yield root
    shutil.rmtree(root.parent, ignore_errors=True)


def run_flow(repo: Path, flow: str, inputs: Any, **options: Any) -> RunResult:
    loaded = load_flow(EXAMPLES / flow, store=FileBlockStore(RepoPaths(repo).blocks))
    with local_runner(repo, loaded.compiled.ir, **options) as runner:
        return runner.run(loaded.cid, loaded.compiled.ir, inputs)


def open_ledger(repo: Path) -> LedgerStore:
    paths = RepoPaths(repo)
    return LedgerStore(FileBlockStore(paths.blocks), paths)


@asynccontextmanager
async def node(repo: Path, active: tuple[CID, ...] = ()) -> AsyncIterator[None]:
    handlers = exec_methods(open_ledger(repo), active=lambda: list(active))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            await nursery.start(serve_api, RepoPaths(repo).api_socket, handlers)
        yield
        nursery.cancel_scope.cancel()


async def qflow_in_thread(repo: Path, *args: str) -> Result:
    command = [*args, "--repo", str(repo)]
    with trio.fail_after(WAIT):
        return await trio.to_thread.run_sync(partial(CliRunner().invoke, qflow, command))


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


# -- watch ----------------------------------------------------------------------------------


async def test_watch_a_completed_execution_exits_0_with_its_output(repo: Path) -> None:
    result = run_flow(repo, "greet.yaml", {"who": "Ada"})
    exec = result.exec.encode()
    async with node(repo):
        watched = await qflow_in_thread(repo, "watch", exec)
    assert watched.exit_code == 0, watched.stderr
    lines = watched.stdout.splitlines()
    assert lines[0].startswith("greeting: completed (attempt 1, node …")
    assert lines[1:] == [f"exec {exec}: completed", '"Hello, Ada!"']
    assert watched.stderr == f"exec {exec}: completed\n"


async def test_watch_a_failed_execution_exits_1_with_its_error(repo: Path) -> None:
    result = run_flow(repo, "validate.yaml", {"user": {"email": "ab", "age": 3}})
    exec = result.exec.encode()
    async with node(repo):
        watched = await qflow_in_thread(repo, "watch", exec)
    assert watched.exit_code == 1
    assert "payload: failed (attempt 1" in watched.stdout
    assert watched.stdout.splitlines()[-1] == f"exec {exec}: failed"
    assert watched.stderr.splitlines() == [
        f"exec {exec}: failed",
        "error: validation: age: 3 is less than the minimum of 18; "
        "email: 'ab' does not match '^[^@]+@[^@]+$'",
    ]


async def test_watch_json_prints_changes_then_the_final_status(repo: Path) -> None:
    result = run_flow(repo, "greet.yaml", {"who": "Ada"})
    exec = result.exec.encode()
    async with node(repo):
        watched = await qflow_in_thread(repo, "watch", exec, "--json")
        status = await qflow_in_thread(repo, "status", exec, "--json")
    assert watched.exit_code == 0, watched.stderr
    step, change, final = json_lines(watched.stdout)
    assert (step["step"], step["status"], step["attempt"]) == ("greeting", "completed", 1)
    assert change == {"exec": exec, "status": "completed"}
    assert final == json.loads(status.stdout)
    assert final["output"] == "Hello, Ada!"
    assert watched.stderr == ""


async def test_watch_times_out_on_an_execution_that_does_not_end(repo: Path) -> None:
    result = run_flow(repo, "sleep.yaml", {"subject": "x"}, max_wait_ms=0)
    exec = result.exec.encode()
    async with node(repo):
        watched = await qflow_in_thread(
            repo, "watch", exec, "--timeout", "0.3", "--interval", "0.05"
        )
    assert watched.exit_code == 1
    assert "wait_a_day: started" in watched.stdout
    assert watched.stderr == f"error: timed out after 0.3 s: execution {exec} is still running\n"


async def test_watch_an_unknown_execution_exits_1(repo: Path) -> None:
    unknown = raw_block(b"?").cid.encode()
    async with node(repo):
        watched = await qflow_in_thread(repo, "watch", unknown)
    assert watched.exit_code == 1
    assert watched.stderr.startswith(f"error: this node holds no records of execution {unknown}")


async def test_watch_on_a_terminal_draws_the_step_table(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exec_cmds, "_stdout_is_terminal", lambda: True)
    result = run_flow(repo, "greet.yaml", {"who": "Ada"})
    async with node(repo):
        watched = await qflow_in_thread(repo, "watch", result.exec.encode())
    assert watched.exit_code == 0, watched.stderr
    header = next(line for line in watched.stdout.splitlines() if "step" in line)
    cells = [cell.strip() for cell in header.split("┃")[1:-1]]
    assert cells == ["step", "status", "node", "attempt", "duration"]
    assert "greeting" in watched.stdout and "completed" in watched.stdout
    assert watched.stdout.endswith('"Hello, Ada!"\n')


def test_watch_prints_each_change_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    row = {"step": "a", "status": "started", "attempt": 1, "node": "12D3KooWabcdef123456",
           "started_at": 1, "finished_at": None, "duration_ms": None, "error": None}  # fmt: skip
    done = {**row, "status": "completed", "finished_at": 1501, "duration_ms": 1500}
    base = {"exec": "bafyX", "output": 7, "error": None, "started_at": 1, "finished_at": None}
    answers: list[dict[str, Any] | None] = [
        {**base, "status": "pending", "steps": []},
        None,  # the node was too busy to answer in time: asked again
        {**base, "status": "running", "steps": [row]},
        {**base, "status": "running", "steps": [row]},
        {**base, "status": "completed", "steps": [done]},
    ]
    monkeypatch.setattr(exec_cmds, "_poll_status", lambda *args: answers.pop(0))
    monkeypatch.setattr(exec_cmds, "_exec_id", lambda text: text)
    watched = CliRunner().invoke(qflow, ["watch", "bafyX", "--interval", "0.01"])
    assert watched.exit_code == 0, watched.output
    assert watched.stdout.splitlines() == [
        "exec bafyX: pending",
        "a: started (attempt 1, node …123456)",
        "exec bafyX: running",
        "a: completed (attempt 1, node …123456, 1.5 s)",
        "exec bafyX: completed",
        "7",
    ]
    assert answers == []


# -- status ---------------------------------------------------------------------------------


async def test_status_lists_and_shows_executions(repo: Path) -> None:
    greet = run_flow(repo, "greet.yaml", {"who": "Ada"}).exec.encode()
    failed = run_flow(repo, "validate.yaml", {"user": {"email": "ab", "age": 3}}).exec.encode()
    async with node(repo):
        listed = await qflow_in_thread(repo, "status")
        as_json = await qflow_in_thread(repo, "status", "--all", "--json")
        one = await qflow_in_thread(repo, "status", greet)
        both = await qflow_in_thread(repo, "status", greet, "--all")
    assert listed.exit_code == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["EXEC", "STATUS", "RECORDS", "UPDATED"]
    assert sorted(row.split()[:3] for row in rows) == sorted(
        [[greet, "completed", "3"], [failed, "failed", "3"]]
    )
    assert all(row.endswith(" ago") for row in rows)
    executions = json.loads(as_json.stdout)["executions"]
    assert {(e["exec"], e["status"]) for e in executions} == {
        (greet, "completed"),
        (failed, "failed"),
    }
    assert one.exit_code == 0, one.stderr
    lines = one.stdout.splitlines()
    assert lines[:4] == [
        f"exec     {greet}",
        f"flow     {load_flow(EXAMPLES / 'greet.yaml').cid.encode()}",
        "status   completed",
        "records  3",
    ]
    assert any(line.startswith("│ greeting") for line in lines)
    assert lines[-1] == 'output   "Hello, Ada!"'
    assert (both.exit_code, both.stderr) == (
        2,
        "error: --all lists executions; it does not go with EXEC\n",
    )


async def test_status_without_executions(repo: Path) -> None:
    async with node(repo):
        listed = await qflow_in_thread(repo, "status")
    assert listed.stdout == "no executions (--all shows those that finished over an hour ago)\n"


# -- logs -----------------------------------------------------------------------------------


async def test_logs_print_a_line_per_record(repo: Path) -> None:
    result = run_flow(repo, "greet.yaml", {"who": "Ada"})
    exec = result.exec.encode()
    peer = load_node_key(RepoPaths(repo)).peer_id
    async with node(repo):
        logs = await qflow_in_thread(repo, "logs", exec)
        as_json = await qflow_in_thread(repo, "logs", exec, "--json")
        followed = await qflow_in_thread(repo, "logs", exec, "--follow")
    assert logs.exit_code == 0, logs.stderr
    lines = logs.stdout.splitlines()
    assert [line.split()[1:4] for line in lines] == [
        [f"…{peer[-6:]}", "exec.started", "-"],
        [f"…{peer[-6:]}", "step.completed", "greeting#1"],
        [f"…{peer[-6:]}", "exec.completed", "-"],
    ]
    size = len(open_ledger(repo).store.get(result.exec))
    assert lines[0].endswith(f"<{exec} {size} B>")
    assert lines[1].endswith('"Hello, Ada!"')
    records = json_lines(as_json.stdout)
    assert [r["index"] for r in records] == [0, 1, 2]
    assert records[1]["payload"] == "Hello, Ada!"
    assert (followed.exit_code, followed.stdout) == (0, logs.stdout)


async def test_logs_follow_of_a_failed_execution_exits_1(repo: Path) -> None:
    result = run_flow(repo, "validate.yaml", {"user": {"email": "ab", "age": 3}})
    async with node(repo):
        followed = await qflow_in_thread(repo, "logs", result.exec.encode(), "-f")
    assert followed.exit_code == 1
    assert len(followed.stdout.splitlines()) == 3


def test_logs_follow_rereads_when_a_record_sorts_in_earlier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def record(index: int, cid: str) -> dict[str, Any]:
        return {"index": index, "cid": cid, "kind": "step.completed", "step": "s", "attempt": 1,
                "node": "12D3KooWpeer01", "actor": None, "ts": 0, "payload": cid}  # fmt: skip

    def page(after_cid: str | None, status: str, *records: dict[str, Any]) -> dict[str, Any]:
        return {"records": list(records), "status": status, "total": 0,
                "after_cid": after_cid, "more": False}  # fmt: skip

    answers = [
        page(None, "running", record(0, "A"), record(1, "B")),
        # B is no longer at index 1: a concurrent record X sorted in before it.
        page("X", "running"),
        page(None, "running", record(0, "A"), record(1, "X"), record(2, "B"), record(3, "C")),
        page("C", "completed"),
    ]
    calls: list[dict[str, Any]] = []

    def fake_call(repo: Path, method: str, params: dict[str, Any], **kw: Any) -> Any:
        calls.append(params)
        return answers.pop(0)

    monkeypatch.setattr(exec_cmds, "_call", fake_call)
    monkeypatch.setattr(exec_cmds, "_exec_id", lambda text: text)
    followed = CliRunner().invoke(qflow, ["logs", "E", "-f", "--json", "--interval", "0.01"])
    assert followed.exit_code == 0, followed.output
    assert [r["cid"] for r in json_lines(followed.stdout)] == ["A", "B", "X", "C"]
    assert [c["after"] for c in calls] == [-1, 1, -1, 3]


def test_without_a_node_the_commands_say_how_to_start_one(repo: Path) -> None:
    exec = raw_block(b"x").cid.encode()
    hint = f"no node is running for repo {repo} (start it with `qflow node run --repo {repo}`)"
    for args in (["watch", exec], ["status"], ["status", exec], ["logs", exec]):
        result = CliRunner().invoke(qflow, [*args, "--repo", str(repo)])
        assert (result.exit_code, result.stdout) == (1, ""), args
        assert result.stderr == f"error: {hint}\n"


def test_a_bad_exec_id_is_a_usage_error(repo: Path) -> None:
    result = CliRunner().invoke(qflow, ["watch", "bafyNOPE", "--repo", str(repo)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot parse CID 'bafyNOPE'")
