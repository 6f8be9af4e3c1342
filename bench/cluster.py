"""Cluster benchmark: a flow's end-to-end latency, per-step overhead, throughput and
recovery from a killed launcher, on 3 real `qflow node run` processes on loopback.

    .venv/bin/python bench/cluster.py [--quick] [--skip-kills] [--runs N] [--flows N]

Figures (prints, asserts nothing; every wait is bounded and driven by the nodes' JSON
log lines):
  latency       a flow of 10 sequential trivial wasm steps (examples/steps/transform.wasm,
                each step reading the previous one's output) submitted through a node's
                control API (`submit`, blocks built in-process as `qflow submit` does,
                a fresh nonce per run), timed from just before the call to the first
                `exec.finished` (status completed) any node logs (its wall-clock
                `timestamp`; the nodes are on this machine); p50/p95 of >= 30
                sequential runs after 3 warm-ups, submitted round-robin to the nodes.
                Each run waits for every node to log the end before the next one.
  per step      (end-to-end - 10 x a step's own run time) / 10; a step's own run time is
                the median of a warm `Sandbox.run` of the same module with the same
                input in this process (module compiled and in memory, fresh instance).
                The figure so includes the `$start` and end-of-execution slots.
  where         from the same runs' log lines: submit -> `$start` claimed, each slot's
                claim -> done (step run + commit + announcement) and the hand-off
                from one slot's `slot.done` to the next slot's `slot.claimed` (gossip
                of the record, fetch and merge, replay, schedule, claim), split by
                whether the same node took the next slot; the last slot's claim ->
                `exec.finished` (its writer writes the end with the last step).
  throughput    100 executions of the same flow, signed beforehand, submitted as fast as
                the APIs take them (one thread per node, spread over the 3 nodes); from
                the first call to the last first `exec.finished`: steps/s and flows/s
                cluster-wide, and the step slots each node ran (`slot.done`)
  kill          `chaos.kill_launcher.run` 10 times (each on its own fresh 3-node
                cluster): time from the launcher's SIGKILL to the next record a
                survivor writes (`resume_s`), and to completion; whether the launcher
                held a step when killed

Targets: per-step overhead p50 <= 15 ms; >= 200 steps/s cluster-wide; resume after a
kill <= 3 s p95. The machine is shared (±15%), and the 3 nodes and this process share
its cores.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import os
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from chaos import kill_launcher
from chaos.cluster import Cluster, Node, local_cluster
from qflow_node.api.client import call
from qflow_node.codec import Block
from qflow_node.core.engine.records import json_block
from qflow_node.core.scheduling import START
from qflow_node.core.submission import NONCE_LEN, build_submission
from qflow_node.flow_loader import LoadedFlow, load_flow
from qflow_node.identity.store import load_node_key
from qflow_node.log import configure_logging
from qflow_node.repo import RepoPaths
from qflow_node.runtime.testing import NodeProcess, event_time
from qflow_node.sandbox import Sandbox
from qflow_node.sandbox.testing import Modules
from qflow_node.store import FileBlockStore, MemoryBlockStore

ROOT: Final = Path(__file__).resolve().parent.parent
MODULE: Final = ROOT / "examples" / "steps" / "transform.wasm"
NODES: Final = 3
STEPS: Final = tuple(f"s{i}" for i in range(10))
FIRST_INPUT: Final = b'{"user": {"first": "s0"}, "tags": [0]}'  # what s0 gets (s1.. alike)
API_TIMEOUT: Final = 30.0
RUN_TIMEOUT: Final = 60.0  # one sequential execution, submit to end
ALL_NODES_TIMEOUT: Final = 10.0  # after the first end: until every node logged it
THROUGHPUT_TIMEOUT: Final = 300.0

TARGET_STEP_MS: Final = 15.0
TARGET_STEPS_PER_S: Final = 200.0
TARGET_RESUME_S: Final = 3.0


def flow_yaml() -> str:
    lines = ["name: bench-ten", "steps:"]
    for i, step in enumerate(STEPS):
        first = "'\"s0\"'" if i == 0 else f"steps.{STEPS[i - 1]}.output.name"
        lines += [
            f"  - id: {step}",
            f"    run: {MODULE}",
            f"    with: {{user: {{first: {first}}}, tags: '[{i}]'}}",
        ]
    return "\n".join(lines) + "\n"


def _wire(block: Block) -> dict[str, str]:
    return {"cid": block.cid.encode(), "data_b64": base64.b64encode(block.data).decode("ascii")}


# -- log events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    node: str
    event: str
    slot: str | None
    at: float  # wall clock (epoch s), from the event's timestamp
    fields: dict[str, Any]


class Watcher:
    """The cluster's log events of the executions it is told about, each event looked
    at once (a cursor per process), waits on the processes' shared condition."""

    def __init__(self, cluster: Cluster) -> None:
        self.processes = cluster.processes
        self.names = {id(n.process): n.name for n in cluster.nodes if n.process is not None}
        self.cursor: dict[int, int] = {}
        self.execs: dict[str, list[Seen]] = {}  # exec -> its events, in reading order
        self.finished: dict[str, dict[str, Seen]] = defaultdict(dict)  # exec -> node -> end
        self.counts: Counter[str] = Counter()  # every event name logged, all nodes

    def tally(self) -> Counter[str]:
        """The event names counted so far (a copy)."""
        with self.processes.changed:
            self._scan()
            return Counter(self.counts)

    def track(self, exec_id: str) -> None:
        with self.processes.changed:
            self.execs.setdefault(exec_id, [])

    def _scan(self) -> None:  # under the condition
        for process in self.processes.started:
            events = process.events
            start = self.cursor.get(id(process), 0)
            self.cursor[id(process)] = len(events)
            for event in events[start:]:
                self._note(process, event)

    def _note(self, process: NodeProcess, event: dict[str, Any]) -> None:
        self.counts[str(event.get("event"))] += 1
        if event.get("event") == "slot.superseded":
            self.counts[f"superseded: {superseded_why(str(event.get('reason')))}"] += 1
        exec_id = event.get("exec")
        if not isinstance(exec_id, str) or exec_id not in self.execs:
            return
        node = self.names.get(id(process), "?")
        name = str(event.get("event"))
        seen = Seen(node, name, event.get("slot"), event_time(event), event)
        self.execs[exec_id].append(seen)
        if name == "exec.finished":
            self.finished[exec_id].setdefault(node, seen)

    def wait(self, execs: Sequence[str], *, nodes: int, timeout: float) -> bool:
        """Until every exec of `execs` has ended on `nodes` nodes; False on timeout."""
        deadline = time.monotonic() + timeout
        with self.processes.changed:
            while True:
                self._scan()
                if all(len(self.finished[e]) >= nodes for e in execs):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.processes.changed.wait(timeout=min(remaining, 0.5))

    def first_end(self, exec_id: str) -> Seen | None:
        ends = self.finished.get(exec_id, {})
        return min(ends.values(), key=lambda s: s.at) if ends else None


