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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from qflow_node.codec import parse_cid
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.runtime.replay import ReplayError, replay
from qflow_node.runtime.testing import (
    BOOT_TIMEOUT,
    LOOPBACK,
    NODE_CMD,
    QFLOW,
    STOP_TIMEOUT,
    NodeProcess,
    NodeSet,
    make_repo,
)
from qflow_node.store import FileBlockStore

ROOT: Final = Path(__file__).resolve().parent.parent
# Fast failure detection for a loopback cluster: heartbeats every 0.5 s (suspect after
# 1.5 s), heads announced every 0.5 s, leases of 1.5 s renewed every 0.5 s.
FAST_CONFIG: Final = """
[membership]
heartbeat_interval = 0.5

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
    # What runs `qflow node` for it: a wrapper may stand in (`chaos.byzantine_node`);
    # set it before `Cluster.start` (e.g. in `local_cluster`'s `setup`).
    command: Sequence[str] = field(default_factory=lambda: list(NODE_CMD))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.proc.poll() is None


@dataclass
class Cluster:
    root: Path
    nodes: list[Node] = field(default_factory=list)
    processes: NodeSet = field(default_factory=NodeSet)
    subnets: tuple[str, ...] = ()  # `--subnet` of every node (empty: the repo's config)

    def node(self, peer_id: str) -> Node:
        return next(n for n in self.nodes if n.peer_id == peer_id)

    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.running]

    def start(self, node: Node) -> None:
        """Start (or restart) a node, bootstrapping to the running ones; wait for ready."""
        args = ["run", "--repo", str(node.repo), "--listen", LOOPBACK]
        for subnet in self.subnets:
            args += ["--subnet", subnet]
        for other in self.running():
            args += ["--bootstrap", other.addr]
        runs = sum(1 for _ in self.root.glob(f"{node.name}.*.log"))
        log_file = self.root / f"{node.name}.{runs}.log"
        node.process = self.processes(*args, log_file=log_file, command=node.command)
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

    def submit(
        self, via: Node, flow: Path, inputs: dict[str, Any], *, subnet: str | None = None
    ) -> str:
        """Submit through `via`'s control API (to `subnet`, else the CLI's default); the
        execution id."""
        args = ["submit", str(flow), "--repo", str(via.repo), "--inputs", json.dumps(inputs)]
        done = qflow(*args, *(["--subnet", subnet] if subnet is not None else []))
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
def local_cluster(
    root: Path,
    size: int,
    *,
    config: str = FAST_CONFIG,
    subnets: Sequence[str] = (),
    setup: Callable[[Sequence[Node]], None] | None = None,
) -> Iterator[Cluster]:
    """`size` fresh repos under `root`, started one after another (joining `subnets`,
    else the repos' default), meshed. `setup` sees every repo before any node starts
    (e.g. to deal a subnet policy's key shares to them)."""
    cluster = Cluster(root, subnets=tuple(subnets))
    with cluster.processes:
        for i in range(size):
            repo = make_repo(root, f"n{i}")
            with (repo / "config.toml").open("a", encoding="utf-8") as file:
                file.write(config)
            cluster.nodes.append(Node(f"n{i}", repo))
        if setup is not None:
            setup(cluster.nodes)
        for node in cluster.nodes:
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
    report: str = ""  # what `qflow ledger verify` printed (stdout, then stderr)
    # step instance -> completions the engine applied on replay (a second record of a
    # settled step is rejected by replay: it counts once in the state)
    applied: dict[str, int] = field(default_factory=dict)


def check_ledger(repo: Path, exec_id: str, *, cli: bool = False) -> LedgerCheck:
    """Verify a node's ledger of `exec_id` in full (hashes, fields, clocks, signatures,
    linked blocks) and count what it holds. With `cli`, through `qflow ledger verify
    --exec` (its output in `report`: what a person would run); otherwise in-process,
    the same verifier without a process per check. A node with no record of it yet gets
    an unverified, empty check."""
    paths = RepoPaths(repo)
    ledger = LedgerStore(FileBlockStore(paths.blocks), paths)
    exec = parse_cid(exec_id)
    if not ledger.heads(exec):
        return LedgerCheck(False, None, {}, 0, (), f"no records of {exec_id}")
    if cli:
        verify = qflow("ledger", "verify", "--repo", str(repo), "--exec", exec_id)
        verified, report = verify.returncode == 0, (verify.stdout + verify.stderr).strip()
    else:
        result = ledger.verify(exec, resolve_links=True)
        verified = result.ok
        report = "ok" if result.ok else f"{result.failure}"
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
    applied: Counter[str] = Counter()
    try:
        for _cid, record in replay(ledger, exec).applied:
            if record.kind == "step.completed" and record.step is not None:
                applied[record.step] += 1
    except ReplayError as exc:  # e.g. the submission not fetched yet: not verified (yet)
        return LedgerCheck(False, status, dict(completions), records, heads, str(exc))
    return LedgerCheck(verified, status, dict(completions), records, heads, report, dict(applied))


def converged_ledgers(
    cluster: Cluster,
    nodes: Sequence[Node],
    exec_id: str,
    timeout: float = BOOT_TIMEOUT,
    *,
    completed: bool = False,
) -> dict[str, LedgerCheck]:
    """`check_ledger` of every node once they all hold the same heads of `exec_id` (and,
    with `completed`, all show it completed; a node restarted after the end learns it
    from heads announcements). Bounded: the last checks when `timeout` runs out. Between
    checks it waits for the next `ledger.merged` of the execution on one of them, at
    most a second (records merged from gossip log nothing)."""
    processes = {node.process for node in nodes}
    deadline = time.monotonic() + timeout
    while True:
        with cluster.processes.changed:  # the readers append under it
            seen = {
                id(event)
                for process in processes
                if process is not None
                for event in process.events
                if event.get("event") == "ledger.merged"
            }
        checks = {node.name: check_ledger(node.repo, exec_id) for node in nodes}
        remaining = deadline - time.monotonic()
        done = not completed or all(c.status == "completed" for c in checks.values())
        if (done and len({c.heads for c in checks.values()}) <= 1) or remaining <= 0:
            return checks
        with suppress(AssertionError):  # nothing merged within the second: check again
            cluster.processes.wait_any(
                _merged_since(processes, exec_id, seen), timeout=min(remaining, 1.0)
            )


def _merged_since(
    processes: set[NodeProcess | None], exec_id: str, seen: set[int]
) -> Callable[[NodeProcess, dict[str, Any]], bool]:
    """Matches a `ledger.merged` of `exec_id` on one of `processes` not among `seen`."""

    def match(process: NodeProcess, event: dict[str, Any]) -> bool:
        return (
            process in processes
            and event.get("event") == "ledger.merged"
            and event.get("exec") == exec_id
            and id(event) not in seen
        )

    return match
