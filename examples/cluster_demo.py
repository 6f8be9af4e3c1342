"""`make demo`, the cluster part: a flow survives the death of the node that launched it.

    .venv/bin/python examples/cluster_demo.py [--root DIR] [--nodes 3]

On this machine, with no server anywhere:

1. starts 3 `qflow node run` processes on loopback (OS-chosen ports, fresh repos under
   `.demo/cluster/`, subnet `shop`) and a small shop (`examples/shop.py`) whose payment
   service takes 1.5 s to answer and deduplicates charges by `idempotency-key`;
2. submits the example order flow (`examples/flows/order-processing.yaml`, a small
   order: no human approval) through n0's control API, which gossips it to every node;
3. prints, as they happen, the events of the nodes' JSON logs: which node claimed and
   completed which step;
4. `kill -9`s the launcher (the node that wrote `exec.started`) mid-flow - while it runs
   a step when it is the first choice for one (a call to the shop, if it can);
5. shows another node taking over and finishing the flow, the flow's output and how
   long the takeover took;
6. verifies the ledger on every survivor (`qflow ledger verify`), shows every step
   completed exactly once, and prints `qflow ledger replay` of one survivor;
7. stops everything with SIGTERM (exit codes 0), whatever happened, Ctrl-C included.

Exit code 0 if all of it held, 1 if anything failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # examples/shop.py (site-packages has its own `examples`)
    sys.path.insert(0, str(HERE))

from shop import CHARGE_DELAY, DELAY, Shop  # noqa: E402

from chaos.cluster import (  # noqa: E402
    ROOT,
    Cluster,
    LedgerCheck,
    Node,
    check_ledger,
    converged_ledgers,
    local_cluster,
    qflow,
)
from qflow_node.codec import parse_cid  # noqa: E402
from qflow_node.core.scheduling import FINISH, START, Slot, ranking  # noqa: E402
from qflow_node.runtime.testing import NodeProcess, event_time  # noqa: E402

SUBNET: Final = "shop"  # every node joins it; flows are submitted to it
TIMEOUT: Final = 60.0  # the bound of every wait
# A small order (2 x 3.50 + 5.50 = 12.50, under 1000: the flow approves it by policy).
ORDER: Final[dict[str, Any]] = {
    "id": "o-1001",
    "customer": {"first": "Ada", "last": "Lovelace"},
    "tags": ["demo"],
    "lines": [
        {"sku": "pen", "qty": 2, "price": 3.5},
        {"sku": "notebook", "qty": 1, "price": 5.5},
    ],
}
# Why `make demo` runs spin-chain for now (--flow order runs the order flow).


@dataclass(frozen=True, slots=True)
class Workload:
    key: str
    flow: Path
    # Where to kill the launcher, best first: it is killed as it runs the first of these
    # it is first choice for (claims at once); if none, as `fallback` is claimed.
    steps: tuple[str, ...]
    fallback: str
    required: frozenset[str]  # steps every survivor's ledger must show completed once
    # Steps that call the shop -> how the shop's line for their request begins: the kill
    # waits for it, so the request is in flight (the shop answers slowly).
    shop_calls: Mapping[str, str] = field(default_factory=dict)

    @property
    def uses_shop(self) -> bool:
        return bool(self.shop_calls)

    def inputs(self, shop: Shop | None) -> dict[str, Any]:
        if shop is None:
            return {"rounds": SPIN_ROUNDS}
        return {"services": shop.url, "order": ORDER}

    def describe(self) -> str:
        if self.uses_shop:
            total = sum(line["qty"] * line["price"] for line in ORDER["lines"])
            return f"order {ORDER['id']} (total {total:.2f}, under 1000: no approval)"
        return f"{len(self.steps)} CPU-bound wasm steps in a row ({SPIN_ROUNDS:,} rounds each)"


SPIN_ROUNDS: Final = 40_000_000
ORDER_FLOW: Final = Workload(
    key="order",
    flow=HERE / "flows" / "order-processing.yaml",
    steps=(
        "charge",
        "stock_level",
        "confirm",
        "check_order",
        "customer",
        "total",
        "approval_gate",
        "auto_approval",
        "reserve",
        "labels",
        "labels[0]/label",
        "labels[1]/label",
    ),
    fallback="charge",
    required=frozenset({"check_order", "customer", "total", "charge", "stock_level", "confirm"}),
    shop_calls={
        "charge": f"charge {ORDER['id']} accepted",
        "stock_level": f"stock  {ORDER['id']}",
        "confirm": f"order  {ORDER['id']} confirmed",
    },
)
SPIN_CHAIN: Final = Workload(
    key="spin-chain",
    flow=HERE / "flows" / "spin-chain.yaml",
    steps=("s1", "s2", "s3", "s4", "s5", "s6"),
    fallback="s3",
    required=frozenset({"s1", "s2", "s3", "s4", "s5", "s6"}),
)
WORKLOADS: Final = {w.key: w for w in (ORDER_FLOW, SPIN_CHAIN)}
DEFAULT: Final = ORDER_FLOW
SHOWN: Final = {
    "exec.opened": "opened",
    "slot.claimed": "claimed",
    "slot.done": "done",
    "slot.superseded": "superseded",
    "slot.error": "error",
    "exec.finished": "finished",
}


class DemoError(Exception):
    """The demo could not show what it set out to show."""


class Console:
    """Lines to stdout (flushed), one at a time: the shop's thread prints too."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self._write = write
        self._lock = threading.Lock()

    def __call__(self, line: str = "") -> None:
        with self._lock:
            if self._write is not None:
                self._write(line)
            else:
                print(line, flush=True)


