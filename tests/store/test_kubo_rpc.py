"""`KuboRpcBlockStore`: the BlockStore contract against a real Kubo, and everything else
that needs no Kubo (addresses, config, boot refusal, error mapping, hash checks).

No Kubo HTTP API exists on this machine or in CI. The contract run (`kubo_rpc` marker)
needs `QFLOW_KUBO_API` to name the API multiaddr of a *throwaway* Kubo
(`ipfs init --empty-repo && ipfs daemon --offline`): before each test it unpins every
Qflow pin and runs gc there. The default-suite tests talk to a closed port, a silent
socket, or `ProtocolErrorInjector` - a canned-answer HTTP server that injects one
protocol error at a time; it implements none of Kubo's behaviour.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from qflow_node.cli.init_cmd import DEFAULT_CONFIG, init_repo
from qflow_node.cli.main import qflow
from qflow_node.codec import CID, MAX_BLOCK_SIZE, raw_block
from qflow_node.runtime.config import ConfigError, Overrides, parse_config
from qflow_node.store import (
    BlockNotFoundError,
    BlockStore,
    BlockTooLargeError,
    CorruptBlockError,
    StoreError,
)
from qflow_node.store.kubo_rpc import (
    KuboAddressError,
    KuboRpcBlockStore,
    KuboRpcError,
    api_url,
)

KUBO_API = os.environ.get("QFLOW_KUBO_API", "")
BLOCK = raw_block(b"qflow kubo rpc test block")


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the contract, against a real Kubo ----------------------------------------------------


def _load_contract() -> ModuleType:
    # Loaded by path under its own name: test modules are not a package here, and
    # pytest may not have imported the contract module yet.
    path = Path(__file__).with_name("test_store_contract.py")
    spec = importlib.util.spec_from_file_location("qflow_store_contract_for_kubo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


CONTRACT = _load_contract()
_BY_MULTIHASH = "Kubo lists blocks by multihash: refs/local names a dag-cbor block by a raw CID"
# Where Kubo's model differs from the local stores on purpose (docs/store.md, "Kubo
# backend"). Not strict: a Kubo that behaves like the local stores just XPASSes.
KUBO_DIVERGES = {
    "test_put_then_get_returns_the_exact_bytes": _BY_MULTIHASH,
    "test_recursive_pin_keeps_the_whole_dag": _BY_MULTIHASH,
    "test_direct_pin_keeps_only_the_block": _BY_MULTIHASH,
    "test_direct_and_recursive_pins_on_one_dag": _BY_MULTIHASH,
    "test_shared_subgraph_survives_while_any_pin_reaches_it": _BY_MULTIHASH,
    "test_missing_child_is_reported_not_fatal": "Kubo's block rm refuses indirectly pinned blocks",
    "test_undecodable_pinned_block_is_kept_and_reported": (
        "Kubo's recursive pin must decode every block of the DAG"
    ),
}
CONTRACT_TESTS = [
    pytest.param(
        name,
        marks=[pytest.mark.xfail(reason=KUBO_DIVERGES[name], strict=False)]
        if name in KUBO_DIVERGES
        else [],
    )
    for name, value in vars(CONTRACT).items()
    if name.startswith("test_") and inspect.isfunction(value)
]


class _FreshKuboView(KuboRpcBlockStore):
    """The contract assumes an empty store; a Kubo repo never is (its MFS root, others'
    pins). This view hides the blocks that survived the wipe before the test."""

    def __init__(self, api: str, *, max_block_size: int) -> None:
        super().__init__(api, max_block_size=max_block_size)
        for cid in self.pins():
            self.unpin(cid)
        self.gc()
        self._baseline = set(super().iter_cids())

    def iter_cids(self) -> Iterator[CID]:
        return (cid for cid in super().iter_cids() if cid not in self._baseline)


@pytest.mark.kubo_rpc
@pytest.mark.skipif(
    not KUBO_API, reason="QFLOW_KUBO_API is not set (API multiaddr of a throwaway Kubo)"
)
@pytest.mark.parametrize("name", CONTRACT_TESTS)
def test_contract_against_kubo(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[KuboRpcBlockStore] = []

    def open_kubo(
        kind: str, root: Path, *, max_block_size: int = MAX_BLOCK_SIZE
    ) -> KuboRpcBlockStore:
        store = _FreshKuboView(KUBO_API, max_block_size=max_block_size)
        opened.append(store)
        return store

    # Contract tests that open their own store (test_size_limit) go through open_store.
    monkeypatch.setattr(CONTRACT, "open_store", open_kubo)
    test: Callable[..., None] = getattr(CONTRACT, name)
    wanted = inspect.signature(test).parameters
    args: dict[str, Any] = {"kind": "kubo", "tmp_path": tmp_path}
    if "store" in wanted:
        args["store"] = open_kubo("kubo", tmp_path)
    try:
        test(**{param: args[param] for param in wanted})
    finally:
        for store in opened:
            store.close()


# -- API addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("/ip4/127.0.0.1/tcp/5001", "http://127.0.0.1:5001"),
        ("/ip6/::1/tcp/5001", "http://[::1]:5001"),
        ("/dns4/localhost/tcp/5001", "http://localhost:5001"),
        ("/dns/kubo.example/tcp/80", "http://kubo.example:80"),
        ("/dns6/kubo.example/tcp/5001", "http://kubo.example:5001"),
        ("/ip4/10.0.0.2/tcp/5001/http", "http://10.0.0.2:5001"),
    ],
)
def test_api_multiaddr_to_url(address: str, url: str) -> None:
    assert api_url(address) == url


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("nope", "'nope' is not a valid multiaddr"),
        ("127.0.0.1:5001", "'127.0.0.1:5001' is not a valid multiaddr"),
        ("/ip4/127.0.0.1/udp/5001", "'/ip4/127.0.0.1/udp/5001' is not a TCP address (expected"),
        ("/ip4/127.0.0.1", "'/ip4/127.0.0.1' is not a TCP address"),
        ("/unix/run/ipfs.sock", "'/unix/run/ipfs.sock' is not a TCP address"),
        ("/ip4/127.0.0.1/tcp/5001/p2p-circuit", "is not a TCP address"),
        ("/ip4/127.0.0.1/tcp/5001/https", "only plain http is supported"),
        ("/ip4/127.0.0.1/tcp/5001/tls/http", "only plain http is supported"),
        ("/ip4/127.0.0.1/tcp/0", "'/ip4/127.0.0.1/tcp/0': port 0 cannot be dialled"),
    ],
)
def test_bad_api_multiaddrs(address: str, message: str) -> None:
    with pytest.raises(KuboAddressError) as info:
        api_url(address)
    assert message in str(info.value)
    assert isinstance(info.value, StoreError) and isinstance(info.value, ValueError)
    with pytest.raises(KuboAddressError):
        KuboRpcBlockStore(address)


def test_the_store_names_its_api() -> None:
    with KuboRpcBlockStore("/ip4/127.0.0.1/tcp/5001") as store:
        assert isinstance(store, BlockStore)
        assert store.api == "/ip4/127.0.0.1/tcp/5001"
        assert store.location == "Kubo RPC API at /ip4/127.0.0.1/tcp/5001"
        assert repr(store) == "KuboRpcBlockStore('/ip4/127.0.0.1/tcp/5001')"


# -- configuration and command line -------------------------------------------------------


def test_ipfs_api_is_unset_by_default() -> None:
    assert parse_config(tomllib.loads(DEFAULT_CONFIG)).ipfs_api is None


def test_ipfs_api_from_the_file_and_its_override() -> None:
    data = tomllib.loads(DEFAULT_CONFIG)
    data["store"]["ipfs_api"] = "/ip4/127.0.0.1/tcp/5001"
    assert parse_config(data).ipfs_api == "/ip4/127.0.0.1/tcp/5001"
    overridden = parse_config(data, overrides=Overrides(ipfs_api="/dns4/kubo/tcp/5001"))
    assert overridden.ipfs_api == "/dns4/kubo/tcp/5001"


@pytest.mark.parametrize(
    ("value", "overrides", "message"),
    [
        (
            "/ip4/127.0.0.1/udp/5001",
            Overrides(),
            "config [store] ipfs_api: '/ip4/127.0.0.1/udp/5001' is not a TCP address",
        ),
        (5001, Overrides(), "config [store] ipfs_api: must be a string (a multiaddr), got 5001"),
        (
            "/ip4/127.0.0.1/tcp/5001",  # the override wins, so its error is the one shown
            Overrides(ipfs_api="localhost:5001"),
            "--ipfs-api: 'localhost:5001' is not a valid multiaddr",
        ),
        (
            None,
            Overrides(ipfs_api="/ip4/127.0.0.1/tcp/5001/https"),
            "--ipfs-api: '/ip4/127.0.0.1/tcp/5001/https': only plain http",
        ),
    ],
)
def test_bad_ipfs_api_values(value: object, overrides: Overrides, message: str) -> None:
    data = tomllib.loads(DEFAULT_CONFIG)
    if value is not None:
        data["store"]["ipfs_api"] = value
    with pytest.raises(ConfigError) as info:
        parse_config(data, overrides=overrides)
    assert message in str(info.value)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    init_repo(root)
    return root


def test_boot_check_refuses_a_bad_ipfs_api_as_a_usage_error(repo: Path) -> None:
    args = ["node", "boot-check", "--repo", str(repo), "--ipfs-api", "/ip4/127.0.0.1/udp/1"]
    result = CliRunner().invoke(qflow, args)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("error: bad configuration: --ipfs-api: ")


def test_boot_check_refuses_when_nothing_listens_at_the_api(repo: Path) -> None:
    api = f"/ip4/127.0.0.1/tcp/{free_port()}"
    args = ["node", "boot-check", "--repo", str(repo), "--ipfs-api", api]
    result = CliRunner().invoke(qflow, args)
    assert result.exit_code == 3, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"error: boot check failed: ipfs put/get: Kubo RPC API at {api}: block/put: "
        "cannot connect to http://127.0.0.1:"
    ), result.stderr


def test_boot_check_uses_the_config_files_ipfs_api(repo: Path) -> None:
    api = f"/ip4/127.0.0.1/tcp/{free_port()}"
    config = repo / "config.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace("[store]", f'[store]\nipfs_api = "{api}"'),
        encoding="utf-8",
    )
    result = CliRunner().invoke(qflow, ["node", "boot-check", "--repo", str(repo)])
    assert result.exit_code == 3, (result.stdout, result.stderr)
    assert f"ipfs put/get: Kubo RPC API at {api}: block/put:" in result.stderr


def test_node_run_refuses_to_boot_when_nothing_listens_at_the_api(repo: Path) -> None:
    # A real process: `node run` configures process-wide JSON logging.
    api = f"/ip4/127.0.0.1/tcp/{free_port()}"
    command = "from qflow_node.cli.main import main; main()"
    args = ["node", "run", "--repo", str(repo), "--ipfs-api", api]
    done = subprocess.run(
        [sys.executable, "-c", command, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "boot.failed" and e.get("exit_code") == 3 for e in events)
    assert f"error: boot check failed: ipfs put/get: Kubo RPC API at {api}: block/put:" in (
        done.stderr
    )


# -- transport errors -----------------------------------------------------------------------

OPERATIONS: list[tuple[str, Callable[[KuboRpcBlockStore], object]]] = [
    ("block/put", lambda s: s.put(BLOCK)),
    ("block/put", lambda s: s.put_many([BLOCK, raw_block(b"two")])),
    ("block/get", lambda s: s.get(BLOCK.cid)),
    ("block/stat", lambda s: s.has(BLOCK.cid)),
    ("block/stat", lambda s: s.stat(BLOCK.cid)),
    ("block/rm", lambda s: s.delete(BLOCK.cid)),
    ("refs/local", lambda s: list(s.iter_cids())),
    ("block/stat", lambda s: s.pin(BLOCK.cid)),  # pin checks the block is there first
    ("pin/rm", lambda s: s.unpin(BLOCK.cid)),
    ("pin/ls", lambda s: s.pins()),
    ("repo/stat", lambda s: s.gc()),  # gc reads the repo size first
]


@pytest.mark.parametrize(("command", "operation"), OPERATIONS)
def test_nothing_listening_is_a_store_error_naming_api_and_command(
    command: str, operation: Callable[[KuboRpcBlockStore], object]
) -> None:
    port = free_port()
    api = f"/ip4/127.0.0.1/tcp/{port}"
    with KuboRpcBlockStore(api) as store, pytest.raises(KuboRpcError) as info:
        operation(store)
    assert str(info.value).startswith(
        f"Kubo RPC API at {api}: {command}: cannot connect to http://127.0.0.1:{port}: "
    )
    assert (info.value.api, info.value.command) == (api, command)
    assert isinstance(info.value, StoreError)
    assert info.value.__cause__ is None and info.value.__suppress_context__


class SilentServer:
    """Accepts connections and reads, but never answers (and never closes first)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_no_answer_is_a_read_timeout_store_error() -> None:
    server = SilentServer()
    api = f"/ip4/127.0.0.1/tcp/{server.port}"
    try:
        with KuboRpcBlockStore(api, read_timeout=0.2) as store, pytest.raises(KuboRpcError) as info:
            store.get(BLOCK.cid)
    finally:
        server.close()
    assert str(info.value) == (
        f"Kubo RPC API at {api}: block/get: no answer within the read timeout "
        f"(http://127.0.0.1:{server.port})"
    )


