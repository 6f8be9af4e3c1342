"""Many seeds: run them in worker processes, and summarize what they found.

The CI seed set (`CI_SEEDS`) is what `tests/sim/test_ci_seeds.py` and `make sim` run;
`make sim-soak` runs `SOAK_SEEDS`. Failing seeds print the exact command that replays
them and the trace of the events before the first violation.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from qflow_node.sim.world import RunConfig, RunResult, run


def seed_set(first: int, count: int, nodes: int, profile: str) -> list[RunConfig]:
    return [RunConfig(seed, nodes, profile) for seed in range(first, first + count)]


# 210 runs, about 2-3 minutes on two cores.
CI_SEEDS: Final = [
    *seed_set(1, 20, 10, "hostile"),
    *seed_set(1001, 20, 10, "moderate"),
    *seed_set(2001, 10, 10, "gentle"),
    *seed_set(3001, 100, 3, "hostile"),
    *seed_set(4001, 60, 5, "moderate"),
]


# Seeds of CI_SEEDS that fail for a bug found and not yet fixed (docs/testing.md, "Open"),
# with the invariants they violate: held to exactly that, so a fix or a new bug shows.
KNOWN_OPEN: Final[dict[int, frozenset[str]]] = {}


def as_known(summary: Summary) -> bool:
    """Whether the sweep's failures are exactly the known open ones."""
    failed = {r.config.seed: frozenset(v.invariant for v in r.violations) for r in summary.failed}
    return failed == KNOWN_OPEN


def soak_seeds(per_profile: int = 2000) -> list[RunConfig]:
    """The soak: many more seeds, and bigger clusters (30 and 100 nodes)."""
    configs: list[RunConfig] = []
    base = 100_000
    for index, profile in enumerate(("gentle", "moderate", "hostile")):
        first = base + index * per_profile * 10
        configs += seed_set(first, per_profile, 10, profile)
        configs += seed_set(first + per_profile, per_profile // 4, 3, profile)
        configs += seed_set(first + 2 * per_profile, per_profile // 20, 30, profile)
    configs += seed_set(base + 90_000, 4, 100, "moderate")
    return configs


@dataclass
class Summary:
    runs: int = 0
    sim_s: float = 0.0
    events: int = 0
    wall_s: float = 0.0
    flows: int = 0
    flows_ended: int = 0
    duplicate_records: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    critical: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    failed: list[RunResult] = field(default_factory=list)
    slowest: list[RunResult] = field(default_factory=list)  # by wall time, at most 3

    def add(self, result: RunResult) -> None:
        self.runs += 1
        self.sim_s += result.sim_s
        self.events += result.events
        self.flows += result.flows
        self.flows_ended += result.flows_ended
        self.duplicate_records += result.duplicate_records
        self.faults.update(result.faults)
        self.critical.update(result.critical)
        self.violations.update(v.invariant for v in result.violations)
        if not result.ok:
            self.failed.append(result)
        self.slowest = sorted([*self.slowest, result], key=lambda r: -r.wall_s)[:3]

    def lines(self, shown: int = 3) -> list[str]:
        out = [
            f"runs: {self.runs}, simulated: {self.sim_s / 3600:.2f} h, "
            f"events traced: {self.events}, wall: {self.wall_s:.1f} s",
            f"flows: {self.flows} ({self.flows_ended} ended everywhere), "
            f"duplicate records: {self.duplicate_records}",
            "faults injected: "
            + (", ".join(f"{k} {n}" for k, n in sorted(self.faults.items())) or "none"),
            "critical: " + critical_line(self.critical),
            f"invariant violations: {sum(self.violations.values())}"
            + (" (" + ", ".join(f"{k} {n}" for k, n in sorted(self.violations.items())) + ")")
            * bool(self.violations),
            "slowest: "
            + ", ".join(
                f"seed {r.config.seed} ({r.config.nodes} nodes, {r.config.profile}) "
                f"{r.wall_s:.1f} s"
                for r in self.slowest
            ),
        ]
        for result in self.failed[:shown]:
            out.append("")
            out.append(f"FAILED seed {result.config.seed}: replay with")
            out.append(f"  {result.config.command()}")
            out += [f"  {v}" for v in result.violations[:5]]
            out.append("  trace before the first violation (last events):")
            out += [f"    {line}" for line in result.tail[-40:]]
        if len(self.failed) > shown:
            out.append(f"... and {len(self.failed) - shown} more failing seeds:")
            out += [f"  {r.config.command()}" for r in self.failed[shown:]]
        return out


def critical_line(counts: Counter[str]) -> str:
    """The two-phase commit's figures, in a fixed order."""
    order = (
        "rounds",
        "certificates",
        "abort certificates",
        "rounds without decision",
        "coordinator crashes mid-round",
        "byzantine validators",
        "byzantine votes",
    )
    return ", ".join(f"{name} {counts[name]}" for name in order)


def sweep(
    configs: Sequence[RunConfig],
    jobs: int = 1,
    on_result: Callable[[RunResult], None] | None = None,
) -> Summary:
    """Run every config (in `jobs` worker processes), in any order; the summary."""
    summary = Summary()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        results: Iterable[RunResult] = map(run, configs)
        if jobs > 1:
            # Fresh interpreters: a forked copy of a process that ran trio (pytest's,
            # say) would inherit its state; spawned workers start clean.
            context = multiprocessing.get_context("spawn")
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=jobs, mp_context=context))
            results = pool.map(run, configs, chunksize=4)
        for result in results:
            summary.add(result)
            if on_result is not None:
                on_result(result)
    summary.wall_s = time.perf_counter() - started
    return summary


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)))
