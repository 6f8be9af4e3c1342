"""A refused submission through the control API (`exec.status`, `exec.records`) and
`qflow watch|status` over the socket: `rejected`, with the reason, exit 1; a ledger or
a replica always wins over a rejection."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner, Result

from qflow_node.api.errors import ApiError
from qflow_node.api.exec_methods import exec_methods
from qflow_node.api.server import Handler, serve_api
from qflow_node.cli.init_cmd import init_repo
from qflow_node.cli.main import qflow
from qflow_node.codec import CID, dag_block
from qflow_node.flow_loader import load_flow
from qflow_node.identity import SigningKey
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.runtime.exec_view import exec_view
from qflow_node.runtime.session import local_runner
from qflow_node.store import FileBlockStore

WAIT = 20  # seconds: a bound on every wait, never an expected duration
GREET = Path(__file__).resolve().parents[2] / "examples" / "flows" / "greet.yaml"
EXEC = dag_block({"format": "qflow.submission/1", "nonce": b"\x02" * 16}).cid
PEER = SigningKey(b"\x07" * 32).peer_id
MESSAGE = "the inputs do not match the flow's schema: (root): 'who' is a required property"
REFUSED = {"reason": "bad_inputs", "message": MESSAGE, "by": PEER}


@pytest.fixture
def repo() -> Iterator[Path]:
    # Short: the API socket path inside the repo must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="qf", dir="/tmp")) / "r"
    init_repo(root)
    yield root
    shutil.rmtree(root.parent, ignore_errors=True)


def open_ledger(repo: Path) -> LedgerStore:
    paths = RepoPaths(repo)
    return LedgerStore(FileBlockStore(paths.blocks), paths)


def handlers(
    repo: Path, rejections: Mapping[CID, Mapping[str, str]], active: tuple[CID, ...] = ()
) -> dict[str, Handler]:
    return exec_methods(open_ledger(repo), active=lambda: list(active), rejected=rejections.get)


@asynccontextmanager
async def node(repo: Path, rejections: Mapping[CID, Mapping[str, str]]) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            await nursery.start(serve_api, RepoPaths(repo).api_socket, handlers(repo, rejections))
        yield
        nursery.cancel_scope.cancel()


async def qflow_in_thread(repo: Path, *args: str) -> Result:
    command = [*args, "--repo", str(repo)]
    with trio.fail_after(WAIT):
        return await trio.to_thread.run_sync(partial(CliRunner().invoke, qflow, command))


async def test_status_of_a_rejected_submission(repo: Path) -> None:
    api = handlers(repo, {EXEC: REFUSED})
    status = await api["exec.status"]({"exec": EXEC.encode()})
    assert status == {
        "exec": EXEC.encode(),
        "status": "rejected",
        "reason": "bad_inputs",
        "message": MESSAGE,
        "by": PEER,
        "flow": None,
        "records": 0,
        "heads": [],
        "started_at": None,
        "finished_at": None,
        "output": None,
        "error": {"kind": "bad_inputs", "message": MESSAGE},
        "steps": [],
    }
    records = await api["exec.records"]({"exec": EXEC.encode()})
    assert records == {
        "records": [],
        "status": "rejected",
        "total": 0,
        "after_cid": None,
        "more": False,
    }
    other = dag_block({"other": 1}).cid
    with pytest.raises(ApiError) as caught:
        await api["exec.status"]({"exec": other.encode()})
    assert caught.value.code == "not_found"


async def test_a_ledger_or_a_replica_wins_over_a_rejection(repo: Path) -> None:
    loaded = load_flow(GREET, store=FileBlockStore(RepoPaths(repo).blocks))
    with local_runner(repo, loaded.compiled.ir) as runner:
        ran = runner.run(loaded.cid, loaded.compiled.ir, {"who": "Ada"})
    # A peer says the execution was rejected; this node holds its ledger: the ledger.
    api = handlers(repo, {ran.exec: REFUSED, EXEC: REFUSED}, active=(EXEC,))
    status = await api["exec.status"]({"exec": ran.exec.encode()})
    assert status == exec_view(open_ledger(repo), ran.exec)
    # ... and it drives EXEC (a replica, no record yet): pending, not rejected.
    pending = await api["exec.status"]({"exec": EXEC.encode()})
    assert pending["status"] == "pending"


async def test_watch_and_status_show_the_reason_and_exit_1(repo: Path) -> None:
    exec = EXEC.encode()
    async with node(repo, {EXEC: REFUSED}):
        watched = await qflow_in_thread(repo, "watch", exec)
        as_json = await qflow_in_thread(repo, "watch", exec, "--json")
        status = await qflow_in_thread(repo, "status", exec)
        status_json = await qflow_in_thread(repo, "status", exec, "--json")
        logs = await qflow_in_thread(repo, "logs", exec)
    assert watched.exit_code == 1
    assert watched.stdout == f"exec {exec}: rejected\n"
    assert watched.stderr.splitlines() == [
        f"exec {exec}: rejected by …{PEER[-6:]}",
        f"error: bad_inputs: {MESSAGE}",
    ]
    assert as_json.exit_code == 1
    change, final = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert change == {"exec": exec, "status": "rejected"}
    assert final["by"] == PEER and final["reason"] == "bad_inputs"

    assert status.exit_code == 1
    lines = status.stdout.splitlines()
    assert f"status   rejected by …{PEER[-6:]}" in lines
    assert lines[-1] == f"error    bad_inputs: {MESSAGE}"
    assert status.stderr == ""
    assert status_json.exit_code == 1
    assert json.loads(status_json.stdout)["message"] == MESSAGE
    # No records, and that is all logs says.
    assert (logs.exit_code, logs.stdout) == (0, "")


async def test_the_listing_shows_recent_refusals_but_not_over_a_ledger(repo: Path) -> None:
    loaded = load_flow(GREET, store=FileBlockStore(RepoPaths(repo).blocks))
    with local_runner(repo, loaded.compiled.ir) as runner:
        ran = runner.run(loaded.cid, loaded.compiled.ir, {"who": "Ada"})
    old = dag_block({"format": "qflow.submission/1", "nonce": b"\x03" * 16}).cid
    now_ms = time.time_ns() // 1_000_000
    learnt = {EXEC: now_ms, ran.exec: now_ms, old: now_ms - 2 * 3600 * 1000}
    rejections = {EXEC: REFUSED, ran.exec: REFUSED, old: REFUSED}
    api = exec_methods(
        open_ledger(repo),
        active=tuple,
        rejected=rejections.get,
        refusals=lambda: list(learnt.items()),
    )
    listed = (await api["exec.list"]({}))["executions"]
    by_exec = {row["exec"]: row for row in listed}
    assert by_exec[EXEC.encode()] == {
        "exec": EXEC.encode(),
        "updated_at": now_ms,
        "status": "rejected",
        "records": 0,
    }
    assert by_exec[ran.exec.encode()]["status"] == "completed"  # its ledger wins
    assert old.encode() not in by_exec  # refused two hours ago: only with `all`
    everything = (await api["exec.list"]({"all": True}))["executions"]
    assert old.encode() in {row["exec"] for row in everything}
