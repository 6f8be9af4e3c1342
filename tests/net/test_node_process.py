"""`qflow node run` as real OS processes on loopback: boot, ready, bootstrap, stop, refusals.

Each node is a subprocess; its JSON log lines (stderr) are read by a thread into a
queue, and tests wait for specific events with deadlines - no sleeps. Every process is
killed in teardown, whatever happened.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qflow_node.runtime.testing import (
    BOOT_TIMEOUT,
    LOOPBACK,
    QFLOW,
    STOP_TIMEOUT,
    NodeSet,
    json_object,
    make_repo,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def start() -> Iterator[NodeSet]:
    with NodeSet() as nodes:  # every process started is killed in teardown
        yield nodes


def test_three_nodes_boot_bootstrap_and_stop_cleanly(tmp_path: Path, start: Any) -> None:
    a = start("run", "--repo", str(make_repo(tmp_path, "a")), "--listen", LOOPBACK)
    ready_a = a.wait_for("ready")
    peer_a = ready_a["peer_id"]
    assert ready_a["node"] == peer_a
    addr_a = ready_a["listen"][0]
    assert addr_a.startswith("/ip4/127.0.0.1/tcp/") and addr_a.endswith(f"/p2p/{peer_a}")
    assert any(check.startswith("ipfs put/get:") for check in ready_a["checks"])

    joining = ["--listen", LOOPBACK, "--bootstrap", addr_a, "--subnet", "team"]
    others = [start("run", "--repo", str(make_repo(tmp_path, n)), *joining) for n in ("b", "c")]
    peers = [node.wait_for("ready")["peer_id"] for node in others]
    for node, peer in zip(others, peers, strict=True):
        node.wait_for("peer.connected", peer=peer_a, node=peer)
        a.wait_for("peer.connected", peer=peer, node=peer_a)

    # SIGINT for one, SIGTERM for the others: both stop the node cleanly.
    a.proc.send_signal(signal.SIGINT)
    for node in others:
        node.proc.send_signal(signal.SIGTERM)
    for node, sig in ((a, "SIGINT"), (others[0], "SIGTERM"), (others[1], "SIGTERM")):
        assert node.finish() == 0, node.output()
        node.wait_for("stopped", timeout=1, signal=sig)
        assert not any("shutdown.forced" in line for line in node.stderr)  # graceful in time


def test_refuses_to_boot_when_the_block_store_is_broken(tmp_path: Path, start: Any) -> None:
    repo = make_repo(tmp_path, "a")
    blocks = repo / "blocks"
    shutil.rmtree(blocks)
    blocks.write_text("not a directory\n", encoding="utf-8")  # root ignores chmod; this not
    node = start("run", "--repo", str(repo), "--listen", LOOPBACK)
    failed = node.wait_for("boot.failed")
    assert (failed["part"], failed["exit_code"]) == ("ipfs", 3)
    assert node.finish() == 3
    assert not any('"ready"' in line for line in node.stderr)
    assert f"error: boot check failed: ipfs block store: cannot open {blocks}" in node.output()


@pytest.mark.parametrize("where", ["in use", "not local"])
def test_refuses_to_boot_when_it_cannot_listen(tmp_path: Path, start: Any, where: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listen = f"/ip4/127.0.0.1/tcp/{port}" if where == "in use" else "/ip4/192.0.2.1/tcp/0"
        node = start("run", "--repo", str(make_repo(tmp_path, "a")), "--listen", listen)
        failed = node.wait_for("boot.failed")
        assert node.finish() == 4
    assert (failed["part"], failed["check"]) == ("libp2p", "listen")
    assert f"error: boot check failed: libp2p listen: cannot listen on {listen}" in node.output()
    assert not any('"ready"' in line for line in node.stderr)


def test_a_bad_config_value_is_a_usage_error(tmp_path: Path, start: Any) -> None:
    node = start("run", "--repo", str(make_repo(tmp_path, "a")), "--listen", "/ip4/1.2.3.4/udp/1")
    assert node.finish() == 2
    assert node.stderr == [
        "error: bad configuration: --listen[0]: '/ip4/1.2.3.4/udp/1' is not a TCP listen "
        "address (expected /ip4/<address>/tcp/<port> or /ip6/<address>/tcp/<port>)\n"
    ]


def test_boot_check_alone(tmp_path: Path, start: Any) -> None:
    repo = make_repo(tmp_path, "a")
    ok = start("boot-check", "--repo", str(repo))
    assert ok.finish(timeout=BOOT_TIMEOUT) == 0, ok.output()
    assert [line.split(":")[0] for line in ok.stdout] == [
        "ok  ipfs put/get",
        "ok  ipfs bitswap",
        "ok  libp2p listen",
        "ok  libp2p pubsub",
    ]
    shutil.rmtree(repo / "blocks")
    broken = start("boot-check", "--repo", str(repo))
    assert broken.finish(timeout=BOOT_TIMEOUT) == 3
    assert "error: boot check failed: ipfs" in broken.output()


def test_the_sentinel_runs_the_same_boot_check(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "a")
    args = ["sentinel", "boot-check", "--repo", str(repo), "--listen", LOOPBACK]
    ok = subprocess.run(
        [*QFLOW, *args], capture_output=True, text=True, timeout=BOOT_TIMEOUT, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok  ipfs put/get: round trip of bafkrei")
    shutil.rmtree(repo / "blocks")
    broken = subprocess.run(
        [*QFLOW, *args], capture_output=True, text=True, timeout=BOOT_TIMEOUT, check=False
    )
    assert broken.returncode == 3
    assert broken.stderr.startswith("error: boot check failed: ipfs block store: cannot open")


def _peers(repo: Path) -> tuple[int, dict[str, Any] | None]:
    done = subprocess.run(
        [*QFLOW, "peers", "--repo", str(repo), "--json"],
        capture_output=True,
        text=True,
        timeout=BOOT_TIMEOUT,
        check=False,
    )
    return done.returncode, json_object(done.stdout) if done.stdout else None


def _wait_peer_state(repo: Path, peer: str, states: set[str], timeout: float) -> dict[str, Any]:
    """Poll `qflow peers --json` until `peer` is in one of `states` (bounded)."""
    deadline = time.monotonic() + timeout
    last: tuple[int, dict[str, Any] | None] = (-1, None)
    while time.monotonic() < deadline:
        last = _peers(repo)
        code, snapshot = last
        if code == 0 and snapshot is not None:
            entries: list[dict[str, Any]] = snapshot["peers"]
            for entry in entries:
                if entry["node"] == peer and entry["state"] in states:
                    return entry
        time.sleep(0.2)  # polling another process's file: nothing to wait on
    raise AssertionError(f"{peer} never {states} in `qflow peers` within {timeout}s: {last}")


def test_peers_lists_the_other_node_alive_then_suspect_after_it_stops(
    tmp_path: Path, start: Any
) -> None:
    repos = [make_repo(tmp_path, n) for n in ("a", "b")]
    for repo in repos:  # faster heartbeats: suspect after 0.9 s, dead after 3 s
        with (repo / "config.toml").open("a", encoding="utf-8") as config:
            config.write("\n[membership]\nheartbeat_interval = 0.3\n")
    assert _peers(repos[0]) == (1, None)  # no node running yet
    a = start("run", "--repo", str(repos[0]), "--listen", LOOPBACK)
    ready_a = a.wait_for("ready")
    b = start(
        "run", "--repo", str(repos[1]), "--listen", LOOPBACK, "--bootstrap", ready_a["listen"][0]
    )
    peer_b = b.wait_for("ready")["peer_id"]
    a.wait_for("peer.alive", peer=peer_b)
    alive = _wait_peer_state(repos[0], peer_b, {"alive"}, BOOT_TIMEOUT)
    assert alive["subnets"] == ["default"]
    assert alive["manifest"]["wasm_engine"].startswith("wasmtime/")

    b.proc.send_signal(signal.SIGTERM)
    assert b.finish() == 0, b.output()
    assert not (repos[1] / "run" / "peers.json").exists()  # removed on a clean stop
    a.wait_for("peer.suspect", peer=peer_b, timeout=STOP_TIMEOUT)
    _wait_peer_state(repos[0], peer_b, {"suspect", "dead"}, STOP_TIMEOUT)
    a.wait_for("peer.dead", peer=peer_b, timeout=STOP_TIMEOUT)


def test_a_second_node_on_the_same_repo_refuses_to_start(tmp_path: Path, start: Any) -> None:
    repo = make_repo(tmp_path, "a")
    first = start("run", "--repo", str(repo), "--listen", LOOPBACK)
    first.wait_for("ready")
    second = start("run", "--repo", str(repo), "--listen", LOOPBACK)
    failed = second.wait_for("boot.failed")
    assert (failed["part"], failed["exit_code"]) == ("repo", 5)
    assert second.finish() == 5
    assert "control socket" in second.output()
    # The first node is untouched and still answers on its socket.
    status = subprocess.run(
        [*QFLOW, "node", "status", "--repo", str(repo), "--json"],
        capture_output=True,
        text=True,
        timeout=BOOT_TIMEOUT,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert json_object(status.stdout) is not None