# -- submissions -----------------------------------------------------------------------------


class Submitter:
    """Signed submissions of the flow, built in-process as `qflow submit` builds them
    (flow compiled into every node's store; the submitter is the node's own key)."""

    def __init__(self, cluster: Cluster, source: Path) -> None:
        self.loaded: dict[str, LoadedFlow] = {
            node.name: load_flow(source, store=FileBlockStore(RepoPaths(node.repo).blocks))
            for node in cluster.nodes
        }
        self.keys = {node.name: load_node_key(RepoPaths(node.repo)) for node in cluster.nodes}
        self.inputs = json_block({})

    def build(self, via: Node) -> tuple[str, list[dict[str, str]]]:
        loaded = self.loaded[via.name]
        submission = build_submission(
            self.keys[via.name],
            flow=loaded.cid,
            inputs=self.inputs.cid,
            nonce=os.urandom(NONCE_LEN),
            ts=time.time_ns() // 1_000_000,
        )
        blocks = [submission, loaded.compiled.block, self.inputs, *loaded.modules.values()]
        return submission.cid.encode(), [_wire(b) for b in blocks]

    @staticmethod
    def send(via: Node, wire: list[dict[str, str]]) -> str:
        result = call(
            RepoPaths(via.repo).api_socket, "submit", {"blocks": wire}, timeout=API_TIMEOUT
        )
        return str(result.get("exec"))


