"""`qflow block fetch|fetch-dag` and `qflow node status` against a real control API
server (the node's methods over a local block store, no network)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner, Result

from qflow_node.api.methods import node_methods
from qflow_node.api.server import serve_api
from qflow_node.cli.main import qflow
from qflow_node.codec import dag_block, raw_block
from qflow_node.repo import RepoPaths
from qflow_node.store import FileBlockStore
from qflow_node.store.service import BlockService

WAIT = 10  # seconds: a bound on every wait, never an expected duration
STATUS = {"peer_id": "12D3KooWSelf", "peers": 2, "subnets": ["default"]}


@pytest.fixture
def repo() -> Iterator[Path]:
    # Short: the API socket path inside the repo must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="qf", dir="/tmp"))
    (root / "blocks").mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@asynccontextmanager
async def node(repo: Path) -> AsyncIterator[FileBlockStore]:
    store = FileBlockStore(repo / "blocks")
    handlers = node_methods(BlockService(store), status=lambda: dict(STATUS))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            await nursery.start(serve_api, RepoPaths(repo).api_socket, handlers)
        yield store
        nursery.cancel_scope.cancel()


async def qflow_in_thread(*args: str) -> Result:
    with trio.fail_after(WAIT):
        return await trio.to_thread.run_sync(partial(CliRunner().invoke, qflow, list(args)))


def assert_error(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr, result.stderr


async def test_fetch_writes_only_the_block_bytes_to_stdout(repo: Path) -> None:
    block = raw_block(bytes(range(256)))
    async with node(repo) as store:
        store.put(block)
        result = await qflow_in_thread("block", "fetch", "--repo", str(repo), block.cid.encode())
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == block.data
    assert result.stderr == ""


async def test_fetch_to_a_file(repo: Path) -> None:
    block = raw_block(b"to a file")
    out = repo / "out.bin"
    async with node(repo) as store:
        store.put(block)
        result = await qflow_in_thread(
            "block", "fetch", "--repo", str(repo), "--within", "2", "--out", str(out),
            block.cid.encode(),
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert out.read_bytes() == b"to a file"


async def test_fetch_of_a_block_nobody_has_exits_1(repo: Path) -> None:
    cid = raw_block(b"nowhere").cid.encode()
    async with node(repo):
        result = await qflow_in_thread("block", "fetch", "--repo", str(repo), cid)
    assert_error(result, 1, f"blocks not available from peers: {cid} (no_exchange)")


async def test_fetch_dag_prints_one_json_line(repo: Path) -> None:
    root = dag_block({"a": 1})
    async with node(repo) as store:
        store.put(root)
        result = await qflow_in_thread("block", "fetch-dag", "--repo", str(repo), root.cid.encode())
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert json.loads(result.stdout) == {
        "cid": root.cid.encode(),
        "blocks": 1,
        "fetched": 0,
        "fetched_bytes": 0,
        "local": 1,
    }


async def test_node_status(repo: Path) -> None:
    async with node(repo):
        table = await qflow_in_thread("node", "status", "--repo", str(repo))
        as_json = await qflow_in_thread("node", "status", "--repo", str(repo), "--json")
    assert table.exit_code == 0, table.stderr
    assert table.stdout.splitlines() == [
        "peer_id  12D3KooWSelf",
        "peers    2",
        'subnets  ["default"]',
    ]
    assert json.loads(as_json.stdout) == STATUS


def test_without_a_node_the_commands_say_how_to_start_one(repo: Path) -> None:
    cid = raw_block(b"x").cid.encode()
    hint = f"no node is running for repo {repo} (start it with `qflow node run --repo {repo}`)"
    for args in (["block", "fetch", cid], ["block", "fetch-dag", cid], ["node", "status"]):
        command, sub, *rest = args
        result = CliRunner().invoke(qflow, [command, sub, "--repo", str(repo), *rest])
        assert_error(result, 1, hint)


def test_fetch_checks_the_cid_before_calling_the_node(repo: Path) -> None:
    result = CliRunner().invoke(qflow, ["block", "fetch", "--repo", str(repo), "bafyNOPE"])
    assert_error(result, 2, "cannot parse CID 'bafyNOPE'")
