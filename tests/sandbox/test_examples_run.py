"""The committed example steps (examples/steps/*.wasm) run in the sandbox as documented in
examples/steps/README.md: exact outputs, deterministic output CIDs, and each misbehaving
step stopped with its own failure kind.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import operator
import random
import socket
import struct
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qflow_node.codec import CID, RAW, cid_for, raw_block
from qflow_node.sandbox import (
    DEFAULT_MAXIMA,
    HTTP_FETCH,
    STATE_SET,
    AuthArgs,
    AuthDecision,
    FailureKind,
    Limits,
    Sandbox,
    StepResult,
    StepState,
    client_id_for,
)
from qflow_node.store import MemoryBlockStore

STEPS = Path(__file__).resolve().parents[2] / "examples" / "steps"
NAMES = ("transform", "aggregate", "fetch_store", "escape", "loop", "membomb", "flood", "recurse")
RUNS = 100  # "100 runs of each example step give identical output CIDs"
SEED = hashlib.sha256(b"test_examples_run seed").digest()
OTHER_SEED = hashlib.sha256(b"another seed").digest()
MiB = 1 << 20

ADA = {"user": {"first": "Ada", "last": "Lovelace"}, "tags": ["a", "b"]}


def dumps(value: Any) -> bytes:
    """What the example steps print: json.dumps layout, UTF-8, one trailing newline."""
    return (json.dumps(value, ensure_ascii=False) + "\n").encode()


# Module-scoped, overriding conftest.py's per-test `blocks` and `sandbox`: one sandbox
# compiles each example once for all the (hundreds of) runs below.
@pytest.fixture(scope="module")
def blocks() -> MemoryBlockStore:
    store = MemoryBlockStore()
    for name in NAMES:
        store.put(raw_block((STEPS / f"{name}.wasm").read_bytes()))
    return store


@pytest.fixture(scope="module")
def sandbox(blocks: MemoryBlockStore) -> Iterator[Sandbox]:
    with Sandbox(blocks) as sandbox:
        yield sandbox


def module(name: str) -> CID:
    return cid_for((STEPS / f"{name}.wasm").read_bytes(), RAW)


def run(sandbox: Sandbox, name: str, value: Any = None, **kwargs: Any) -> StepResult:
    data = b"" if value is None else json.dumps(value).encode()
    return sandbox.run(module(name), data, **kwargs)


def assert_failed(result: StepResult, kind: FailureKind, exit_code: int | None = None) -> None:
    assert result.failure is not None, f"expected {kind}, the step succeeded: {result.output!r}"
    assert result.failure.kind is kind, str(result.failure)
    assert result.failure.exit_code == exit_code
    assert result.output is None


# -- transform ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (ADA, {"name": "Ada Lovelace", "tag_count": 2}),
        ({}, {"name": "", "tag_count": 0}),
        ({"user": {"last": "Hopper"}, "tags": []}, {"name": "Hopper", "tag_count": 0}),
        ({"user": {"first": "Grace", "last": ""}}, {"name": "Grace", "tag_count": 0}),
        (
            {"user": {"first": 'Zoë "Z"\t', "last": "O\u2019Neil\n\u0001😀"}, "extra": [1]},
            {"name": 'Zoë "Z"\t O\u2019Neil\n\u0001😀', "tag_count": 0},
        ),
        ({"tags": [1, {"a": [[], {}]}, None, "x", True]}, {"name": "", "tag_count": 5}),
    ],
)
def test_transform_output_is_exact(sandbox: Sandbox, given: Any, expected: Any) -> None:
    result = run(sandbox, "transform", given)
    assert result.failure is None, str(result.failure)
    assert result.output == dumps(expected)


def test_transform_output_bytes(sandbox: Sandbox) -> None:
    result = run(sandbox, "transform", ADA)
    assert result.output == b'{"name": "Ada Lovelace", "tag_count": 2}\n'
    # Escaped input (\u00eb, a surrogate pair) comes out as UTF-8.
    raw = b'{"user": {"first": "Zo\\u00eb", "last": "\\ud83d\\ude00"}}'
    result = sandbox.run(module("transform"), raw)
    assert result.output == '{"name": "Zoë 😀", "tag_count": 0}\n'.encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[]", b"transform: input must be a JSON object\n"),
        (b'{"user": {}} x', b"transform: input must be a JSON object\n"),
        (b'{"a": 1}\0', b"transform: input must be a JSON object\n"),
        (b'{"user": 3}', b"transform: user must be an object\n"),
        (b'{"user": {"first": 1}}', b"transform: user.first must be a string\n"),
        (b'{"tags": "a,b"}', b"transform: tags must be an array\n"),
        (
            b'{"user": {"last": "\\ud83d"}}',
            b"transform: user.last: invalid string (lone surrogate?)\n",
        ),
    ],
)
def test_transform_rejects_bad_input(sandbox: Sandbox, raw: bytes, message: bytes) -> None:
    result = sandbox.run(module("transform"), raw)
    assert_failed(result, FailureKind.EXIT_CODE, 1)
    assert result.stderr == message


# -- aggregate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3, 1, 2], b'{"count": 3, "sum": 6, "min": 1, "max": 3, "mean": 2.0}\n'),
        ([], b'{"count": 0, "sum": 0, "min": null, "max": null, "mean": null}\n'),
        ([7], b'{"count": 1, "sum": 7, "min": 7, "max": 7, "mean": 7.0}\n'),
        ([-5, 0, 5, 1], b'{"count": 4, "sum": 1, "min": -5, "max": 5, "mean": 0.25}\n'),
        (
            [0.1, 0.2],
            b'{"count": 2, "sum": 0.30000000000000004, "min": 0.1, "max": 0.2, '
            b'"mean": 0.15000000000000002}\n',
        ),
        ([1, 2.5], b'{"count": 2, "sum": 3.5, "min": 1.0, "max": 2.5, "mean": 1.75}\n'),
        ([2.0, -0.0, 4], b'{"count": 3, "sum": 6.0, "min": -0.0, "max": 4.0, "mean": 2.0}\n'),
        (
            [2**53, 2**53, -1],
            b'{"count": 3, "sum": 18014398509481983, "min": -1, "max": 9007199254740992, '
            b'"mean": 6004799503160661.0}\n',
        ),
        (
            [1e300, -5e-3],
            b'{"count": 2, "sum": 1e+300, "min": -0.005, "max": 1e+300, "mean": 5e+299}\n',
        ),
    ],
)
def test_aggregate_output_is_exact(sandbox: Sandbox, values: list[Any], expected: bytes) -> None:
    result = run(sandbox, "aggregate", {"values": values})
    assert result.failure is None, str(result.failure)
    assert result.output == expected


def test_aggregate_integers_beyond_2_53_are_floats(sandbox: Sandbox) -> None:
    result = sandbox.run(module("aggregate"), b'{"values": [9007199254740993, 1]}')
    assert result.output == (
        b'{"count": 2, "sum": 9007199254740992.0, "min": 1.0, "max": 9007199254740992.0, '
        b'"mean": 4503599627370496.0}\n'
    )


def test_aggregate_matches_python_on_random_lists(sandbox: Sandbox) -> None:
    """Integer mode: exact ints. Float mode: the printed doubles read back as exactly
    Python's left-to-right double sums."""
    rng = random.Random(20240607)
    for _ in range(50):
        ints = [rng.randint(-(10**12), 10**12) for _ in range(rng.randint(1, 30))]
        value = run(sandbox, "aggregate", {"values": ints}).output_value()
        assert value == {
            "count": len(ints),
            "sum": sum(ints),
            "min": min(ints),
            "max": max(ints),
            "mean": sum(ints) / len(ints),  # exact: |sum| < 2^53
        }
        assert all(type(value[k]) is int for k in ("count", "sum", "min", "max"))
        assert type(value["mean"]) is float
    for _ in range(50):
        values = [rng.choice((rng.uniform(-1e6, 1e6), rng.random(), rng.randint(-9, 9) + 0.5))]
        values += [rng.uniform(-1e3, 1e3) for _ in range(rng.randint(0, 30))]
        result = run(sandbox, "aggregate", {"values": values})
        total = functools.reduce(operator.add, values, 0.0)
        assert result.output_value() == {
            "count": len(values),
            "sum": total,
            "min": min(values),
            "max": max(values),
            "mean": total / len(values),
        }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{}", b"aggregate: values must be an array of numbers\n"),
        (b'{"values": {"a": 1}}', b"aggregate: values must be an array of numbers\n"),
        (b'{"values": [1, "2"]}', b"aggregate: values[1] is not a number\n"),
        (b'{"values": [1, null]}', b"aggregate: values[1] is not a number\n"),
        (b'{"values": [1e308, 1e308]}', b"aggregate: sum overflows\n"),
        (b'{"values": [01]}', b"aggregate: input must be a JSON object\n"),
        (b'{"values": [1,]}', b"aggregate: input must be a JSON object\n"),
    ],
)
def test_aggregate_rejects_bad_input(sandbox: Sandbox, raw: bytes, message: bytes) -> None:
    result = sandbox.run(module("aggregate"), raw)
    assert_failed(result, FailureKind.EXIT_CODE, 1)
    assert result.stderr == message


