"""Chaos: kill the launcher mid-flow; the flow must complete on the others.

    .venv/bin/python -m chaos.kill_launcher [--nodes 3] [--runs 1] [--rounds 40000000]

Starts a cluster of real node processes on loopback, submits `spin-chain` (six CPU-bound
steps in a row), finds the launcher - the node that wrote `exec.started` - and
`kill -9`s it while a step is running: preferably a step the launcher itself holds (its
lease must lapse and the next rank take over), otherwise the first step running
anywhere. Then it proves, from every surviving node:

* the execution completed;
* the ledger verifies (hashes, clocks, signatures: `qflow ledger verify`);
* every step completed exactly once in the ledger;
* the survivors converged to the same heads.

Prints a summary per run (nodes, what the launcher held when killed, time from the
kill to the next record, to completion) and exits 1 if any run failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from chaos.cluster import (
    ROOT,
    Cluster,
    LedgerCheck,
    Node,
    converged_ledgers,
    local_cluster,
)
from qflow_node.runtime.testing import NodeProcess, event_time

FLOW: Final = ROOT / "examples" / "flows" / "spin-chain.yaml"
STEPS: Final = ("s1", "s2", "s3", "s4", "s5", "s6")
TIMEOUT: Final = 60.0


@dataclass(frozen=True, slots=True)
class Outcome:
    nodes: int
    exec: str
    launcher: str
    killed_holding: str | None  # the step the launcher ran when killed, if any
    resume_s: float  # kill -> the next record written by a survivor
    complete_s: float  # kill -> the execution completed on a survivor
    checks: dict[str, LedgerCheck]

    @property
    def ok(self) -> bool:
        heads = {c.heads for c in self.checks.values()}
        return len(heads) == 1 and all(
            c.verified
            and c.status == "completed"
            and all(c.completions.get(step) == 1 for step in STEPS)
            for c in self.checks.values()
        )

    def summary(self) -> str:
        held = f"running {self.killed_holding}" if self.killed_holding else "holding no step"
        lines = [
            f"{self.nodes} nodes, exec {self.exec}",
            f"  killed the launcher {self.launcher[-8:]} while {held}",
            f"  next record {self.resume_s:.2f} s after the kill; "
            f"completed {self.complete_s:.2f} s after it",
        ]
        for name, check in self.checks.items():
            lines.append(
                f"  {name}: verified={check.verified} status={check.status} "
                f"records={check.records} completions={check.completions}"
            )
        lines.append(f"  outcome: {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


def _is(exec_id: str, name: str, **fields: Any) -> Any:
    def match(_process: NodeProcess, event: dict[str, Any]) -> bool:
        return (
            event.get("event") == name
            and event.get("exec") == exec_id
            and all(event.get(k) == v for k, v in fields.items())
        )

    return match


def run(root: Path, *, nodes: int = 3, rounds: int = 40_000_000) -> Outcome:
    with local_cluster(root, nodes) as cluster:
        return _scenario(cluster, rounds)


def _scenario(cluster: Cluster, rounds: int) -> Outcome:
    processes = cluster.processes
    exec_id = cluster.submit(cluster.nodes[0], FLOW, {"rounds": rounds})
    started_by, _ = processes.wait_any(_is(exec_id, "slot.done", slot="$start"), TIMEOUT)
    launcher = _node_of(cluster, started_by)

    def kill_moment(process: NodeProcess, event: dict[str, Any]) -> bool:
        if event.get("event") != "slot.claimed" or event.get("exec") != exec_id:
            return False
        step = event.get("slot")
        return step in STEPS and (process is started_by or step == STEPS[-1])

    holder, claimed = processes.wait_any(kill_moment, TIMEOUT)
    killed_holding = claimed["slot"] if holder is started_by else None
    killed_at = cluster.kill(launcher)

    survivors = cluster.running()
    alive = {s.process for s in survivors}
    _, resumed = processes.wait_any(
        lambda p, e: p in alive and e.get("event") == "slot.done" and e.get("exec") == exec_id,
        TIMEOUT,
        since=killed_at,
    )
    finished: list[float] = []
    for survivor in survivors:
        assert survivor.process is not None
        event = survivor.process.wait_for("exec.finished", timeout=TIMEOUT, exec=exec_id)
        finished.append(event_time(event))
    checks = converged_ledgers(cluster, survivors, exec_id, TIMEOUT)
    codes = cluster.stop_all()
    if any(code != 0 for code in codes.values()):
        raise AssertionError(f"a survivor did not stop cleanly: {codes}")
    return Outcome(
        nodes=len(cluster.nodes),
        exec=exec_id,
        launcher=launcher.peer_id,
        killed_holding=killed_holding,
        resume_s=event_time(resumed) - killed_at,
        complete_s=min(finished) - killed_at,
        checks=checks,
    )


def _node_of(cluster: Cluster, process: NodeProcess) -> Node:
    return next(n for n in cluster.nodes if n.process is process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=40_000_000)
    args = parser.parse_args()
    failed = 0
    for number in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="qflow-chaos-") as tmp:
            outcome = run(Path(tmp), nodes=args.nodes, rounds=args.rounds)
        print(f"run {number}: {outcome.summary()}", flush=True)
        failed += not outcome.ok
    print(f"{args.runs - failed}/{args.runs} runs OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