def slot_label(event: dict[str, Any]) -> str:
    slot = str(event.get("slot"))
    return slot if slot in (START, FINISH) else f"{slot}#{event.get('attempt')}"


class Follower:
    """The execution's events from every node's log, in time order: each is printed
    once, as it arrives, and `until` waits (bounded) for the first that matches."""

    def __init__(self, cluster: Cluster, exec_id: str, flow: str, say: Console) -> None:
        self.cluster = cluster
        self.exec_id = exec_id
        self.flow = flow
        self.say = say
        self.names = {id(n.process): n.name for n in cluster.nodes}
        self.seen: list[tuple[NodeProcess, dict[str, Any]]] = []  # consumed, in order
        self.pending: deque[tuple[NodeProcess, dict[str, Any]]] = deque()
        self._cursors: dict[int, int] = {}
        # An extra remark at the end of an event's line ("" for none).
        self.remark: Callable[[NodeProcess, dict[str, Any]], str] = lambda _p, _e: ""

    def name(self, process: NodeProcess) -> str:
        return self.names.get(id(process), "?")

    def until(
        self, match: Callable[[NodeProcess, dict[str, Any]], bool], what: str
    ) -> tuple[NodeProcess, dict[str, Any]]:
        """The first event `match` accepts (shown already, or within TIMEOUT seconds)."""
        for process, event in self.seen:
            if match(process, event):
                return process, event
        deadline = time.monotonic() + TIMEOUT
        changed = self.cluster.processes.changed
        with changed:
            while True:
                self._collect()
                while self.pending:
                    process, event = self.pending.popleft()
                    self.seen.append((process, event))
                    self._show(process, event)
                    if match(process, event):
                        return process, event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DemoError(f"no {what} within {TIMEOUT:.0f} s")
                changed.wait(timeout=min(remaining, 0.5))

    def _collect(self) -> None:
        fresh: list[tuple[NodeProcess, dict[str, Any]]] = []
        for process in self.cluster.processes.started:
            start = self._cursors.get(id(process), 0)
            events = process.events[start:]
            self._cursors[id(process)] = start + len(events)
            fresh += [(process, e) for e in events if e.get("exec") == self.exec_id]
        fresh.sort(key=lambda item: event_time(item[1]))  # stable: each log keeps its order
        self.pending.extend(fresh)

    def _show(self, process: NodeProcess, event: dict[str, Any]) -> None:
        verb = SHOWN.get(str(event.get("event")))
        if verb is None:
            return
        name = self.name(process)
        if event["event"] == "exec.opened":
            what = self.flow
        elif event["event"] == "exec.finished":
            what = str(event.get("status"))
        else:
            what = slot_label(event)
            if event["event"] == "slot.claimed" and event.get("rank"):
                what += f" (rank {event['rank']})"  # not first choice: its turn came
        remark = self.remark(process, event)
        if event["event"] == "slot.done" and event.get("slot") == START:
            remark = f"   <- wrote exec.started: {name} is the launcher"
        elif event["event"] == "slot.done" and event.get("ended") and event.get("slot") != FINISH:
            remark = remark or "   <- and the execution's end, on top of it"
        self.say(f"  {name:<4}{verb:<10}{what:<18}{remark}".rstrip())