# -- protocol errors ------------------------------------------------------------------------


class ProtocolErrorInjector:
    """A loopback HTTP server that answers every request with one canned response.

    For injecting protocol errors (wrong bytes, wrong CIDs, junk) and recording what the
    client sent. It is not a Kubo emulation: it knows no command and keeps no blocks.
    """

    def __init__(self) -> None:
        self.status = 200
        self.body = b""
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []  # method, path, query
        injector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = urlsplit(self.path)
                injector.requests.append(("POST", url.path, parse_qs(url.query)))
                self.send_response(injector.status)
                self.send_header("Content-Length", str(len(injector.body)))
                self.end_headers()
                self.wfile.write(injector.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api = f"/ip4/127.0.0.1/tcp/{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, body: bytes | dict[str, Any], status: int = 200) -> None:
        self.status = status
        self.body = json.dumps(body).encode() if isinstance(body, dict) else body

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def injector() -> Iterator[ProtocolErrorInjector]:
    server = ProtocolErrorInjector()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def store(injector: ProtocolErrorInjector) -> Iterator[KuboRpcBlockStore]:
    with KuboRpcBlockStore(injector.api, max_block_size=1000) as opened:
        yield opened


def test_bytes_that_do_not_hash_to_the_cid_are_corrupt(
    injector: ProtocolErrorInjector, store: KuboRpcBlockStore
) -> None:
    injector.answer(b"not the block asked for")
    with pytest.raises(CorruptBlockError) as info:
        store.get(BLOCK.cid)
    assert info.value.cid == BLOCK.cid
    assert str(info.value).startswith(
        f"block {BLOCK.cid.encode()} from the Kubo RPC API at {injector.api} is corrupt: "
        "its 23 bytes hash to bafkrei"
    )
    assert info.value.quarantined is None
    assert injector.requests == [
        ("POST", "/api/v0/block/get", {"arg": [BLOCK.cid.encode()], "offline": ["true"]})
    ]


def test_an_oversized_answer_is_corrupt_not_read_whole(
    injector: ProtocolErrorInjector, store: KuboRpcBlockStore
) -> None:
    injector.answer(b"x" * 100_000)
    with pytest.raises(CorruptBlockError, match="larger than the 1000-byte block size limit"):
        store.get(BLOCK.cid)


def test_the_right_bytes_are_returned(
    injector: ProtocolErrorInjector, store: KuboRpcBlockStore
) -> None:
    injector.answer(BLOCK.data)
    assert store.get(BLOCK.cid) == BLOCK.data


def test_kubos_not_found_error_is_block_not_found(
    injector: ProtocolErrorInjector, store: KuboRpcBlockStore
) -> None:
    message = f"block was not found locally (offline): ipld: could not find {BLOCK.cid.encode()}"
    injector.answer({"Message": message, "Code": 0, "Type": "error"}, status=500)
    with pytest.raises(BlockNotFoundError) as info:
        store.get(BLOCK.cid)
    assert info.value.cid == BLOCK.cid
    assert store.has(BLOCK.cid) is False
    with pytest.raises(BlockNotFoundError):
        store.stat(BLOCK.cid)


def test_other_kubo_errors_keep_kubos_message(
    injector: ProtocolErrorInjector, store: KuboRpcBlockStore
) -> None:
    injector.answer({"Message": "repo is locked", "Code": 0, "Type": "error"}, status=500)
    with pytest.raises(KuboRpcError) as info:
        store.get(BLOCK.cid)
    assert str(info.value) == f"Kubo RPC API at {injector.api}: block/get: HTTP 500: repo is locked"
    assert info.value.kubo_message == "repo is locked"


def test_a_server_that_is_not_kubo(
    injector: ProtocolErrorInjector, store: KuboRpcBlockStore
) -> None:
    injector.answer(b"404 page not found", status=404)
    with pytest.raises(KuboRpcError, match=r"pin/ls: HTTP 404: 404 page not found$"):
        store.pins()
    injector.answer(b"<html>hello</html>")
    with pytest.raises(KuboRpcError, match=r"block/stat: unexpected answer: not JSON: <html>"):
        store.stat(BLOCK.cid)


def test_put_checks_the_cid_kubo_stored_under(
    injector: ProtocolErrorInjector, store: KuboRpcBlockStore
) -> None:
    other = raw_block(b"something else").cid
    injector.answer({"Key": other.encode(), "Size": 5})
    with pytest.raises(KuboRpcError, match=f"missing {BLOCK.cid.encode()}"):
        store.put(BLOCK)
    (method, path, query) = injector.requests[-1]
    assert (method, path) == ("POST", "/api/v0/block/put")
    assert query == {"cid-codec": ["raw"], "mhtype": ["sha2-256"], "pin": ["false"]}
    injector.answer({"Key": BLOCK.cid.encode(), "Size": len(BLOCK.data)})
    store.put(BLOCK)


def test_put_enforces_the_size_limit_before_sending(
    injector: ProtocolErrorInjector, store: KuboRpcBlockStore
) -> None:
    with pytest.raises(BlockTooLargeError):
        store.put_many([BLOCK, raw_block(b"x" * 1001)])
    assert injector.requests == []


def test_every_listed_divergence_is_a_contract_test() -> None:
    # A renamed contract test must not silently lose its xfail here.
    assert set(KUBO_DIVERGES) <= {name for name in vars(CONTRACT) if name.startswith("test_")}
