"""3- and 5-node clusters of real `qflow node run` processes on loopback.

One scenario per size, in order: the mesh forms and every node's heartbeats reach every
other node; a ledger written on one node before it started reaches all the others over
heads announcements + bitswap; a block put on one node is fetched by CID on another
through its control API; a node that joins late (bootstrapping to a node other than the
first) catches up on the ledger; a hostile peer's malformed, forged, unknown-kind,
future-version and oversized envelopes are dropped and counted by reason while the
cluster keeps working; killing a node (SIGKILL) is noticed by all the others within the
suspicion timeout; the rest stop cleanly.

Every wait is bounded and driven by a node's log events, except reading another
process's counters over its API (nothing to wait on: polled with a deadline). Every
process is killed in teardown, whatever happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
    NodeProcess,
    NodeSet,
    json_object,
    make_repo,
)

pytestmark = pytest.mark.slow

HOSTILE = Path(__file__).with_name("hostile_peer.py")
FLOW = Path(__file__).parents[2] / "examples" / "flows" / "greet.yaml"
# Faster than the defaults so the test is quick: suspect after 3 missed heartbeats.
FAST = "\n[membership]\nheartbeat_interval = 0.3\n\n[ledger]\nannounce_interval = 0.5\n"
SUSPICION_TIMEOUT = 0.9  # 3 x heartbeat_interval (docs/operator.md, "Membership")
NOTICE_SLACK = 10.0  # bound on noticing: the state changes at the next tick after it


@pytest.fixture
def start() -> Iterator[NodeSet]:
    with NodeSet() as nodes:  # every process started is killed in teardown
        yield nodes


def qflow(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*QFLOW, *args], input=stdin, capture_output=True, timeout=BOOT_TIMEOUT, check=False
    )


def status(repo: Path) -> dict[str, Any]:
    done = qflow("node", "status", "--repo", str(repo), "--json")
    assert done.returncode == 0, done.stderr.decode()
    parsed = json_object(done.stdout.decode())
    assert parsed is not None
    return parsed


def wait_rejected(repo: Path, expected: dict[str, int], timeout: float) -> dict[str, int]:
    """Poll the node's rejection counters until each reaches `expected` (bounded)."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = status(repo)["envelopes_rejected"]
        if all(counts.get(key, 0) >= n for key, n in expected.items()):
            return counts
        time.sleep(0.2)  # another process's counters: nothing to wait on
    raise AssertionError(f"expected rejections {expected}, node counted {counts}")


def put_block(repo: Path, data: bytes) -> str:
    done = qflow("block", "put", "--repo", str(repo), "--codec", "raw", "-", stdin=data)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


def fetch_block(repo: Path, cid: str) -> bytes:
    done = qflow("block", "fetch", cid, "--repo", str(repo), "--within", "10")
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def run_flow(repo: Path) -> tuple[str, list[str]]:
    done = qflow("run", str(FLOW), "--repo", str(repo), "--json", "--inputs", '{"who": "cluster"}')
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    return result["exec"], result["heads"]


def boot(start: NodeSet, repo: Path, *bootstrap: str) -> tuple[NodeProcess, str, str]:
    args = ["run", "--repo", str(repo), "--listen", LOOPBACK]
    for addr in bootstrap:
        args += ["--bootstrap", addr]
    node = start(*args)
    ready = node.wait_for("ready")
    return node, ready["peer_id"], ready["listen"][0]


@pytest.mark.parametrize("size", [3, 5])
def test_cluster(tmp_path: Path, start: NodeSet, size: int) -> None:
    repos = [make_repo(tmp_path, f"n{i}") for i in range(size)]
    for repo in repos:
        with (repo / "config.toml").open("a", encoding="utf-8") as config:
            config.write(FAST)
    exec_id, heads = run_flow(repos[0])  # a ledger only the first node holds

    # All but the last node start now, bootstrapping to the first.
    first, first_peer, first_addr = boot(start, repos[0])
    nodes = [(first, first_peer, first_addr)]
    nodes += [boot(start, repo, first_addr) for repo in repos[1 : size - 1]]

    # The mesh forms: every node's heartbeats reach every other node.
    for node, _peer, _ in nodes:
        for other, other_peer, _ in nodes:
            if other is not node:
                node.wait_for("peer.alive", peer=other_peer)
    # The ledger reaches everyone from the first node's heads announcements.
    for node, _, _ in nodes[1:]:
        merged = node.wait_for("ledger.merged", exec=exec_id)
        assert merged["heads"] == heads

    # A block put on the second node is fetched by CID on the last running one.
    data = os.urandom(100_000)
    cid = put_block(repos[1], data)
    assert fetch_block(repos[size - 2], cid) == data

    # A late joiner, bootstrapping to another node than the first, catches up.
    late, late_peer, _ = boot(start, repos[-1], nodes[-1][2])
    late.wait_for("ledger.merged", exec=exec_id)
    verified = qflow("ledger", "verify", "--repo", str(repos[-1]), "--exec", exec_id)
    assert verified.returncode == 0, verified.stdout.decode()
    assert fetch_block(repos[-1], cid) == data
    for node, _, _ in nodes:
        node.wait_for("peer.alive", peer=late_peer)
    nodes.append((late, late_peer, ""))

    # A hostile peer on the first node: everything it sends is dropped and counted.
    hostile = subprocess.Popen(
        [sys.executable, str(HOSTILE), first_addr, "default"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert hostile.stdout is not None
        line = hostile.stdout.readline()  # printed once everything is published
        report = json_object(line.decode())
        assert report is not None, hostile.stderr.read().decode() if hostile.stderr else ""
        counted = wait_rejected(repos[0], report["sent"], STOP_TIMEOUT)
        assert {key.split("/")[1] for key in counted} >= {
            "malformed",
            "bad_signature",
            "unknown_kind",
            "unsupported_version",
            "oversize",
        }
    finally:
        hostile.kill()
        hostile.wait(timeout=STOP_TIMEOUT)
    # ... and the cluster keeps working: a new block still travels.
    data = os.urandom(5_000)
    assert fetch_block(repos[-1], put_block(repos[0], data)) == data

    # Killing a node is noticed by every other node within the suspicion timeout.
    victim, victim_peer, _ = nodes[1]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=STOP_TIMEOUT)
    survivors = [n for n in nodes if n[0] is not victim]
    for node, _, _ in survivors:
        suspect = node.wait_for(
            "peer.suspect", peer=victim_peer, timeout=SUSPICION_TIMEOUT + NOTICE_SLACK
        )
        assert suspect["silent_ms"] >= SUSPICION_TIMEOUT * 1000

    for node, _, _ in survivors:
        node.proc.send_signal(signal.SIGTERM)
    for node, _, _ in survivors:
        assert node.finish() == 0, node.output()