@dataclass
class Outcome:
    workload: str
    exec: str
    launcher: str  # node name
    held: str | None  # the step the launcher ran when killed ("s3#1"), if any
    took_over_by: str | None  # the survivor that claimed `held` after the kill, if any
    takeover_s: float | None  # kill -> that claim
    complete_s: float  # kill -> the execution finished on a survivor
    status: str | None  # the flow's status, replayed from a survivor's ledger
    output: Any
    checks: dict[str, LedgerCheck]
    required: frozenset[str]
    charges: int | None = None  # charges the shop booked for the order (order flow)
    deduplicated: int | None = None  # repeated charges the shop answered without charging
    exit_codes: dict[str, int] = field(default_factory=dict)

    @property
    def exactly_once(self) -> bool:
        """Every survivor: the same steps completed, each exactly once, the required ones
        among them."""
        steps = {frozenset(c.completions) for c in self.checks.values()}
        return (
            len(steps) == 1
            and self.required <= next(iter(steps))
            and all(n == 1 for c in self.checks.values() for n in c.completions.values())
        )

    @property
    def ok(self) -> bool:
        return (
            bool(self.checks)
            and self.status == "completed"
            and all(c.verified and c.status == "completed" for c in self.checks.values())
            and len({c.heads for c in self.checks.values()}) == 1
            and self.exactly_once
            and self.charges in (None, 1)
            and bool(self.exit_codes)
            and all(code == 0 for code in self.exit_codes.values())
        )

    def failures(self) -> list[str]:
        found = [] if self.status == "completed" else [f"replayed status {self.status}"]
        for name, check in self.checks.items():
            if not check.verified:
                found.append(f"{name}: the ledger does not verify: {check.report}")
            if check.status != "completed":
                found.append(f"{name}: execution {check.status}")
            extra = {step: n for step, n in check.completions.items() if n != 1}
            missing = self.required - set(check.completions)
            if extra or missing:
                found.append(f"{name}: completions {extra or ''} missing {sorted(missing)}")
        if len({c.heads for c in self.checks.values()}) > 1:
            found.append("the survivors' heads differ")
        if self.charges not in (None, 1):
            found.append(f"the shop charged the order {self.charges} times")
        if not self.exit_codes or any(self.exit_codes.values()):
            found.append(f"exit codes {self.exit_codes}")
        return found


def run(
    root: Path, *, nodes: int = 3, workload: Workload = DEFAULT, say: Console | None = None
) -> Outcome:
    """The whole cluster demo in `root` (fresh repos are made there). Every process it
    starts is stopped when it returns or raises (SIGTERM, then SIGKILL if one lingers)."""
    say = say or Console()
    with ExitStack() as stack:
        shop = None
        if workload.uses_shop:
            shop = stack.enter_context(Shop(say=lambda line: say(f"  shop  {line}")))
        cluster = stack.enter_context(local_cluster(root, nodes, subnets=[SUBNET]))
        codes: dict[str, int] = {}
        try:
            outcome = _scenario(cluster, workload, shop, say)
        finally:
            say("")
            say("-- stop: SIGTERM to every node still running")
            codes = cluster.stop_all()
            say("  " + ", ".join(f"{name} exit {code}" for name, code in codes.items()))
        outcome.exit_codes = codes
        return outcome