# -- escape ---------------------------------------------------------------------------------

NO_SUCH_FILE = {"ok": False, "errno": 44, "error": "No such file or directory"}


def escape_report(sandbox: Sandbox, seed: bytes = SEED) -> dict[str, Any]:
    result = run(sandbox, "escape", seed=seed)
    assert result.failure is None, str(result.failure)
    report = result.output_value()
    assert isinstance(report, dict)
    return report


def test_escape_finds_no_files_env_args_or_sockets(sandbox: Sandbox) -> None:
    report = escape_report(sandbox)
    assert report["read_file"] == NO_SUCH_FILE
    assert report["write_file"] == NO_SUCH_FILE
    assert report["open_dir"] == NO_SUCH_FILE
    assert report["getenv_home"] is None
    assert report["env_count"] == 0
    assert report["argc"] == 0
    assert report["socket"] == "unavailable"
    assert report["sock_accept"] == {"ok": False, "errno": 8, "error": "Bad file descriptor"}


def test_escape_sees_the_stubbed_clock(sandbox: Sandbox) -> None:
    report = escape_report(sandbox)
    assert report["realtime"] == {"ok": True, "sec": 946_684_800, "nsec": 0}  # 2000-01-01
    assert report["monotonic"] == {"ok": True, "sec": 0, "nsec": 0}
    assert report["time"] == 946_684_800


