"""`qflow submit` against a real control API server whose `submit` callback records what
it is given (the node side behind it — storing, gossip, replicas — is tested elsewhere)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner, Result

from qflow_node.api.errors import BAD_REQUEST, ApiError
from qflow_node.api.methods import Submit, node_methods
from qflow_node.api.server import serve_api
from qflow_node.cli.init_cmd import init_repo
from qflow_node.cli.main import qflow
from qflow_node.codec import CID, Block, decode_dag
from qflow_node.core.submission import verify_submission
from qflow_node.identity.keys import SigningKey
from qflow_node.identity.store import create_actor_key
from qflow_node.repo import RepoPaths
from qflow_node.store import FileBlockStore
from qflow_node.store.service import BlockService

WAIT = 10  # seconds: a bound on every wait, never an expected duration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GREET = """\
name: greet
inputs:
  type: object
  properties:
    who: {type: string}
steps:
  - id: greeting
    transform: '"Hello, " + string(inputs.who) + "!"'
"""


@dataclass
class Repo:
    root: Path
    key: SigningKey
    flow: Path


@pytest.fixture
def repo() -> Iterator[Repo]:
    # Short: the API socket path inside the repo must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="qf", dir="/tmp"))
    key = init_repo(root / "r")
    flow = root / "greet.yaml"
    flow.write_text(GREET, encoding="utf-8")
    yield Repo(root / "r", key, flow)
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class Recorder:
    """The node's `submit` callback: records calls, answers new the first time only."""

    calls: list[tuple[CID, list[Block]]] = field(default_factory=list)
    refuse: ApiError | None = None

    async def __call__(self, exec_cid: CID, blocks: list[Block]) -> bool:
        if self.refuse is not None:
            raise self.refuse
        new = all(exec_cid != seen for seen, _ in self.calls)
        self.calls.append((exec_cid, blocks))
        return new


@asynccontextmanager
async def node(repo: Repo, submit: Submit | None) -> AsyncIterator[None]:
    store = FileBlockStore(RepoPaths(repo.root).blocks)
    handlers = node_methods(BlockService(store), status=dict, submit=submit)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            await nursery.start(serve_api, RepoPaths(repo.root).api_socket, handlers)
        yield
        nursery.cancel_scope.cancel()


async def qflow_in_thread(*args: str) -> Result:
    with trio.fail_after(WAIT):
        return await trio.to_thread.run_sync(partial(CliRunner().invoke, qflow, list(args)))


async def submit(repo: Repo, *args: str, recorder: Recorder | None = None) -> Result:
    recorder = recorder if recorder is not None else Recorder()
    async with node(repo, recorder):
        return await qflow_in_thread("submit", str(repo.flow), "--repo", str(repo.root), *args)