def _scenario(cluster: Cluster, workload: Workload, shop: Shop | None, say: Console) -> Outcome:
    _introduce(cluster, shop, say)
    via = cluster.nodes[0]
    flow = _rel(workload.flow)
    say(f"-- flow {workload.flow.stem}: {workload.describe()}")
    say(f"   submitted through {via.name}'s control API: qflow submit {flow} --subnet {SUBNET}")
    exec_id = cluster.submit(via, workload.flow, workload.inputs(shop), subnet=SUBNET)
    say(f"  exec {exec_id}, gossiped to every node; what their logs say, live:")
    follow = Follower(cluster, exec_id, workload.flow.stem, say)
    kill = _kill_the_launcher(cluster, workload, shop, follow)
    took_over_by, takeover_s = _take_over(follow, kill)
    complete_s = _finish(follow, kill)

    say("")
    say("-- the result, replayed from the ledger of a survivor")
    first = kill.survivors[0]
    replayed = qflow("ledger", "replay", "--repo", str(first.repo), exec_id, "--json")
    state = json.loads(replayed.stdout) if replayed.stdout.strip() else {}
    status, output = state.get("status"), state.get("output")
    say(f"  status {status}, output {json.dumps(output)}")
    if took_over_by is not None:
        say(
            f"  takeover: {took_over_by} claimed {kill.held} {takeover_s:.1f} s after the kill; "
            f"the flow completed {complete_s:.1f} s after it"
        )
    elif kill.held is not None:
        say(
            f"  {kill.launcher.name} finished {kill.held} and its record got out just before "
            f"the kill landed: nothing to take over; the others completed the flow "
            f"{complete_s:.1f} s after the kill"
        )
    else:
        say(f"  the others completed the flow {complete_s:.1f} s after the kill")
    charges, dedup = None, None
    if shop is not None:
        events = shop.server.events
        charges = sum(1 for line in events if line.startswith(f"charge {ORDER['id']} accepted"))
        dedup = sum(1 for line in events if line.startswith(f"charge {ORDER['id']} deduplicated"))
        say(f"  the shop charged {ORDER['id']} {charges} time(s), deduplicated {dedup} repeat(s)")

    checks = _ledgers(cluster, kill.survivors, exec_id, say)
    say("")
    say(f"-- $ qflow ledger replay --repo {_rel(first.repo)} {exec_id}")
    human = qflow("ledger", "replay", "--repo", str(first.repo), exec_id)
    for line in (human.stdout + human.stderr).splitlines():
        say(f"  {line}")
    return Outcome(
        workload=workload.key,
        exec=exec_id,
        launcher=kill.launcher.name,
        held=kill.held,
        took_over_by=took_over_by,
        takeover_s=takeover_s,
        complete_s=complete_s,
        status=status,
        output=output,
        checks=checks,
        required=workload.required,
        charges=charges,
        deduplicated=dedup,
    )


def _introduce(cluster: Cluster, shop: Shop | None, say: Console) -> None:
    say(f"-- {len(cluster.nodes)} nodes on loopback, subnet {SUBNET}, no server")
    for node in cluster.nodes:
        assert node.process is not None
        addr = node.addr.split("/p2p/")[0]
        say(f"  {node.name:<4}pid {node.process.proc.pid:<8}{addr:<26}peer {node.peer_id}")
    if shop is not None:
        say(
            f"  shop {shop.url}  (a charge takes {CHARGE_DELAY} s to answer, deduplicated by "
            f"idempotency-key; stock and confirmation {DELAY} s)"
        )
    say("")