# -- figures ---------------------------------------------------------------------------------


def batch_stats(cluster: Cluster) -> Counter[str]:
    """`node.status` executions.batches of every node, summed: "<stage> batches" and
    "<stage> items" (how many operations carried how many slots)."""
    total: Counter[str] = Counter()
    for node in cluster.nodes:
        status = call(RepoPaths(node.repo).api_socket, "node.status", timeout=API_TIMEOUT)
        for stage, counts in status["executions"]["batches"].items():
            for what, n in counts.items():
                total[f"{stage} {what}"] += n
    return total


def pct(values: Sequence[float], q: float) -> float:
    """The `q`th percentile (nearest rank); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def load() -> str:
    """The 1-minute load average: the machine is shared, and it moves the figures."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"


def mark(ok: bool) -> str:
    return "✔" if ok else "✘"


def cpu_seconds(cluster: Cluster) -> dict[str, float]:
    """User + system CPU seconds each running node process has used (Linux /proc; the
    `qflow` process is the node itself); empty where /proc is not there."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    used = {}
    for node in cluster.running():
        assert node.process is not None
        try:
            stat = Path(f"/proc/{node.process.proc.pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        used[node.name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return used


@dataclass
class Figures:
    cpus: int = os.cpu_count() or 0
    step_own_ms: float = float("nan")
    e2e_ms: list[float] = field(default_factory=list)
    per_step_ms: list[float] = field(default_factory=list)
    failed_runs: int = 0
    breakdown: dict[str, list[float]] = field(default_factory=dict)  # part -> ms per run
    latency_cpu_ms: float = float("nan")  # node CPU per execution, all nodes
    flows: int = 0
    flows_done: int = 0
    submit_s: float = float("nan")
    throughput_s: float = float("nan")
    steps_by_node: dict[str, int] = field(default_factory=dict)
    step_claims: int = 0  # `slot.claimed` of step slots, all nodes
    throughput_events: dict[str, int] = field(default_factory=dict)
    batches: Counter[str] = field(default_factory=Counter)  # "<stage> batches|items"
    throughput_cpu_s: dict[str, float] = field(default_factory=dict)
    kills: list[kill_launcher.Outcome] = field(default_factory=list)
    kill_errors: list[str] = field(default_factory=list)
    total_s: float = 0.0

    @property
    def steps_per_s(self) -> float:
        return self.flows_done * len(STEPS) / self.throughput_s

    @property
    def produced(self) -> bool:
        """Whether the latency and throughput sections produced figures."""
        return bool(self.e2e_ms) and self.flows_done > 0


def step_own_time(runs: int = 300) -> float:
    """Median seconds of a warm `Sandbox.run` of the module with a step's input."""
    blocks = MemoryBlockStore()
    cid = Modules(blocks).add(MODULE.read_bytes())
    with Sandbox(blocks) as sandbox:
        first = sandbox.run(cid, FIRST_INPUT)
        assert first.ok, first.failure
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            sandbox.run(cid, FIRST_INPUT)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def latency(
    cluster: Cluster, watcher: Watcher, submitter: Submitter, figures: Figures, runs: int
) -> None:
    warmups = 3
    cpu_before: dict[str, float] = {}
    for number in range(warmups + runs):
        if number == warmups:
            cpu_before = cpu_seconds(cluster)
        via = cluster.nodes[number % NODES]
        exec_id, wire = submitter.build(via)
        watcher.track(exec_id)
        submitted = time.time()
        Submitter.send(via, wire)
        api_done = time.time()
        ended = watcher.wait([exec_id], nodes=1, timeout=RUN_TIMEOUT)
        first = watcher.first_end(exec_id)
        watcher.wait([exec_id], nodes=NODES, timeout=ALL_NODES_TIMEOUT)
        if not ended or first is None or first.fields.get("status") != "completed":
            figures.failed_runs += 1
            continue
        if number < warmups:
            continue
        e2e = first.at - submitted
        figures.e2e_ms.append(e2e * 1e3)
        figures.per_step_ms.append((e2e * 1e3 - len(STEPS) * figures.step_own_ms) / len(STEPS))
        with watcher.processes.changed:
            events = list(watcher.execs[exec_id])
        for part, value in breakdown(events, submitted, api_done, first).items():
            figures.breakdown.setdefault(part, []).append(value)
    cpu_after = cpu_seconds(cluster)
    if cpu_before and figures.e2e_ms:
        spent = sum(cpu_after[n] - cpu_before[n] for n in cpu_before if n in cpu_after)
        figures.latency_cpu_ms = spent / (runs - figures.failed_runs) * 1e3