def test_escape_randomness_is_the_seeded_prng(sandbox: Sandbox) -> None:
    report = escape_report(sandbox)
    # getentropy is the step's first random_get: SHAKE256(seed || call 0 as u64 LE).
    first = hashlib.shake_256(SEED + struct.pack("<Q", 0)).digest(16).hex()
    assert report["getentropy"] == {"ok": True, "hex": first}
    assert isinstance(report["arc4random"], int)
    other = escape_report(sandbox, OTHER_SEED)
    assert other["getentropy"]["hex"] != first
    assert other["arc4random"] != report["arc4random"]
    # Everything but the randomness is the same under another seed.
    volatile = ("getentropy", "arc4random")
    assert {k: v for k, v in other.items() if k not in volatile} == {
        k: v for k, v in report.items() if k not in volatile
    }


# -- fetch_store ----------------------------------------------------------------------------

PAGES: dict[str, tuple[int, bytes]] = {
    "/weather": (200, b' {"temp": 21.5, "unit": "C", "tags": ["x"]}\n'),
    "/text": (200, b"hello world"),
    "/big": (200, b"x" * 10_000 + "é".encode()),  # result JSON > the step's 4 KiB buffer
    "/missing": (404, b"no such page"),
}


class Handler(http.server.BaseHTTPRequestHandler):
    requests: list[str]  # set on the subclass each server uses

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.startswith("/sized/"):  # k bytes of "x" and one header, nothing else
            body = b"x" * int(self.path.removeprefix("/sized/"))
            self.send_response_only(200)
        else:
            status, body = PAGES.get(self.path, (404, b""))
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Server:
    base: str  # http://127.0.0.1:<port>
    requests: list[str]