@dataclass(frozen=True, slots=True)
class _Kill:
    launcher: Node
    held: str | None  # the slot the launcher ran ("s3#1"), None if it held none
    killed_at: float  # epoch seconds
    survivors: list[Node]


def _kill_the_launcher(
    cluster: Cluster, workload: Workload, shop: Shop | None, follow: Follower
) -> _Kill:
    """Find the launcher (it writes `exec.started`) and kill -9 it mid-flow: as it runs
    the first step of `workload.steps` it is first choice for."""
    exec_id, say = follow.exec_id, follow.say
    starter, _ = follow.until(_is(exec_id, "slot.done", slot=START), "exec.started")
    launcher = next(n for n in cluster.nodes if n.process is starter)
    target = _first_choice(exec_id, launcher, cluster.nodes, workload.steps)
    if target is not None:
        say(f"  >> the launcher {launcher.name} is first choice for {target}: kill it then")
    else:
        say(f"  >> the launcher {launcher.name} is first choice for no step: kill it mid-flow")

    def moment(process: NodeProcess, event: dict[str, Any]) -> bool:
        if event.get("event") == "exec.finished":
            return True  # too late (checked below)
        if event.get("event") != "slot.claimed":
            return False
        if target is not None:
            return process is starter and event.get("slot") == target
        return event.get("slot") == workload.fallback

    holder, claimed = follow.until(moment, "moment to kill the launcher")
    if claimed.get("event") == "exec.finished":
        raise DemoError("the flow finished before the launcher could be killed")
    held = slot_label(claimed) if holder is starter else None
    in_flight = held is not None and target in workload.shop_calls and shop is not None
    if in_flight:
        assert target is not None and shop is not None
        shop.server.wait_for(workload.shop_calls[target], timeout=10.0)
    killed_at = cluster.kill(launcher)
    if held is None:
        doing = f"while {follow.name(holder)} runs {slot_label(claimed)}"
    elif in_flight:
        doing = f"while it runs {held}, waiting for the shop's answer"
    else:
        doing = f"as it starts {held}"
    say(f"  !! kill -9 {launcher.name} (pid {starter.proc.pid}), the launcher, {doing}")
    return _Kill(launcher, held, killed_at, cluster.running())


def _take_over(follow: Follower, kill: _Kill) -> tuple[str | None, float | None]:
    """Who claimed the dead launcher's step, and how long after the kill (None, None if
    nobody had to: its record got out first, and the flow finished)."""
    alive = {id(s.process) for s in kill.survivors}

    def takeover(process: NodeProcess, event: dict[str, Any]) -> bool:
        return (
            id(process) in alive
            and event.get("event") == "slot.claimed"
            and slot_label(event) == kill.held
            and event_time(event) > kill.killed_at
        )

    def remark(process: NodeProcess, event: dict[str, Any]) -> str:
        if kill.held is None or not takeover(process, event):
            return ""
        after = event_time(event) - kill.killed_at
        return f"   <- takes over from {kill.launcher.name}, {after:.1f} s after the kill"

    follow.remark = remark
    if kill.held is None:
        return None, None
    process, event = follow.until(
        lambda p, e: takeover(p, e) or _is(follow.exec_id, "exec.finished")(p, e),
        f"survivor taking over {kill.held}, or finishing the flow",
    )
    if event.get("event") == "exec.finished":
        return None, None
    return follow.name(process), event_time(event) - kill.killed_at


def _finish(follow: Follower, kill: _Kill) -> float:
    """Until every survivor saw the execution end; seconds from the kill to the first."""
    exec_id = follow.exec_id
    finished: list[float] = []
    for survivor in kill.survivors:
        _, event = follow.until(
            _is(exec_id, "exec.finished", on=[survivor]), f"exec.finished on {survivor.name}"
        )
        finished.append(event_time(event))
    # The writer of the end (with the last step's record, or in `$finish` when the end
    # came otherwise) logs its `slot.done` right after: show it too.
    follow.until(
        _is(exec_id, "slot.done", on=kill.survivors, ended=True), "the end of the execution"
    )
    return min(finished) - kill.killed_at