def breakdown(events: list[Seen], submitted: float, api_done: float, end: Seen) -> dict[str, float]:
    """Where one execution's time went, from its log lines (ms, and two counts named
    with a `#`). Empty if a slot's claim or end is missing."""
    claimed: dict[str, Seen] = {}
    done: dict[str, Seen] = {}
    for seen in events:
        if seen.slot is None:
            continue
        if seen.event == "slot.claimed":
            claimed.setdefault(seen.slot, seen)
        elif seen.event == "slot.done":
            done.setdefault(seen.slot, seen)
    order = [START, *STEPS, *(s for s in claimed if s != START and s not in STEPS)]
    if any(s not in claimed or s not in done for s in order):
        return {}
    parts: dict[str, float] = {
        "api call (submit → answer)": (api_done - submitted) * 1e3,
        "submit → $start claimed": (claimed[START].at - submitted) * 1e3,
        "$start claim → done": (done[START].at - claimed[START].at) * 1e3,
        "step slot claim → done (each)": statistics.mean(
            (done[s].at - claimed[s].at) * 1e3 for s in STEPS
        ),
    }
    same: list[float] = []
    other: list[float] = []
    for prev, slot in itertools.pairwise(order):
        gap = (claimed[slot].at - done[prev].at) * 1e3
        (same if claimed[slot].node == done[prev].node else other).append(gap)
    if same:
        parts["hand-off, same node (each)"] = statistics.mean(same)
    if other:
        parts["hand-off, other node (each)"] = statistics.mean(other)
    parts["last slot claim → exec.finished"] = (end.at - claimed[order[-1]].at) * 1e3
    parts["#hand-offs to another node"] = len(other)
    parts["#claims by rank > 0"] = sum(1 for s in order if claimed[s].fields.get("rank", 0))
    return parts


def throughput(
    cluster: Cluster, watcher: Watcher, submitter: Submitter, figures: Figures, flows: int
) -> None:
    prepared: dict[str, list[list[dict[str, str]]]] = defaultdict(list)
    execs = []
    for number in range(flows):
        via = cluster.nodes[number % NODES]
        exec_id, wire = submitter.build(via)
        watcher.track(exec_id)
        prepared[via.name].append(wire)
        execs.append(exec_id)

    def submit_all(via: Node) -> None:
        for wire in prepared[via.name]:
            Submitter.send(via, wire)

    events_before, cpu_before = watcher.tally(), cpu_seconds(cluster)
    batches_before = batch_stats(cluster)
    start = time.time()
    with ThreadPoolExecutor(max_workers=NODES) as pool:
        for future in [pool.submit(submit_all, node) for node in cluster.nodes]:
            future.result()
    figures.submit_s = time.time() - start
    watcher.wait(execs, nodes=1, timeout=THROUGHPUT_TIMEOUT)
    ends = [watcher.first_end(e) for e in execs]
    completed = [e for e in ends if e is not None and e.fields.get("status") == "completed"]
    figures.flows = flows
    figures.flows_done = len(completed)
    if completed:
        figures.throughput_s = max(e.at for e in completed) - start
    watcher.wait(execs, nodes=NODES, timeout=ALL_NODES_TIMEOUT)
    cpu_after = cpu_seconds(cluster)
    figures.throughput_cpu_s = {n: cpu_after[n] - cpu_before[n] for n in cpu_before}
    figures.throughput_events = dict(watcher.tally() - events_before)
    figures.batches = batch_stats(cluster) - batches_before
    done: Counter[str] = Counter()
    with watcher.processes.changed:
        for exec_id in execs:
            for seen in watcher.execs[exec_id]:
                if seen.slot in STEPS and seen.event == "slot.done":
                    done[seen.node] += 1
                elif seen.slot in STEPS and seen.event == "slot.claimed":
                    figures.step_claims += 1
    figures.steps_by_node = {node.name: done[node.name] for node in cluster.nodes}