@pytest.fixture
def server() -> Iterator[Server]:
    requests: list[str] = []
    handler = type("RecordingHandler", (Handler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@dataclass
class FakeToken:
    """A capability token's decisions, as the runner's `Authorizer` protocol sees them."""

    operations: frozenset[str] = frozenset({HTTP_FETCH, STATE_SET})
    hosts: frozenset[str] = frozenset({"127.0.0.1"})
    key_prefix: str = "fetched/"
    calls: list[tuple[str, dict[str, str | int]]] = field(default_factory=list)

    def granted(self) -> frozenset[str]:
        return self.operations

    def authorize(self, operation: str, args: AuthArgs) -> AuthDecision:
        self.calls.append((operation, dict(args)))
        if operation == HTTP_FETCH and args["host"] in self.hosts and args["method"] == "GET":
            return AuthDecision(True)
        if operation == STATE_SET and str(args["key"]).startswith(self.key_prefix):
            return AuthDecision(True)
        return AuthDecision(False, f"{operation} not allowed with {dict(args)}")


def fetch(
    sandbox: Sandbox, url: str, key: str, token: FakeToken | None
) -> tuple[StepResult, StepState]:
    state = StepState()
    result = run(sandbox, "fetch_store", {"url": url, "key": key}, authorizer=token, state=state)
    return result, state


@pytest.mark.parametrize(
    ("path", "status", "stored"),
    [
        ("/weather", 200, '{"temp": 21.5, "unit": "C", "tags": ["x"]}'),  # JSON: stored as is
        ("/text", 200, '{"status": 200, "length": 11}'),
        ("/big", 200, '{"status": 200, "length": 10002}'),
        ("/missing", 404, '{"status": 404, "length": 12}'),
    ],
)
def test_fetch_store_stores_what_it_fetched(
    sandbox: Sandbox, server: Server, path: str, status: int, stored: str
) -> None:
    token = FakeToken()
    result, state = fetch(sandbox, server.base + path, "fetched/page", token)
    assert result.failure is None, f"{result.failure} {result.stderr!r}"
    assert result.output == dumps({"status": status, "stored": "fetched/page"})
    assert state.values() == {"fetched/page": stored}
    assert result.state_delta is not None
    assert server.requests == [path]
    assert [op for op, _ in token.calls] == [HTTP_FETCH, HTTP_FETCH, STATE_SET]
    assert token.calls[0][1] == {
        "host": "127.0.0.1",
        "method": "GET",
        "url": server.base + path,
        "bytes": 0,
    }
    assert token.calls[2][1] == {"key": "fetched/page", "bytes": len(stored.encode())}
    assert result.usage.host_calls == (3 if path == "/big" else 2)  # + `result` for /big


def test_fetch_store_results_around_its_buffer_size(sandbox: Sandbox, server: Server) -> None:
    """fetch_store reads the fetch result into a 4096-byte buffer (4095 bytes + NUL): the
    result lengths these bodies give cross that size, so some results fit and the
    others are taken with `result`; every one must be stored whole."""
    took_result = set()
    for size in range(3990, 4070):
        result, state = fetch(sandbox, f"{server.base}/sized/{size}", "fetched/k", FakeToken())
        assert result.failure is None, f"body of {size} bytes: {result.failure}"
        assert state.values() == {"fetched/k": f'{{"status": 200, "length": {size}}}'}
        took_result.add(result.usage.host_calls == 3)
    assert took_result == {False, True}


def test_fetch_store_denied_host_exits_2_and_fetches_nothing(
    sandbox: Sandbox, server: Server
) -> None:
    url = server.base.replace("127.0.0.1", "localhost") + "/weather"
    result, state = fetch(sandbox, url, "fetched/page", FakeToken())
    assert_failed(result, FailureKind.EXIT_CODE, 2)
    assert result.stderr == b"fetch_store: http_fetch: -1 DENIED\n"
    assert [d.operation for d in result.denials] == [HTTP_FETCH]
    assert state.values() == {}
    assert server.requests == []


def test_fetch_store_denied_key_exits_2(sandbox: Sandbox, server: Server) -> None:
    result, state = fetch(sandbox, server.base + "/weather", "secrets/page", FakeToken())
    assert_failed(result, FailureKind.EXIT_CODE, 2)
    assert result.stderr == b"fetch_store: state_set: -1 DENIED\n"
    assert state.values() == {}
    assert server.requests == ["/weather"]


def test_fetch_store_unreachable_server_exits_2(sandbox: Sandbox) -> None:
    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result, state = fetch(sandbox, f"http://127.0.0.1:{port}/", "fetched/page", FakeToken())
    assert_failed(result, FailureKind.EXIT_CODE, 2)
    assert result.stderr == b"fetch_store: http_fetch: -5 UNAVAILABLE\n"
    assert state.values() == {}


@pytest.mark.parametrize(
    ("token", "named"),
    [
        (None, "qflow.http_fetch (operation http.fetch), qflow.state_set (operation state.set)"),
        (FakeToken(operations=frozenset({HTTP_FETCH})), "qflow.state_set (operation state.set)"),
        (FakeToken(operations=frozenset({STATE_SET})), "qflow.http_fetch (operation http.fetch)"),
    ],
)
def test_fetch_store_without_the_grants_is_refused_before_it_runs(
    sandbox: Sandbox, server: Server, token: FakeToken | None, named: str
) -> None:
    result, state = fetch(sandbox, server.base + "/weather", "fetched/page", token)
    assert_failed(result, FailureKind.CAPABILITY_DENIED)
    assert result.failure is not None
    assert f"the module imports {named}, which " in result.failure.message
    assert result.usage.fuel == 0
    assert server.requests == []
    assert state.values() == {}
    assert token is None or token.calls == []


# -- misbehaving steps ----------------------------------------------------------------------


def test_loop_runs_out_of_fuel(sandbox: Sandbox) -> None:
    result = run(sandbox, "loop", limits=Limits(fuel=10_000_000))
    assert_failed(result, FailureKind.OUT_OF_FUEL)
    assert result.usage.fuel == 10_000_000


def test_loop_with_huge_fuel_times_out(sandbox: Sandbox) -> None:
    # About 50 s of fuel; the 200 ms wall-clock limit must stop it first.
    result = run(sandbox, "loop", limits=Limits(fuel=DEFAULT_MAXIMA.fuel, timeout=0.2))
    assert_failed(result, FailureKind.TIMEOUT)
    assert 0.19 <= result.usage.wall_time < 5.0
    assert result.usage.fuel < DEFAULT_MAXIMA.fuel


def test_membomb_hits_the_memory_limit(sandbox: Sandbox) -> None:
    result = run(sandbox, "membomb", limits=Limits(memory=16 * MiB))
    assert_failed(result, FailureKind.MEMORY_LIMIT, 3)
    assert result.usage.memory == 16 * MiB  # grew right up to the limit, not past it
    assert result.stderr.startswith(b"membomb: malloc failed after ")


def test_flood_is_stopped_at_the_output_limit(sandbox: Sandbox) -> None:
    # flood writes "[" and then 64 KiB at a time: the first write over the limit stops it.
    result = run(sandbox, "flood", limits=Limits(output=4096))
    assert_failed(result, FailureKind.OUTPUT_TOO_LARGE)
    assert result.usage.output_bytes == 1
    result = run(sandbox, "flood")  # the default limit, 1 MiB
    assert_failed(result, FailureKind.OUTPUT_TOO_LARGE)
    assert result.usage.output_bytes == 1 + 15 * 65536


def test_recurse_traps_on_stack_overflow(sandbox: Sandbox) -> None:
    result = run(sandbox, "recurse")
    assert_failed(result, FailureKind.TRAP)
    assert result.failure is not None
    assert result.failure.message.startswith("stack overflow")


# -- determinism ----------------------------------------------------------------------------

DETERMINISTIC: Mapping[str, Any] = {
    "transform": ADA,
    "aggregate": {"values": [0.1, 0.2, 3, -7.25, 1e-300, 12345678901234567890]},
    "escape": None,
}


@dataclass(frozen=True)
class Outcome:
    output: bytes | None
    cid: CID | None
    failure: str | None
    fuel: int
    stderr: bytes
    state: bytes | None


def outcome(result: StepResult) -> Outcome:
    output = result.output
    return Outcome(
        output=output,
        cid=None if output is None else cid_for(output, RAW),
        failure=None if result.failure is None else str(result.failure),
        fuel=result.usage.fuel,
        stderr=result.stderr,
        state=result.state_delta,
    )


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_100_runs_give_identical_output_cids(sandbox: Sandbox, name: str) -> None:
    outcomes = {outcome(run(sandbox, name, DETERMINISTIC[name], seed=SEED)) for _ in range(RUNS)}
    assert len(outcomes) == 1
    (only,) = outcomes
    assert only.failure is None and only.output is not None and only.cid is not None
    # A second sandbox (a new engine, compiling afresh) gives the same bytes too.
    blocks = MemoryBlockStore()
    blocks.put(raw_block((STEPS / f"{name}.wasm").read_bytes()))
    with Sandbox(blocks) as other_sandbox:
        again = outcome(run(other_sandbox, name, DETERMINISTIC[name], seed=SEED))
    assert again == only


def test_100_runs_of_fetch_store_are_identical(sandbox: Sandbox, server: Server) -> None:
    given = {"url": server.base + "/weather", "key": "fetched/weather"}
    outcomes = set()
    for _ in range(RUNS):
        # The state replica's Yjs client id comes from the seed, as the runtime makes it.
        state = StepState(client_id=client_id_for(SEED))
        result = run(sandbox, "fetch_store", given, authorizer=FakeToken(), seed=SEED, state=state)
        outcomes.add(outcome(result))
    assert len(outcomes) == 1
    (only,) = outcomes
    assert only.output == dumps({"status": 200, "stored": "fetched/weather"})
    assert only.state is not None  # the same Yjs update every time
    assert len(server.requests) == RUNS


@pytest.mark.parametrize(
    ("name", "limits", "kind"),
    [
        ("loop", Limits(fuel=1_000_000), FailureKind.OUT_OF_FUEL),
        ("membomb", Limits(memory=2 * MiB), FailureKind.MEMORY_LIMIT),
        ("flood", Limits(output=100_000), FailureKind.OUTPUT_TOO_LARGE),
        ("recurse", Limits(), FailureKind.TRAP),
    ],
)
def test_100_runs_of_a_misbehaving_step_fail_identically(
    sandbox: Sandbox, name: str, limits: Limits, kind: FailureKind
) -> None:
    outcomes = {outcome(run(sandbox, name, limits=limits, seed=SEED)) for _ in range(RUNS)}
    assert len(outcomes) == 1
    (only,) = outcomes
    assert only.output is None
    assert only.failure is not None and only.failure.startswith(f"{kind}: ")