def _ledgers(
    cluster: Cluster, survivors: list[Node], exec_id: str, say: Console
) -> dict[str, LedgerCheck]:
    say("")
    say("-- the ledgers of the survivors: verified (hashes, clocks, signatures), exactly once")
    converged_ledgers(cluster, survivors, exec_id, timeout=TIMEOUT)  # same heads everywhere
    checks = {s.name: check_ledger(s.repo, exec_id, cli=True) for s in survivors}
    for survivor in survivors:
        say(f"  $ qflow ledger verify --repo {_rel(survivor.repo)} --exec {exec_id}")
        for line in checks[survivor.name].report.splitlines():
            say(f"    {line}")
    steps = sorted({step for c in checks.values() for step in c.completions})
    say(f"  steps completed: {', '.join(steps)}")
    for name, check in checks.items():
        twice = {step: n for step, n in check.completions.items() if n != 1}
        once = not twice and set(check.completions) == set(steps)
        say(
            f"  {name}: status {check.status}, {check.records} records, "
            f"{'every step completed exactly once' if once else f'NOT exactly once: {twice}'}, "
            f"heads {','.join(h[-8:] for h in check.heads)}"
        )
    return checks


def _is(
    exec_id: str, name: str, *, on: list[Node] | None = None, **fields: Any
) -> Callable[[NodeProcess, dict[str, Any]], bool]:
    """Matches event `name` of `exec_id` with `fields`, logged by one of `on` (or any)."""
    processes = None if on is None else {id(node.process) for node in on}

    def match(process: NodeProcess, event: dict[str, Any]) -> bool:
        return (
            (processes is None or id(process) in processes)
            and event.get("event") == name
            and event.get("exec") == exec_id
            and all(event.get(k) == v for k, v in fields.items())
        )

    return match


def _first_choice(
    exec_id: str, launcher: Node, nodes: list[Node], steps: tuple[str, ...]
) -> str | None:
    """The first of `steps` whose rendezvous ranking (all nodes live) puts the launcher
    first - it claims that step at once; None if there is none."""
    exec = parse_cid(exec_id)
    peers = [n.peer_id for n in nodes]
    for step in steps:
        if ranking(Slot(exec, step, 1), peers)[0] == launcher.peer_id:
            return step
    return None


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--root", type=Path, help="where the node repos go (default .demo/cluster, wiped)"
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument(
        "--flow",
        choices=sorted(WORKLOADS),
        default=DEFAULT.key,
        help=f"the workload (default {DEFAULT.key})",
    )
    args = parser.parse_args(argv)
    if args.root is None:
        root = ROOT / ".demo" / "cluster"
        shutil.rmtree(root, ignore_errors=True)
    else:
        root = args.root
        if root.exists() and any(root.iterdir()):
            parser.error(f"--root {root} is not empty")
    root.mkdir(parents=True, exist_ok=True)
    workload = WORKLOADS[args.flow]
    say = Console()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even if inherited ignored
    try:
        outcome = run(root, nodes=args.nodes, workload=workload, say=say)
    except KeyboardInterrupt:
        say("interrupted: every node stopped")
        return 130
    except (DemoError, AssertionError, RuntimeError, subprocess.TimeoutExpired) as exc:
        say(f"FAILED: {exc}")
        return 1
    say("")
    if outcome.ok:
        say(
            f"OK: the launcher {outcome.launcher} died mid-flow; the others finished "
            f"{workload.flow.stem}, their ledgers verify, every step completed exactly once"
            + (", the order was charged once" if outcome.charges is not None else "")
        )
        return 0
    say("FAILED: " + "; ".join(outcome.failures()))
    return 1


if __name__ == "__main__":
    sys.exit(main())