def assert_error(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr, result.stderr


def inputs_of(blocks: list[Block]) -> Any:
    submission = verify_submission(blocks[0].cid, blocks[0].data)
    data = {b.cid: b.data for b in blocks}[submission.inputs]
    return json.loads(data)


async def test_submit_prints_the_exec_id_and_hands_the_node_checked_blocks(repo: Repo) -> None:
    recorder = Recorder()
    result = await submit(repo, "--input", "who=Ada", recorder=recorder)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    [(exec_cid, blocks)] = recorder.calls
    assert result.stdout == exec_cid.encode() + "\n"
    submission = verify_submission(blocks[0].cid, blocks[0].data)
    assert submission.cid == exec_cid
    assert submission.submitter == repo.key.did  # no --as: the node's key
    assert (submission.priority, submission.deadline, submission.subnet) == (
        "normal",
        None,
        "default",
    )
    assert [b.cid for b in blocks] == [exec_cid, submission.flow, submission.inputs]
    assert decode_dag(blocks[1].data)["name"] == "greet"
    assert inputs_of(blocks) == {"who": "Ada"}
    # Compiled into the repo's store, where the node serves it from.
    store = FileBlockStore(RepoPaths(repo.root).blocks)
    assert store.get(submission.flow) == blocks[1].data


class Known(Recorder):
    """A node that already has every execution."""

    async def __call__(self, exec_cid: CID, blocks: list[Block]) -> bool:
        await super().__call__(exec_cid, blocks)
        return False


async def test_json_output(repo: Repo) -> None:
    recorder = Recorder()
    result = await submit(repo, "--json", recorder=recorder)
    assert result.exit_code == 0, result.stderr
    [(exec_cid, _)] = recorder.calls
    assert result.stdout.count("\n") == 1
    assert json.loads(result.stdout) == {"exec": exec_cid.encode(), "duplicate": False}


async def test_a_duplicate_is_still_a_success(repo: Repo) -> None:
    result = await submit(repo, "--json", recorder=Known())
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["duplicate"] is True
    result = await submit(repo, recorder=Known())
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert "duplicate" in result.stderr


async def test_options_reach_the_signed_submission(repo: Repo) -> None:
    actor = create_actor_key(RepoPaths(repo.root), "alice")
    recorder = Recorder()
    result = await submit(
        repo, "--as", "alice", "--priority", "high", "--deadline", "5m", "--subnet", "team-a",
        recorder=recorder,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    [(_, blocks)] = recorder.calls
    submission = verify_submission(blocks[0].cid, blocks[0].data)
    assert submission.submitter == actor.did
    assert (submission.priority, submission.subnet) == ("high", "team-a")
    assert submission.deadline == submission.ts + 300_000


async def test_input_precedence_file_then_inputs_then_input(repo: Repo) -> None:
    file = repo.root.parent / "in.json"
    file.write_text(json.dumps({"a": "file", "b": "file", "c": "file", "n": 0}))
    recorder = Recorder()
    result = await submit(
        repo, "--input-file", str(file), "--inputs", '{"b": "inputs", "c": "inputs"}',
        "--input", "c=input", "--input", "n=5", "--input", "flag=true",
        "--input", 'obj={"k": [1]}', "--input", "text={not json", "--input", "eq=a=b",
        recorder=recorder,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    [(_, blocks)] = recorder.calls
    assert inputs_of(blocks) == {
        "a": "file",
        "b": "inputs",
        "c": "input",
        "n": 5,
        "flag": True,
        "obj": {"k": [1]},
        "text": "{not json",
        "eq": "a=b",
    }


async def test_wasm_modules_travel_with_the_flow(repo: Repo) -> None:
    recorder = Recorder()
    async with node(repo, recorder):
        result = await qflow_in_thread(
            "submit", str(EXAMPLES / "flows" / "run.yaml"), "--repo", str(repo.root)
        )
    assert result.exit_code == 0, result.stderr
    [(_, blocks)] = recorder.calls
    modules = {b.cid for b in blocks[3:]}
    wasm = [(EXAMPLES / "steps" / n).read_bytes() for n in ("aggregate.wasm", "transform.wasm")]
    assert {b.data for b in blocks if b.cid in modules} == set(wasm)


async def test_a_refused_submission_exits_1_with_the_reason(repo: Repo) -> None:
    refusal = ApiError(BAD_REQUEST, "params.blocks[0] is not a valid submission: bad_signature")
    result = await submit(repo, recorder=Recorder(refuse=refusal))
    assert_error(result, 1, "the node refused the submission (bad_request): ")
    assert "bad_signature" in result.stderr


async def test_a_node_that_does_not_accept_submissions(repo: Repo) -> None:
    async with node(repo, None):
        result = await qflow_in_thread("submit", str(repo.flow), "--repo", str(repo.root))
    assert_error(result, 1, "(unavailable): this node does not accept submissions")


def test_without_a_node_exit_1_saying_how_to_start_one(repo: Repo) -> None:
    result = CliRunner().invoke(qflow, ["submit", str(repo.flow), "--repo", str(repo.root)])
    hint = f"no node is running for repo {repo.root} (start it with `qflow node run --repo"
    assert_error(result, 1, hint)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "novalue"], "--input 'novalue': expected NAME=VALUE"),
        (["--inputs", "[1]"], "--inputs must be a JSON object"),
        (["--inputs", "{"], "--inputs is not JSON"),
        (["--input-file", "/nonexistent/in.json"], "--input-file /nonexistent/in.json: "),
        (["--deadline", "soon"], "--deadline: 'soon' is not a duration"),
        (["--deadline", "0s"], "--deadline must be longer than 0"),
        (["--as", "nobody"], "--as nobody: no actor named 'nobody'"),
        (["--as", "Bad/Name"], "--as Bad/Name: invalid actor name"),
        (["--subnet", "Bad Subnet"], "bad_field: 'subnet' must match"),
    ],
)
def test_bad_usage_exits_2_before_calling_the_node(
    repo: Repo, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(qflow, ["submit", str(repo.flow), "--repo", str(repo.root), *args])
    assert_error(result, 2, message)


def test_input_file_must_hold_a_json_object(repo: Repo) -> None:
    for text, message in (("[1]", "must hold a JSON object"), ("{", "is not JSON"),
                          ('{"x": NaN}', "is not JSON")):  # fmt: skip
        file = repo.root.parent / "in.json"
        file.write_text(text)
        result = CliRunner().invoke(
            qflow, ["submit", str(repo.flow), "--repo", str(repo.root), "--input-file", str(file)]
        )
        assert_error(result, 2, message)


def test_other_usage_errors_exit_2(repo: Repo, tmp_path: Path) -> None:
    base = ["submit", "--repo", str(repo.root)]
    missing = CliRunner().invoke(qflow, [*base, str(tmp_path / "missing.yaml")])
    assert_error(missing, 2, "cannot read")
    priority = CliRunner().invoke(qflow, [*base, str(repo.flow), "--priority", "urgent"])
    assert priority.exit_code == 2
    no_repo = CliRunner().invoke(qflow, ["submit", str(repo.flow), "--repo", str(tmp_path)])
    assert_error(no_repo, 2, "is not an initialised qflow repo")


def test_a_flow_that_does_not_compile_exits_1(repo: Repo) -> None:
    repo.flow.write_text("name: broken\nsteps: []\n", encoding="utf-8")
    result = CliRunner().invoke(qflow, ["submit", str(repo.flow), "--repo", str(repo.root)])
    assert result.exit_code == 1
    assert str(repo.flow) in result.stderr
