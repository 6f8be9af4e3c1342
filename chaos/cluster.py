"""A local cluster of real `qflow node run` processes for the chaos scenarios, the demo
and the cluster benchmark: start, submit, watch logs, kill, inspect ledgers, stop.

Everything is on loopback with OS-chosen ports; every wait is bounded and driven by the
nodes' JSON log lines (`NodeProcess.wait_for`); `Cluster` kills every process it
started when it is left, whatever happened.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from qflow_node.codec import parse_cid
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.runtime.testing import (
    BOOT_TIMEOUT,
    LOOPBACK,
    QFLOW,
    STOP_TIMEOUT,
    NodeProcess,
    NodeSet,
    make_repo,
)
from qflow_node.store import FileBlockStore

ROOT: Final = Path(__file__).resolve().parent.parent
# Fast failure detection for a loopback cluster: heartbeats every 0.3 s (suspect after
# 0.9 s), heads announced every 0.5 s, leases of 1.5 s renewed every 0.5 s.
FAST_CONFIG: Final = """
[membership]
heartbeat_interval = 0.3

[ledger]
announce_interval = 0.5

[exec]
lease_ms = 1500
delta_ms = 200
"""


@dataclass
class Node:
    name: str
    repo: Path
    process: NodeProcess | None = None
    peer_id: str = ""
    addr: str = ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.proc.poll() is None


@dataclass
class Cluster:
    root: Path
    nodes: list[Node] = field(default_factory=list)
    processes: NodeSet = field(default_factory=NodeSet)

    def node(self, peer_id: str) -> Node:
        return next(n for n in self.nodes if n.peer_id == peer_id)

    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.running]

    def start(self, node: Node) -> None:
        """Start (or restart) a node, bootstrapping to the running ones; wait for ready."""
        args = ["run", "--repo", str(node.repo), "--listen", LOOPBACK]
        for other in self.running():
            args += ["--bootstrap", other.addr]
        node.process = self.processes(*args)
        ready = node.process.wait_for("ready", timeout=BOOT_TIMEOUT)
        node.peer_id, node.addr = ready["peer_id"], ready["listen"][0]

    def wait_meshed(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Until every running node sees every other one alive (heartbeats crossed)."""
        running = self.running()
        for node in running:
            assert node.process is not None
            for other in running:
                if other is not node:
                    node.process.wait_for("peer.alive", timeout=timeout, peer=other.peer_id)

    def submit(self, via: Node, flow: Path, inputs: dict[str, Any]) -> str:
        """Submit through `via`'s control API; the execution id."""
        done = qflow("submit", str(flow), "--repo", str(via.repo), "--inputs", json.dumps(inputs))
        if done.returncode != 0:
            raise RuntimeError(f"qflow submit failed ({done.returncode}): {done.stderr}")
        return done.stdout.strip()

    def kill(self, node: Node) -> float:
        """SIGKILL: no goodbye, no flush. The wall-clock time of the kill (epoch s)."""
        assert node.process is not None
        killed_at = time.time()
        node.process.proc.send_signal(signal.SIGKILL)
        node.process.proc.wait(timeout=STOP_TIMEOUT)
        return killed_at

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every running node; their exit codes by name."""
        running = self.running()
        for node in running:
            assert node.process is not None
            node.process.proc.send_signal(signal.SIGTERM)
        codes = {}
        for node in running:
            assert node.process is not None
            codes[node.name] = node.process.finish()
        return codes


@contextmanager
def local_cluster(root: Path, size: int, *, config: str = FAST_CONFIG) -> Iterator[Cluster]:
    """`size` fresh repos under `root`, started one after another, meshed."""
    cluster = Cluster(root)
    with cluster.processes:
        for i in range(size):
            repo = make_repo(root, f"n{i}")
            with (repo / "config.toml").open("a", encoding="utf-8") as file:
                file.write(config)
            node = Node(f"n{i}", repo)
            cluster.nodes.append(node)
            cluster.start(node)
        cluster.wait_meshed()
        yield cluster


def qflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QFLOW, *args], capture_output=True, text=True, timeout=BOOT_TIMEOUT, check=False
    )


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    verified: bool
    status: str | None
    completions: dict[str, int]  # step instance -> step.completed records
    records: int
    heads: tuple[str, ...]


def check_ledger(repo: Path, exec_id: str) -> LedgerCheck:
    """Verify a node's ledger of `exec_id` (CLI, full verification) and count what it holds."""
    verified = qflow("ledger", "verify", "--repo", str(repo), "--exec", exec_id).returncode == 0
    paths = RepoPaths(repo)
    ledger = LedgerStore(FileBlockStore(paths.blocks), paths)
    exec = parse_cid(exec_id)
    completions: Counter[str] = Counter()
    status = None
    records = 0
    for _cid, record in ledger.replay(exec):
        records += 1
        if record.kind == "step.completed" and record.step is not None:
            completions[record.step] += 1
        if record.kind in ("exec.completed", "exec.failed"):
            status = record.kind.removeprefix("exec.")
    heads = tuple(sorted(h.encode() for h in ledger.heads(exec)))
    return LedgerCheck(verified, status, dict(completions), records, heads)