def kills(figures: Figures, runs: int) -> None:
    for number in range(runs):
        with tempfile.TemporaryDirectory(prefix="qflow-bench-kill-") as tmp:
            try:
                outcome = kill_launcher.run(Path(tmp), nodes=NODES)
            except AssertionError as exc:  # a bounded wait ran out: counted, not fatal
                figures.kill_errors.append(str(exc).splitlines()[0])
                print(f"  kill run {number + 1}: failed ({figures.kill_errors[-1]})", flush=True)
                continue
        figures.kills.append(outcome)
        held = outcome.killed_holding or "no step"
        print(
            f"  kill run {number + 1}: next record {outcome.resume_s:.2f} s, completed "
            f"{outcome.complete_s:.2f} s after the kill; the launcher held {held}; "
            f"{'OK' if outcome.ok else 'FAILED'}",
            flush=True,
        )
        if not outcome.ok:  # what went wrong, ledger by ledger
            print("    " + outcome.summary().replace("\n", "\n    "), flush=True)


# -- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    runs: int = 30
    flows: int = 100
    kills: int = 10
    skip_kills: bool = False

    @classmethod
    def quick(cls, *, skip_kills: bool = False) -> Options:
        return cls(runs=5, flows=15, kills=2, skip_kills=skip_kills)


def run(options: Options) -> Figures:
    """Every section, printing as it goes; the figures."""
    began = time.monotonic()
    figures = Figures()
    print(
        f"cluster: {NODES} node processes on loopback, {figures.cpus} CPUs, "
        f"load average {load()} at the start",
        flush=True,
    )
    figures.step_own_ms = step_own_time() * 1e3
    print(f"  a step's own run time (warm Sandbox.run): {figures.step_own_ms:.2f} ms", flush=True)
    with tempfile.TemporaryDirectory(prefix="qflow-bench-cluster-") as tmp:
        root = Path(tmp)
        source = root / "ten.yaml"
        source.write_text(flow_yaml(), encoding="utf-8")
        (root / "nodes").mkdir()
        with local_cluster(root / "nodes", NODES) as cluster:
            watcher = Watcher(cluster)
            submitter = Submitter(cluster, source)
            print(f"latency: 3 warm-ups + {options.runs} sequential runs …", flush=True)
            latency(cluster, watcher, submitter, figures, options.runs)
            print_latency(figures)
            print(f"throughput: {options.flows} concurrent flows …", flush=True)
            throughput(cluster, watcher, submitter, figures, options.flows)
            print_throughput(figures)
    if not options.skip_kills:
        print(f"launcher kills: {options.kills} runs, each on a fresh cluster …", flush=True)
        kills(figures, options.kills)
        print_kills(figures)
    figures.total_s = time.monotonic() - began
    print(f"total {figures.total_s:.0f} s; load average {load()} at the end", flush=True)
    return figures


def print_latency(f: Figures) -> None:
    if not f.e2e_ms:
        print(f"  no completed run ({f.failed_runs} failed)")
        return
    p50, p95 = pct(f.per_step_ms, 50), pct(f.per_step_ms, 95)
    print(
        f"  end to end, 10 steps ({len(f.e2e_ms)} runs, {f.failed_runs} failed): "
        f"p50 {pct(f.e2e_ms, 50):.0f} ms, p95 {pct(f.e2e_ms, 95):.0f} ms"
    )
    print(
        f"  per-step overhead: p50 {p50:.1f} ms, p95 {p95:.1f} ms   "
        f"(target p50 ≤ {TARGET_STEP_MS:g} ms {mark(p50 <= TARGET_STEP_MS)})"
    )
    print(f"  node CPU per execution, 3 nodes together: {f.latency_cpu_ms:.0f} ms")
    print("  where the time goes (median over the runs; ms unless a count #):")
    for part, values in f.breakdown.items():
        print(f"    {part:<36} {statistics.median(values):7.1f}")


