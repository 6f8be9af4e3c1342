"""`qflow run` end to end: the real engine, sandbox, block store and ledger, in-process.

Which example flows run here, and how: greet, run, validate, if, foreach, parallel,
subflow, wait-for (--event), approval (--approve with the example actor keys), sleep
(the runner with a fake clock; the CLI with --max-wait), and on loopback HTTP servers:
http, saga (the happy path through the CLI; the compensating path through the runner
with a fake clock, since its retries back off for seconds) and order-processing (the
manager's key for the approval).
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner, Result

from qflow_node.cli.init_cmd import init_repo
from qflow_node.cli.main import qflow
from qflow_node.codec import parse_cid
from qflow_node.flow_loader import load_flow
from qflow_node.identity.keys import SigningKey
from qflow_node.identity.store import create_actor_key
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.runtime.replay import replay
from qflow_node.runtime.session import local_runner
from qflow_node.store import FileBlockStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "flows"
MANAGER = SigningKey(bytes([0xB1]) * 32)  # approver of the examples (docs/flows.md)
SECOND = SigningKey(bytes([0xB2]) * 32)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    init_repo(root)
    create_actor_key(RepoPaths(root), "manager", MANAGER)
    create_actor_key(RepoPaths(root), "second", SECOND)
    return root


def cli(repo: Path, *args: str) -> Result:
    return CliRunner().invoke(qflow, [*args, "--repo", str(repo)])


def run_json(repo: Path, flow: str, *args: str, code: int = 0) -> dict[str, Any]:
    result = cli(repo, "run", str(EXAMPLES / flow), "--json", *args)
    assert result.exit_code == code, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def assert_verifies(repo: Path, report: dict[str, Any]) -> None:
    verify = cli(repo, "ledger", "verify", *report["heads"])
    assert verify.exit_code == 0, verify.output
    assert f"ok: {report['records']} records of execution {report['exec']}" in verify.stdout


def test_greet_prints_exec_status_output_and_verifiable_heads(repo: Path) -> None:
    report = run_json(repo, "greet.yaml", "--input", "who=Ada")
    assert set(report) == {"exec", "status", "output", "error", "heads", "records"}
    assert (report["status"], report["output"], report["records"]) == (
        "completed",
        "Hello, Ada!",
        3,
    )
    assert_verifies(repo, report)


def test_human_output_and_progress(repo: Path) -> None:
    result = cli(repo, "run", str(EXAMPLES / "greet.yaml"), "-i", "who=Bo")
    assert result.exit_code == 0
    assert result.stdout == '"Hello, Bo!"\n'
    assert "greeting" in result.stderr and ": completed" in result.stderr


def test_wasm_steps_replay_and_reexecute(repo: Path) -> None:
    report = run_json(repo, "run.yaml", "--inputs", '{"sensor": "S1", "readings": [1, 2, 4]}')
    assert report["output"] == {"sensor": "Sensor S1", "mean": 7 / 3}
    assert_verifies(repo, report)
    replayed = cli(repo, "ledger", "replay", report["exec"], "--json")
    assert replayed.exit_code == 0, replayed.output
    state = json.loads(replayed.stdout)
    assert (state["status"], state["output"]) == ("completed", report["output"])
    assert state["records"] == {"applied": 4, "total": 4}
    until = json.loads(
        cli(repo, "ledger", "replay", report["exec"], "--until", "stats", "--json").stdout
    )
    assert until["status"] == "running"
    assert list(until["instances"]) == ["stats"]
    assert until["instances"]["stats"]["output"] == {
        "count": 3,
        "sum": 7,
        "min": 1,
        "max": 4,
        "mean": 7 / 3,
    }
    unknown = cli(repo, "ledger", "replay", report["exec"], "--until", "nope")
    assert unknown.exit_code == 2
    assert unknown.stderr == f"error: --until nope: no such step in the flow of {report['exec']}\n"
    first = until["last_record"]
    at = json.loads(
        cli(repo, "ledger", "replay", report["exec"], "--until-record", first, "--json").stdout
    )
    assert at["instances"] == until["instances"]
    checked = cli(repo, "ledger", "verify", "--reexecute", report["exec"], "--json")
    assert checked.exit_code == 0, checked.output
    result = json.loads(checked.stdout)
    assert result["ok"] is True
    assert [(c["step"], c["ok"]) for c in result["reexecuted"]] == [("stats", True), ("name", True)]


def test_reexecute_detects_a_recorded_output_that_the_module_does_not_produce(repo: Path) -> None:
    paths = RepoPaths(repo)
    store = FileBlockStore(paths.blocks)
    ledger = LedgerStore(store, paths)
    loaded = load_flow(EXAMPLES / "run.yaml", store=store)
    with local_runner(repo, loaded.compiled.ir) as runner:
        key = runner.key
        # A forged history: a "stats" output the module never wrote, signed by this node.
        original = runner.run(loaded.cid, loaded.compiled.ir, {"sensor": "S", "readings": [1]})
    records = list(ledger.replay(original.exec))
    exec = original.exec
    # Rewrite the ledger: keep exec.started, then a forged completion of stats.
    from qflow_node.codec import raw_block
    from qflow_node.core.ledger import new_record

    started_cid, started = records[0]
    fake = raw_block(b'{"count": 1, "sum": 99, "min": 1, "max": 1, "mean": 1.0}\n')
    block, _ = new_record(
        exec, "step.completed", parents={started_cid: started.clock}, payload=fake.cid,
        key=key, ts=started.ts + 1, step="stats", attempt=1,
    )  # fmt: skip
    ledger.commit(exec, [fake, block], [block.cid])
    checked = cli(repo, "ledger", "verify", "--reexecute", exec.encode())
    assert checked.exit_code == 1
    assert "MISMATCH  stats attempt 1: output" in checked.stdout
    assert f"!= recorded {fake.cid.encode()}" in checked.stdout


def test_validate_failure_exits_1_with_the_error(repo: Path) -> None:
    good = run_json(repo, "validate.yaml", "--inputs", '{"user": {"email": "a@b", "age": 30}}')
    assert good["output"] == "Welcome a@b"
    bad = run_json(repo, "validate.yaml", "--inputs", '{"user": {"email": "ab", "age": 3}}', code=1)
    assert bad["status"] == "failed"
    assert bad["error"] == {
        "kind": "validation",
        "message": "age: 3 is less than the minimum of 18; "
        "email: 'ab' does not match '^[^@]+@[^@]+$'",
    }
    assert_verifies(repo, bad)


@pytest.mark.parametrize(
    ("weight", "expected"), [("40.0", "freight in 5 days"), ("2.5", "parcel in 2 days")]
)
def test_if(repo: Path, weight: str, expected: str) -> None:
    assert run_json(repo, "if.yaml", "-i", f"weight_kg={weight}")["output"] == expected


def test_foreach_with_wasm_steps(repo: Path) -> None:
    images = [{"name": "a", "width": 3, "height": 4}, {"name": "b", "width": 9, "height": 2}]
    report = run_json(repo, "foreach.yaml", "--inputs", json.dumps({"images": images}))
    assert report["output"] == ["0: a max 4", "1: b max 9"]


def test_parallel_n_of_m_does_not_wait_for_the_sleeping_branch(repo: Path) -> None:
    report = run_json(repo, "parallel.yaml", "-i", "base=100.0")
    assert report["output"] == {
        "north": {"vendor": "north", "price": 110.00000000000001},
        "south": {"vendor": "south", "price": 95.0},
    }


def test_subflow(repo: Path) -> None:
    compiled = cli(repo, "flow", "compile", str(EXAMPLES / "greet.yaml"))
    assert compiled.exit_code == 0, compiled.output
    team = {"team": {"lead": "Ada", "members": ["Bo", "Cy"]}}
    report = run_json(repo, "subflow.yaml", "--inputs", json.dumps(team))
    assert report["output"] == {"lead": "Hello, Ada!", "members": ["Hello, Bo!", "Hello, Cy!"]}


def test_wait_for_takes_the_first_matching_event(repo: Path) -> None:
    events = [
        "--event", 'payments={"order": "o1", "status": "pending"}',
        "--event", 'payments={"order": "o1", "status": "settled"}',
    ]  # fmt: skip
    report = run_json(repo, "wait-for.yaml", "-i", "order=o1", *events)
    assert report["output"] == "paid"
    state = json.loads(cli(repo, "ledger", "replay", report["exec"], "--json").stdout)
    assert state["instances"]["paid"]["output"] == {"order": "o1", "status": "settled"}


def test_approval_by_a_quorum_of_repo_actor_keys(repo: Path) -> None:
    report = run_json(repo, "approval.yaml", "--approve", "manager", "--approve", "second")
    assert report["output"] == {"approved": True, "approvers": sorted([MANAGER.did, SECOND.did])}
    waiting = run_json(repo, "approval.yaml", "--approve", "manager", "--max-wait", "1s", code=1)
    assert waiting["status"] == "running"


def test_sleep_waits_on_the_clock(repo: Path) -> None:
    loaded = load_flow(EXAMPLES / "sleep.yaml", store=FileBlockStore(RepoPaths(repo).blocks))
    now = [1_700_000_000_000]
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        now[0] += int(seconds * 1000)

    with local_runner(repo, loaded.compiled.ir, clock=lambda: now[0], sleep=sleep) as runner:
        result = runner.run(loaded.cid, loaded.compiled.ir, {"subject": "tax"})
    assert (result.status, result.output) == ("completed", "Reminder: tax")
    assert naps == [86_400.0]
    waiting = run_json(repo, "sleep.yaml", "-i", "subject=x", "--max-wait", "1s", code=1)
    assert waiting["status"] == "running"


# -- order processing, with its services on a loopback HTTP server --------------------------


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """A quiet handler that answers JSON."""

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class Shop(JsonHandler):
    calls: ClassVar[list[tuple[str, str, Any]]] = []
    fail_confirm: ClassVar[bool] = False

    def do_GET(self) -> None:
        type(self).calls.append(("GET", self.path, None))
        self._reply(200, {"sku": "all", "available": 12})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"null")
        type(self).calls.append(("POST", self.path, body))
        if self.path == "/orders/confirm" and type(self).fail_confirm:
            self._reply(503, {"error": "down"})
        elif self.path == "/payments/charge":
            self._reply(200, {"charge": "ch_1"})
        else:
            self._reply(200, {"ok": True})


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 (port 0) in a thread; its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def shop() -> Iterator[str]:
    Shop.calls = []
    Shop.fail_confirm = False
    with serving(Shop) as url:
        yield url


def order(services: str, price: float) -> dict[str, Any]:
    return {
        "services": services,
        "order": {
            "id": "o-17",
            "customer": {"first": "Ada", "last": "Lovelace"},
            "tags": ["vip"],
            "lines": [
                {"sku": "pen", "qty": 2, "price": price},
                {"sku": "ink", "qty": 1, "price": 5},
            ],
        },
    }


def test_order_processing_end_to_end(repo: Path, shop: str) -> None:
    inputs = order(shop, 600.0)  # 1205 > 1000: the manager must approve
    report = run_json(
        repo, "order-processing.yaml", "--inputs", json.dumps(inputs), "--approve", "manager"
    )
    assert report["output"] == {
        "order": "o-17",
        "customer": "Ada Lovelace",
        "total": 1205.0,
        "labels": ["pen #0", "ink #1"],
        "confirmed": 200,
    }
    paths = [(method, path) for method, path, _ in Shop.calls]
    assert sorted(paths) == sorted(
        [("POST", "/payments/charge"), ("GET", "/inventory/o-17"), ("POST", "/orders/confirm")]
    )
    assert_verifies(repo, report)
    ledger = LedgerStore(FileBlockStore(RepoPaths(repo).blocks), RepoPaths(repo))
    state = replay(ledger, parse_cid(report["exec"])).state
    assert state.instances["manager_approval"].output == {
        "approved": True,
        "approvers": [MANAGER.did],
    }
    assert state.vars() == {"orders/o-17/stock": {"sku": "all", "available": 12}}
    checked = cli(repo, "ledger", "verify", "--reexecute", report["exec"], "--json")
    assert checked.exit_code == 0, checked.output
    steps = [c["step"] for c in json.loads(checked.stdout)["reexecuted"]]
    assert steps == ["customer", "total", "labels[0]/label", "labels[1]/label"]


def test_order_processing_saga_on_a_failed_confirmation(repo: Path, shop: str) -> None:
    Shop.fail_confirm = True
    loaded = load_flow(
        EXAMPLES / "order-processing.yaml", store=FileBlockStore(RepoPaths(repo).blocks)
    )
    now = [1_700_000_000_000]

    def sleep(seconds: float) -> None:
        now[0] += int(seconds * 1000)

    with local_runner(repo, loaded.compiled.ir, clock=lambda: now[0], sleep=sleep) as runner:
        result = runner.run(loaded.cid, loaded.compiled.ir, order(shop, 10.0))
    assert result.status == "failed"
    assert result.error is not None and result.error["kind"] == "http_status"
    posts = [path for method, path, _ in Shop.calls if method == "POST"]
    assert posts.count("/orders/confirm") == 3  # retry: max_attempts 3
    undo = posts[posts.index("/orders/confirm") + 3 :]
    completed = list(result.state.completed_order)
    expected = {"charge": "/payments/refund", "stock_level": "/inventory/release"}
    assert undo == [expected[name] for name in reversed(completed)]
    refund = next(body for _, path, body in Shop.calls if path == "/payments/refund")
    assert refund["charge"] == {"charge": "ch_1"}
    ledger = LedgerStore(FileBlockStore(RepoPaths(repo).blocks), RepoPaths(repo))
    assert replay(ledger, result.exec).state.snapshot() == result.state.snapshot()


def test_a_second_completion_in_the_ledger_is_rejected_on_replay(repo: Path) -> None:
    report = run_json(repo, "greet.yaml", "-i", "who=Ada")
    paths = RepoPaths(repo)
    ledger = LedgerStore(FileBlockStore(paths.blocks), paths)
    from qflow_node.codec import raw_block
    from qflow_node.identity.store import load_node_key

    extra = raw_block(b'"again"')
    ledger.store.put(extra)
    ledger.append(parse_cid(report["exec"]), "step.completed", payload=extra.cid,
                  key=load_node_key(paths), step="greeting", attempt=1)  # fmt: skip
    replayed = cli(repo, "ledger", "replay", report["exec"])
    assert replayed.exit_code == 1
    assert "step.completed greeting attempt 1" in replayed.stdout
    assert "the execution has already ended (completed)" in replayed.stdout


def test_bad_command_lines(repo: Path) -> None:
    result = cli(repo, "run", str(EXAMPLES / "greet.yaml"), "--input", "who")
    assert (result.exit_code, result.stderr) == (2, "error: --input 'who': expected NAME=VALUE\n")
    result = cli(repo, "run", str(EXAMPLES / "greet.yaml"), "--event", "t=nope")
    assert (result.exit_code, result.stderr) == (
        2,
        "error: --event 't=nope': expected TOPIC=JSON\n",
    )
    result = cli(repo, "run", str(EXAMPLES / "greet.yaml"), "--approve", "nobody")
    assert result.exit_code == 2 and result.stderr.startswith("error: --approve nobody: ")
    missing = cli(repo, "run", str(EXAMPLES / "greet.yaml"))
    assert missing.exit_code == 2
    assert missing.stderr == (
        "error: the inputs do not match the flow's schema: (root): 'who' is a required property\n"
    )
    assert LedgerStore(FileBlockStore(RepoPaths(repo).blocks), RepoPaths(repo)).executions() == []


def test_http_step_outside_its_capability_is_denied(repo: Path, shop: str, tmp_path: Path) -> None:
    source = tmp_path / "h.yaml"
    source.write_text(
        "name: h\nsteps:\n  - id: get\n    http: {url: inputs.url}\n"
        "    capabilities: [{op: http.fetch, hosts: [localhost]}]\n",
        encoding="utf-8",
    )
    result = cli(repo, "run", str(source), "-i", f"url={shop}/x", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["error"] == {
        "kind": "capability_denied",
        "message": "host '127.0.0.1' is not allowed",
    }
    assert Shop.calls == []


# -- http.yaml and saga.yaml, with their services on a loopback HTTP server -----------------


class Travel(JsonHandler):
    calls: ClassVar[list[tuple[str, str]]] = []
    keys: ClassVar[list[str | None]] = []  # the idempotency-key header of each call
    fail_hotel: ClassVar[bool] = False
    CREATED: ClassVar[dict[str, str]] = {
        "/flights/bookings": "f-1",
        "/cars/rentals": "c-1",
        "/hotels/reservations": "h-1",
    }

    def _handle(self) -> None:
        type(self).calls.append((self.command, self.path))
        type(self).keys.append(self.headers.get("idempotency-key"))
        self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path.startswith("/v1/forecast?city="):
            self._reply(200, {"city": self.path.split("=", 1)[1], "celsius": 21})
        elif self.path == "/hotels/reservations" and type(self).fail_hotel:
            self._reply(503, {"error": "full"})
        elif self.path in self.CREATED:
            self._reply(201, {"id": self.CREATED[self.path]})
        else:
            self._reply(200, {"ok": True})

    do_GET = do_POST = do_DELETE = _handle


@pytest.fixture
def travel() -> Iterator[str]:
    Travel.calls = []
    Travel.keys = []
    Travel.fail_hotel = False
    with serving(Travel) as url:
        yield url


def trip(services: str) -> dict[str, Any]:
    return {"services": services, "flight": {"to": "LIS"}, "car": {"days": 3}, "hotel": {}}


def test_http_example(repo: Path, travel: str) -> None:
    inputs = json.dumps({"services": travel, "city": "Lisbon"})
    report = run_json(repo, "http.yaml", "--inputs", inputs)
    assert report["output"] == {"city": "Lisbon", "celsius": 21}
    assert Travel.calls == [("GET", "/v1/forecast?city=Lisbon")]
    # Every attempt carries a key that is the same on any node that runs it.
    assert Travel.keys == [f"{report['exec']}/weather/1"]
    assert_verifies(repo, report)


def test_saga_example_books_everything(repo: Path, travel: str) -> None:
    report = run_json(repo, "saga.yaml", "--inputs", json.dumps(trip(travel)))
    assert report["output"] == {"flight": "f-1", "car": "c-1", "hotel": "h-1"}
    assert Travel.calls == [
        ("POST", "/flights/bookings"),
        ("POST", "/cars/rentals"),
        ("POST", "/hotels/reservations"),
    ]
    assert_verifies(repo, report)


def test_saga_example_compensates_in_reverse_order(repo: Path, travel: str) -> None:
    Travel.fail_hotel = True
    loaded = load_flow(EXAMPLES / "saga.yaml", store=FileBlockStore(RepoPaths(repo).blocks))
    now = [1_700_000_000_000]

    def sleep(seconds: float) -> None:
        now[0] += int(seconds * 1000)

    with local_runner(repo, loaded.compiled.ir, clock=lambda: now[0], sleep=sleep) as runner:
        result = runner.run(loaded.cid, loaded.compiled.ir, trip(travel))
    assert result.status == "failed"
    assert Travel.calls == [
        ("POST", "/flights/bookings"),
        ("POST", "/cars/rentals"),
        *[("POST", "/hotels/reservations")] * 5,  # retry: max_attempts 5
        ("POST", "/cars/rentals/c-1/cancel"),
        ("DELETE", "/flights/bookings/f-1"),
    ]
    ledger = LedgerStore(FileBlockStore(RepoPaths(repo).blocks), RepoPaths(repo))
    assert replay(ledger, result.exec).state.snapshot() == result.state.snapshot()
