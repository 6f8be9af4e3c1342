"""Chaos: kill and restart random nodes under a load of concurrent flows.

    .venv/bin/python -m chaos.random_kills [--nodes 4] [--flows 20] [--kills 4] [--seed 1]

Starts a cluster, submits `--flows` executions of `spin-chain` spread over the nodes,
then `--kills` times: picks a random running node (never the last two standing),
`kill -9`s it while work is in flight, waits until a survivor writes a record (the
time to resume), and restarts it on its repo (it resumes its unfinished executions and
catches up through heads announcements). At the end every flow must have completed on
every node, each node's ledger must verify, and
all nodes must hold the same heads; replay must apply every step exactly once. Steps
*recorded* twice are counted and reported: a node killed between committing a record and
its announcement leaving the machine can, once restarted, bring back a record its peers
never saw while another node redid the slot (see `Outcome.duplicate_records`). The
random choices come from `--seed`.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from chaos.cluster import Cluster, LedgerCheck, converged_ledgers, local_cluster
from chaos.kill_launcher import FLOW, STEPS
from qflow_node.runtime.testing import NodeProcess, event_time

TIMEOUT: Final = 120.0


@dataclass
class Outcome:
    nodes: int
    flows: int
    kills: list[tuple[str, float]] = field(default_factory=list)  # (node, resume s)
    problems: list[str] = field(default_factory=list)
    checks: dict[str, dict[str, LedgerCheck]] = field(default_factory=dict)  # exec → node
    # Steps recorded twice: a node killed right after committing a record whose
    # announcement died with it, the slot taken over, and the record surfacing when the
    # node returns. Replay applies the first; exactly-once *records* under crashes is
    # what quorum-committed (critical) steps are for. Reported, not a failure.
    duplicate_records: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        resumes = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in self.kills)
        lines = [
            f"{self.nodes} nodes, {self.flows} flows, {len(self.kills)} kills",
            f"  time to the next record after each kill: {resumes}",
            f"  steps recorded twice (replay applies the first): {self.duplicate_records}",
        ]
        lines += [f"  problem: {p}" for p in self.problems[:20]]
        lines.append(f"  outcome: {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


def run(root: Path, *, nodes: int = 4, flows: int = 20, kills: int = 4, seed: int = 1) -> Outcome:
    chooser = random.Random(seed)
    outcome = Outcome(nodes, flows)
    with local_cluster(root, nodes) as cluster:
        execs = [
            cluster.submit(cluster.nodes[i % nodes], FLOW, {"rounds": 30_000_000 + i})
            for i in range(flows)
        ]
        for _ in range(kills):
            running = cluster.running()
            if len(running) <= 2:
                break
            victim = chooser.choice(running)
            if not _wait_for_work(cluster, execs):
                break  # everything finished: nothing left to disturb
            killed_at = cluster.kill(victim)
            outcome.kills.append((victim.name, _resumed(cluster, killed_at, execs)))
            cluster.start(victim)  # same repo, same key: it rejoins and catches up
        for exec_id in execs:  # finished somewhere; then every ledger must agree
            cluster.processes.wait_any(_finished(exec_id), TIMEOUT)
        for exec_id in execs:
            outcome.checks[exec_id] = converged_ledgers(
                cluster, cluster.nodes, exec_id, TIMEOUT, completed=True
            )
            for name, check in outcome.checks[exec_id].items():
                if not check.verified or check.status != "completed":
                    outcome.problems.append(f"{exec_id} on {name}: {check}")
                elif check.applied != dict.fromkeys(STEPS, 1):  # lost, or applied twice
                    outcome.problems.append(f"{exec_id} on {name}: applied {check.applied}")
            any_check = next(iter(outcome.checks[exec_id].values()))
            outcome.duplicate_records += sum(n - 1 for n in any_check.completions.values() if n > 1)
            if len({c.heads for c in outcome.checks[exec_id].values()}) != 1:
                outcome.problems.append(f"{exec_id}: nodes hold different heads")
        codes = cluster.stop_all()
        if any(codes.values()):
            outcome.problems.append(f"unclean stops: {codes}")
    return outcome


def _wait_for_work(cluster: Cluster, execs: list[str]) -> bool:
    """Until some node claims a step of a flow that is not finished (work in flight);
    False if every flow has finished."""
    pending = _pending(cluster, execs)
    if not pending:
        return False

    def claimed(_process: NodeProcess, event: dict[str, Any]) -> bool:
        return (
            event.get("event") == "slot.claimed"
            and event.get("exec") in pending
            and event.get("slot") in STEPS
        )

    since = time.time() - 0.5
    deadline = time.monotonic() + TIMEOUT
    while True:  # the last work may finish without another claim: look again every 5 s
        try:
            cluster.processes.wait_any(claimed, 5.0, since=since)
        except AssertionError:
            pending = _pending(cluster, execs)
            if not pending:
                return False
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no claim within {TIMEOUT}s while {len(pending)} flows are unfinished"
                ) from None
        else:
            return True


def _pending(cluster: Cluster, execs: list[str]) -> set[str]:
    """The flows no node has logged as finished yet."""
    pending = set(execs)
    with cluster.processes.changed:  # the readers append under it
        for process in cluster.processes.started:
            for event in process.events:
                if event.get("event") == "exec.finished":
                    pending.discard(event.get("exec"))
    return pending


def _finished(exec_id: str) -> Any:
    def match(_process: NodeProcess, event: dict[str, Any]) -> bool:
        return event.get("event") == "exec.finished" and event.get("exec") == exec_id

    return match


def _resumed(cluster: Cluster, killed_at: float, execs: list[str]) -> float:
    """Seconds from the kill to the next record a survivor wrote; NaN when the kill came
    as the last work finished (nothing was left to resume)."""
    alive = {n.process for n in cluster.running()}

    def next_record(process: NodeProcess, event: dict[str, Any]) -> bool:
        return process in alive and event.get("event") == "slot.done"

    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            _, event = cluster.processes.wait_any(next_record, 5.0, since=killed_at)
        except AssertionError:
            if not _pending(cluster, execs):
                return float("nan")
            if time.monotonic() > deadline:
                raise
            continue
        return event_time(event) - killed_at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--flows", type=int, default=20)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qflow-chaos-") as tmp:
        outcome = run(
            Path(tmp), nodes=args.nodes, flows=args.flows, kills=args.kills, seed=args.seed
        )
    print(outcome.summary())
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