def print_throughput(f: Figures) -> None:
    if not f.flows_done:
        print(f"  no flow of {f.flows} completed")
        return
    rate = f.steps_per_s
    print(
        f"  {f.flows_done}/{f.flows} flows completed in {f.throughput_s:.1f} s "
        f"(all submitted in {f.submit_s:.2f} s): {rate:.1f} steps/s, "
        f"{f.flows_done / f.throughput_s:.2f} flows/s   "
        f"(target ≥ {TARGET_STEPS_PER_S:g} steps/s {mark(rate >= TARGET_STEPS_PER_S)})"
    )
    runs = sum(f.steps_by_node.values())
    needed = f.flows_done * len(STEPS)
    print(
        f"  step slots done per node: {f.steps_by_node} - {runs} step records for "
        f"{needed} steps ({runs - needed} duplicates), {f.step_claims} step claims"
    )
    cpu = sum(f.throughput_cpu_s.values())
    print(
        f"  node CPU: {cpu:.1f} s in all ({cpu / max(needed, 1) * 1e3:.0f} ms per step), "
        + ", ".join(f"{n} {s:.1f} s" for n, s in f.throughput_cpu_s.items())
    )
    noted = {k: f.throughput_events.get(k, 0) for k in NOTED_EVENTS}
    print(f"  during the run: {noted}")
    why = {k: n for k, n in f.throughput_events.items() if k.startswith("superseded: ")}
    if why:
        print(f"  superseded because: {why}")
    stages = sorted({key.split()[0] for key in f.batches})
    shares = [
        f"{stage} {f.batches[stage + ' items'] / f.batches[stage + ' batches']:.1f}"
        for stage in stages
        if f.batches[stage + " batches"]
    ]
    print(f"  slots per batched operation: {', '.join(shares)}")


NOTED_EVENTS: Final = ("peer.suspect", "slot.error", "slot.superseded", "exec.opened")
SUPERSEDED_WHY: Final = {  # a phrase of each `slot.superseded` reason -> its short name
    "holds the slot": "another holds the slot",
    "claimed the slot too": "a better claimer asked or answered",
    "has a record": "a peer had its record",
    "already written": "exec.started written",
}


def superseded_why(reason: str) -> str:
    """The kind of a `slot.superseded` reason (node ids left out)."""
    for phrase, name in SUPERSEDED_WHY.items():
        if phrase in reason:
            return name
    return "settled by a merged record"


def print_kills(f: Figures) -> None:
    if not f.kills:
        print(f"  no kill run completed ({len(f.kill_errors)} failed)")
        return
    resume = [o.resume_s for o in f.kills]
    complete = [o.complete_s for o in f.kills]
    held = sum(1 for o in f.kills if o.killed_holding)
    ok = sum(1 for o in f.kills if o.ok)
    p95 = pct(resume, 95)
    print(
        f"  kill → next record: p50 {pct(resume, 50):.2f} s, p95 {p95:.2f} s   "
        f"(target p95 ≤ {TARGET_RESUME_S:g} s {mark(p95 <= TARGET_RESUME_S)})"
    )
    print(f"  kill → completed: p50 {pct(complete, 50):.2f} s, p95 {pct(complete, 95):.2f} s")
    print(
        f"  the launcher held a step when killed in {held}/{len(f.kills)} runs; outcomes OK "
        f"{ok}/{len(f.kills)}; runs that did not finish: {len(f.kill_errors)}"
    )


def main(argv: Sequence[str] | None = None) -> Figures:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test)")
    parser.add_argument("--skip-kills", action="store_true", help="no launcher kills")
    parser.add_argument("--runs", type=int, help="sequential runs (default 30, quick 5)")
    parser.add_argument("--flows", type=int, help="concurrent flows (default 100, quick 15)")
    args = parser.parse_args(argv)
    configure_logging(level="WARNING")  # no sandbox lines among the figures
    options = Options.quick(skip_kills=args.skip_kills) if args.quick else Options()
    options = replace(options, skip_kills=args.skip_kills)
    if args.runs is not None:
        options = replace(options, runs=args.runs)
    if args.flows is not None:
        options = replace(options, flows=args.flows)
    return run(options)


if __name__ == "__main__":
    main()
