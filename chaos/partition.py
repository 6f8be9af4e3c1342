"""Chaos: split the cluster in two, let both sides work, heal, prove convergence.

    .venv/bin/python -m chaos.partition [--nodes 4]

Starts a cluster whose nodes serve the test-only `debug.partition` API, submits a flow,
then cuts the network into two halves (every node refuses the other half's peers:
connections closed, no dialling, so no gossip, bitswap or direct request crosses). Each
half gets a new flow of its own while the first one goes on wherever it can. Then the
partition heals; every node must end with the same verified heads for every flow, each
flow completed.

Both halves may finish the flow that straddled the split - each thinks the other half
dead - so its ledger can hold a step completed on both sides: concurrent branches the
merge keeps and replay settles (the first in replay order counts). That is the expected
price of availability under a partition for ordinary steps; critical steps (quorum
commits) are what a minority side can never complete. The summary reports it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from chaos.cluster import (
    FAST_CONFIG,
    Cluster,
    LedgerCheck,
    Node,
    converged_ledgers,
    local_cluster,
)
from chaos.kill_launcher import FLOW, STEPS
from qflow_node.api.client import call
from qflow_node.repo import RepoPaths
from qflow_node.runtime.testing import NodeProcess

TIMEOUT: Final = 90.0
PARTITION_CONFIG: Final = FAST_CONFIG + "\n[debug]\npartition_api = true\n"


@dataclass
class Outcome:
    nodes: int
    halves: tuple[list[str], list[str]]
    checks: dict[str, dict[str, LedgerCheck]] = field(default_factory=dict)  # exec → node
    problems: list[str] = field(default_factory=list)
    straddling_duplicates: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [
            f"{self.nodes} nodes split into {self.halves[0]} | {self.halves[1]}, then healed",
            f"  flows: {len(self.checks)}; the straddling flow's steps completed on both "
            f"sides: {self.straddling_duplicates}",
        ]
        for exec_id, checks in self.checks.items():
            statuses = sorted({str(c.status) for c in checks.values()})
            heads = len({c.heads for c in checks.values()})
            lines.append(f"  {exec_id[-12:]}: status {statuses}, distinct heads {heads}")
        lines += [f"  problem: {p}" for p in self.problems]
        lines.append(f"  outcome: {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


def partition(node: Node, block: list[Node]) -> None:
    call(
        RepoPaths(node.repo).api_socket,
        "debug.partition",
        {"block": [other.peer_id for other in block]},
        timeout=10.0,
    )


def run(root: Path, *, nodes: int = 4) -> Outcome:
    with local_cluster(root, nodes, config=PARTITION_CONFIG) as cluster:
        half = nodes // 2
        left, right = cluster.nodes[:half], cluster.nodes[half:]
        outcome = Outcome(nodes, ([n.name for n in left], [n.name for n in right]))
        straddling = cluster.submit(left[0], FLOW, {"rounds": 40_000_000})
        _wait(cluster, "slot.done", straddling, slot="$start")
        for side, other in ((left, right), (right, left)):
            for node in side:
                partition(node, other)
        _wait_suspect(cluster, left, right)
        flows = [straddling]
        flows += [cluster.submit(side[0], FLOW, {"rounds": 20_000_000}) for side in (left, right)]
        for exec_id, side in zip(flows[1:], (left, right), strict=True):
            _wait(cluster, "exec.finished", exec_id, nodes=side)  # each half works alone
        for node in cluster.nodes:
            partition(node, [])  # heal: bootstrap and peering reconnect
        cluster.wait_meshed(timeout=TIMEOUT)
        for exec_id in flows:
            outcome.checks[exec_id] = converged_ledgers(
                cluster, cluster.nodes, exec_id, TIMEOUT, completed=True
            )
            for name, check in outcome.checks[exec_id].items():
                if not check.verified or check.status != "completed":
                    outcome.problems.append(f"{exec_id} on {name}: {check}")
            if len({c.heads for c in outcome.checks[exec_id].values()}) != 1:
                outcome.problems.append(f"{exec_id}: nodes hold different heads")
        any_check = next(iter(outcome.checks[straddling].values()))
        outcome.straddling_duplicates = sum(
            n - 1 for s, n in any_check.completions.items() if s in STEPS and n > 1
        )
        codes = cluster.stop_all()
        if any(codes.values()):
            outcome.problems.append(f"unclean stops: {codes}")
    return outcome


def _wait(
    cluster: Cluster,
    name: str,
    exec_id: str,
    nodes: list[Node] | None = None,
    **fields: Any,
) -> None:
    allowed = None if nodes is None else {n.process for n in nodes}

    def match(process: NodeProcess, event: dict[str, Any]) -> bool:
        return (
            (allowed is None or process in allowed)
            and event.get("event") == name
            and event.get("exec") == exec_id
            and all(event.get(k) == v for k, v in fields.items())
        )

    cluster.processes.wait_any(match, TIMEOUT)


def _wait_suspect(cluster: Cluster, left: list[Node], right: list[Node]) -> None:
    """Until every node has noticed the other half gone (so each half ranks alone)."""
    for side, other in ((left, right), (right, left)):
        for node in side:
            assert node.process is not None
            for gone in other:
                node.process.wait_for("peer.suspect", timeout=TIMEOUT, peer=gone.peer_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qflow-chaos-") as tmp:
        outcome = run(Path(tmp), nodes=args.nodes)
    print(outcome.summary())
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
