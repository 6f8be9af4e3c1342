"""One simulated run: N virtual nodes on one seeded network, a workload, a fault
schedule, and the invariants checked throughout and at the end.

Determinism: the only sources of choice are the seed's random streams (`World.rng`);
time is trio's `MockClock` (it jumps to the next deadline whenever every task waits,
so simulated minutes take a moment); trio's scheduler is put in its deterministic mode
and seeded; blocking calls run inline (`offload.inline`); every node's wall clock is
virtual (`clock.wall_clock_from`). The same seed, code and Python give the same run,
event for event: `Trace.digest` says so.
"""

from __future__ import annotations

import hashlib
import random
import tempfile
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final, TextIO

import trio
import trio.testing

from qflow_node import offload
from qflow_node.codec import CID, Block
from qflow_node.core.critical import Decided
from qflow_node.core.scheduling import Slot
from qflow_node.core.submission import SubmissionError
from qflow_node.identity import SigningKey, keys
from qflow_node.runtime.exec_service import ControlRefused, ExecSettings
from qflow_node.runtime.heads_service import HeadsSettings
from qflow_node.sim.critical import CriticalWatch, deal
from qflow_node.sim.faults import PROFILES, WARMUP_S, Fault, Profile, schedule
from qflow_node.sim.invariants import Checker, Violation
from qflow_node.sim.network import LinkModel, NetStats, SimNet
from qflow_node.sim.node import SUBNET, SimNode
from qflow_node.sim.trace import Trace, capturing_logs
from qflow_node.sim.workload import APPROVERS, KINDS, Submitted, approval, modules, submission

SAMPLE_EVERY_S: Final = 2.0
SETTLE_POLL_S: Final = 1.0
# How long, after the faults end, the flows of killed launchers have to end on the
# survivors (their launchers still down): a few leases and retries' worth.
LAUNCHER_GRACE_S: Final = 60.0
# A coordinator kill lands this long at most after its round began: a round takes a few
# round trips (more when validators are slow, down or stalling), so kills fall before the
# prepares, among the votes, and after the certificate but before the record.
KILL_WITHIN_S: Final = 0.25
_SHM: Final = Path("/dev/shm")
_VERIFIED_KEPT: Final = 200_000


@dataclass(frozen=True, slots=True)
class RunConfig:
    seed: int
    nodes: int = 10
    profile: str = "moderate"

    def command(self) -> str:
        """The command that replays this run."""
        return (
            f"python -m qflow_node.sim run --seed {self.seed} --nodes {self.nodes} "
            f"--faults {self.profile}"
        )


@dataclass
class RunResult:
    config: RunConfig
    violations: list[Violation]
    sim_s: float
    events: int
    faults: Counter[str]
    flows: int
    flows_ended: int
    duplicate_records: int
    digest: str
    net: NetStats
    wall_s: float
    critical: Counter[str] = field(default_factory=Counter)  # rounds, certificates, ...
    tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def _stream(seed: int, purpose: str) -> random.Random:
    return random.Random(hashlib.sha256(f"{seed}/{purpose}".encode()).digest()[:8])


class World:
    def __init__(self, config: RunConfig, root: Path, trace: Trace) -> None:
        if config.profile not in PROFILES:
            raise ValueError(f"unknown fault profile {config.profile!r}")
        if not 1 <= config.nodes <= 100:
            raise ValueError("nodes must be between 1 and 100")
        self.config = config
        self.profile: Profile = PROFILES[config.profile]
        self.trace = trace
        self.net = SimNet(self.rng("network"), self.profile.links, trace)
        self.net.on_forged_accepted = self._forged_accepted
        clocks = self.rng("clocks")
        keys = [
            SigningKey(hashlib.sha256(f"{config.seed}/node/{index}".encode()).digest())
            for index in range(config.nodes)
        ]
        # The subnet policy (validators, their key, who is Byzantine), dealt from the seed.
        self.dealing = deal(
            config.seed,
            SUBNET,
            [key.peer_id for key in keys],
            modules=modules(),
            rng=self.rng("validators"),
            byzantine=self.profile.byzantine,
        )
        self.checker = Checker(self.dealing.keys)
        self.watch = CriticalWatch(trace, self._certificate, self._round_began)
        self.nodes: list[SimNode] = []
        for index, key in enumerate(keys):
            node = SimNode(
                f"n{index}",
                key,
                root / f"n{index}",
                self.net,
                exec_settings=ExecSettings(),
                heads_settings=HeadsSettings(),
                heartbeat_s=1.0,
                wasm_cache=Path(tempfile.gettempdir()) / "qflow-sim-wasm",
                critical=(self.dealing, self.watch),
            )
            skew = self.profile.skew_ms
            node.skew_ns = clocks.randint(-skew, skew) * 1_000_000
            self.nodes.append(node)
        self.by_peer = {node.peer: node for node in self.nodes}
        self.by_name = {node.name: node for node in self.nodes}
        kills = self.rng("coordinator-kills")
        self._kill_rng = kills
        self._coordinator_kills = sorted(
            kills.uniform(WARMUP_S, self.profile.quiet_at_s * 0.8)
            for _ in range(self.profile.coordinator_kills)
        )
        self.faults = schedule(self.profile, config.nodes, self.rng("faults"))
        self.fault_counts: Counter[str] = Counter()
        self.submitted: list[Submitted] = []
        self.held_down: set[str] = set()  # killed launchers: down until the heal
        self._ended_on: dict[CID, set[str]] = {}  # executions ended on nodes now crashed
        self._partition = 0
        self._recent: deque[tuple[str, bytes, str]] = deque(maxlen=256)
        self.net.on_publish = self._recent.append
        self._nursery: trio.Nursery | None = None
        self.ended_at = 0.0

    def rng(self, purpose: str) -> random.Random:
        return _stream(self.config.seed, purpose)

    # -- the run ---------------------------------------------------------------------------

    async def main(self) -> None:
        quiet = self.profile.quiet_at_s
        policy = self.dealing.policy
        self.trace.add(
            "sim",
            "policy",
            validators=[self.by_peer[v.peer].name for v in policy.validators],
            threshold=policy.threshold,
            byzantine={self.by_peer[p].name: b for p, b in sorted(self.dealing.byzantine.items())},
        )
        self.watch.counts["byzantine validators"] += len(self.dealing.byzantine)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.net.run)
            for node in self.nodes:
                node.start(nursery, self._life)
            nursery.start_soon(self._inject_faults)
            nursery.start_soon(self._workload)
            nursery.start_soon(self._sample)
            await trio.sleep_until(quiet)
            deadline = quiet + self.profile.settle_s
            # A wait of the world's own that never ends would otherwise run (in virtual
            # time) forever: bounded, and a violation.
            with trio.move_on_at(deadline + SETTLE_POLL_S) as bounded:
                await self._end_faults_and_settle(deadline)
            if bounded.cancelled_caught:
                self.checker.violate("progress", "the world's settling did not end by its deadline")
            self.ended_at = trio.current_time()
            self.trace.add("sim", "final_check")
            self.checker.final(self.nodes, self.tracked())
            nursery.cancel_scope.cancel()

    async def _end_faults_and_settle(self, deadline: float) -> None:
        # The faults end, except that killed launchers stay down: their flows must end on
        # the survivors alone. Then the launchers come back and everything settles.
        await self._heal()
        known = self._known_to_survivors()
        with trio.move_on_after(LAUNCHER_GRACE_S):
            while self._unended_killed_launchers():  # noqa: ASYNC110 - the nodes' ledgers
                await trio.sleep(SETTLE_POLL_S)
        self._check_killed_launchers(known | self._known_to_survivors())
        self.held_down.clear()
        await self._heal()
        while trio.current_time() < deadline:
            if self.checker.settled(self.nodes, self.tracked()):
                return
            await trio.sleep(SETTLE_POLL_S)

    def tracked(self) -> list[CID]:
        """Executions the invariants follow: every accepted submission, and one whose
        API call was cut short by a crash if any node knows it."""
        tracked = []
        for sub in self.submitted:
            if sub.accepted or (
                sub.accepted is None
                and any(n.services and n.services.ledger.heads(sub.exec) for n in self.nodes)
            ):
                tracked.append(sub.exec)
        return tracked

    async def _life(self, node: SimNode) -> None:
        try:
            await node.run()
        except Exception as exc:  # a node's bug: reported, and the run goes on without it
            detail = "".join(traceback.format_exception(exc)[-6:])
            self.checker.violate("hygiene", f"{node.name} died: {exc!r}\n{detail}")
            self.trace.add(node.name, "died", error=repr(exc))

    async def _sample(self) -> None:
        while True:
            await trio.sleep(SAMPLE_EVERY_S)
            self.checker.sample(self.nodes)

    # -- faults ----------------------------------------------------------------------------

    async def _inject_faults(self) -> None:
        rng = self.rng("fault-details")
        for fault in self.faults:
            await trio.sleep_until(fault.at)
            self._apply(fault, rng)

    def _apply(self, fault: Fault, rng: random.Random) -> None:
        assert self._nursery is not None
        node = self.nodes[fault.node] if fault.node >= 0 else None
        if fault.kind == "crash" and node is not None:
            if not node.up or node.peer in self.held_down:
                return
            self._count(fault.kind, node=node.name, until=round(fault.until, 3))
            self._crash(node)
            self._nursery.start_soon(self._restart_at, node, fault.until)
        elif fault.kind == "partition":
            self._partition += 1
            groups = {n.peer: g for n, g in zip(self.nodes, fault.groups, strict=True)}
            self.net.groups = groups
            minority = [n.name for n, g in zip(self.nodes, fault.groups, strict=True) if g]
            self._count(fault.kind, cut_off=minority, until=round(fault.until, 3))
            self._nursery.start_soon(self._end_partition, self._partition, fault.until)
        elif fault.kind == "slow" and node is not None:
            self._count(fault.kind, node=node.name, extra_s=round(fault.extra_s, 3))
            self._set_slow(node, fault.extra_s)
            self._nursery.start_soon(self._end_slow, node, fault.until)
        elif fault.kind in ("forge", "replay") and self._recent:
            topic, data, origin = self._recent[rng.randrange(len(self._recent))]
            if fault.kind == "forge":
                spot = rng.randrange(len(data))
                data = (
                    data[:spot] + bytes([data[spot] ^ (1 << rng.randrange(8))]) + data[spot + 1 :]
                )
                self.net.forged.add(data)
            self._count(fault.kind, topic=topic.rsplit("/", 1)[-1])
            self.net.inject(origin, topic, data, delay=0.0)

    # -- critical rounds -------------------------------------------------------------------

    def _certificate(self, node: str, slot: Slot, decided: Decided) -> None:
        self.checker.certified(f"{node}'s round", slot, decided.certificate, obtained=True)

    def _round_began(self, name: str) -> None:
        # A pending coordinator kill takes the first round begun after its time.
        now = trio.current_time()
        if not self._coordinator_kills or self._coordinator_kills[0] > now:
            return
        node = self.by_name[name]
        if now >= self.profile.quiet_at_s or not node.up or node.peer in self.held_down:
            return
        assert self._nursery is not None
        self._coordinator_kills.pop(0)
        delay = self._kill_rng.uniform(0, KILL_WITHIN_S)
        down = self._kill_rng.uniform(*self.profile.down_s)
        until = min(self.profile.quiet_at_s, now + delay + down)
        self._nursery.start_soon(self._kill_coordinator, node, delay, until)

    async def _kill_coordinator(self, node: SimNode, delay: float, until: float) -> None:
        assert self._nursery is not None
        await trio.sleep(delay)
        quiet = trio.current_time() >= self.profile.quiet_at_s  # the faults have stopped
        if quiet or not node.up or node.peer in self.held_down:
            return
        self._count("kill_coordinator", node=node.name, mid_round=self.watch.mid_round(node.name))
        self._crash(node)
        self._nursery.start_soon(self._restart_at, node, until)

    def _count(self, kind: str, **fields: object) -> None:
        self.fault_counts[kind] += 1
        self.trace.add("sim", f"fault.{kind}", **fields)

    def _set_slow(self, node: SimNode, extra_s: float) -> None:
        node.slow_s = extra_s
        end = self.net.endpoints.get(node.peer)
        if end is not None:
            end.slow_s = extra_s

    async def _end_slow(self, node: SimNode, until: float) -> None:
        await trio.sleep_until(until)
        self._set_slow(node, 0.0)

    async def _end_partition(self, which: int, until: float) -> None:
        await trio.sleep_until(until)
        if which == self._partition:
            self.net.groups = {}
            self.trace.add("sim", "fault.partition_healed")

    async def _restart_at(self, node: SimNode, at: float) -> None:
        await trio.sleep_until(at)
        await self._restart(node)

    async def _restart(self, node: SimNode) -> None:
        assert self._nursery is not None
        if node.running and not node.crashing:
            return  # up, or booting
        await node.stopped.wait()  # a crashed incarnation unwinds first
        if node.running or node.peer in self.held_down:
            return  # another restart was quicker, or the node is kept down
        self.trace.add(node.name, "restart")
        node.start(self._nursery, self._life)

    async def _heal(self) -> None:
        self.trace.add("sim", "heal")
        self.net.groups = {}
        self.net.links = LinkModel(base_ms=self.profile.links.base_ms)
        for node in self.nodes:
            self._set_slow(node, 0.0)
            if not node.up:
                await self._restart(node)

    def stuck(self, detail: str) -> None:
        self.checker.violate("progress", detail)
        self.trace.add("sim", "livelock", detail=detail)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def logged_error(self, node: str, event: str) -> None:
        self.checker.violate("hygiene", f"{node} logged an error: {event}")

    def _forged_accepted(self, peer: str, topic: str) -> None:
        name = self.by_peer[peer].name if peer in self.by_peer else peer
        self.checker.violate("signatures", f"{name} accepted a tampered message on {topic}")

    # -- workload --------------------------------------------------------------------------

    async def _workload(self) -> None:
        assert self._nursery is not None
        rng = self.rng("workload")
        submitter = SigningKey(hashlib.sha256(f"{self.config.seed}/submitter".encode()).digest())
        quiet = self.profile.quiet_at_s
        count = rng.randint(*self.profile.flows)
        kills = min(self.profile.launcher_kills, count)
        plan = [(WARMUP_S + 1 + 2 * i, True) for i in range(kills)]
        plan += [(rng.uniform(WARMUP_S, quiet * 0.7), False) for _ in range(count - kills)]
        for at, kill in sorted(plan):
            await trio.sleep_until(at)
            kinds = [k for k in KINDS if k.short] if kill else list(KINDS)
            kind = rng.choice(kinds)
            up = [n for n in self.nodes if n.up]
            if not up:
                continue
            node = rng.choice(up)
            exec, blocks = submission(kind, rng, submitter, node.wall_ns() // 1_000_000)
            sub = Submitted(exec, kind, at, node.name)
            self.submitted.append(sub)
            self.trace.add(node.name, "submit", exec=exec.encode()[-10:], flow=kind.name)
            node.call(partial(self._submit, node, sub, blocks))
            if kind.approvals:
                self._nursery.start_soon(self._approve, sub, rng.uniform(2, 40), rng.random())
            if kill:
                self._nursery.start_soon(self._kill_launcher, sub, node)

    async def _submit(self, node: SimNode, sub: Submitted, blocks: list[Block]) -> None:
        services = node.services
        if services is None:
            sub.accepted, sub.error = False, "node down"
            return
        try:
            await services.execs.submit(sub.exec, blocks)
        except SubmissionError as exc:
            sub.accepted, sub.error = False, str(exc)
            self.checker.violate("liveness", f"{node.name} refused a valid submission: {exc}")
        else:
            sub.accepted = True

    async def _approve(self, sub: Submitted, after: float, dice: float) -> None:
        await trio.sleep(after)
        approver = 0 if dice < 0.5 else 1
        action = "deny" if dice > 0.9 else "approve"
        up = [
            n
            for n in self.nodes
            if n.services is not None and sub.exec in n.services.execs.replicas
        ]
        if not up:
            return
        node = up[int(dice * 1000) % len(up)]
        control = approval(
            sub.exec, APPROVERS[approver], action, node.wall_ns() // 1_000_000, bytes(16)
        )
        sub.approvals.append((trio.current_time(), approver, action))
        self.trace.add(node.name, "approve", exec=sub.exec.encode()[-10:], action=action)

        async def give() -> None:
            services = node.services
            if services is None:
                return
            try:
                await services.execs.publish_control(control)
            except (ControlRefused, KeyError) as exc:
                self.trace.add(node.name, "approve.refused", error=str(exc))

        node.call(give)

    async def _kill_launcher(self, sub: Submitted, launcher: SimNode) -> None:
        # Once another node has the execution's first record, the launcher dies, and
        # stays down until the heal: the flow must end without it.
        others = [n for n in self.nodes if n is not launcher]
        with trio.move_on_after(10):
            while not any(n.services and n.services.ledger.heads(sub.exec) for n in others):  # noqa: ASYNC110 - other nodes' disks
                await trio.sleep(0.02)
            if launcher.up:
                self.held_down.add(launcher.peer)
                sub.launcher_killed = True
                self._count("kill_launcher", node=launcher.name, exec=sub.exec.encode()[-10:])
                self._crash(launcher)

    def _crash(self, node: SimNode) -> None:
        # What the node saw end goes down with it: noted first, so a flow that ended on
        # a node killed later (for another flow) still counts as ended.
        if node.services is not None:
            ledger = node.services.ledger
            for sub in self.submitted:
                if self.checker.status(ledger, sub.exec) in ("completed", "failed"):
                    self._ended_on.setdefault(sub.exec, set()).add(node.name)
        if self.watch.mid_round(node.name):
            self.watch.counts["coordinator crashes mid-round"] += 1
            self.trace.add(node.name, "crash.mid_round")
        node.crash()

    def _unended_killed_launchers(self) -> list[Submitted]:
        def ended(sub: Submitted) -> bool:
            if self._ended_on.get(sub.exec, set()) - {sub.node}:
                return True
            return any(
                n.services is not None
                and self.checker.status(n.services.ledger, sub.exec) in ("completed", "failed")
                for n in self.nodes
            )

        return [sub for sub in self.submitted if sub.launcher_killed and not ended(sub)]

    def _known_to_survivors(self) -> set[CID]:
        """The executions some node up and not held down holds records of."""
        return {
            sub.exec
            for sub in self.submitted
            for n in self.nodes
            if n.peer not in self.held_down
            and n.services is not None
            and n.services.ledger.heads(sub.exec)
        }

    def _check_killed_launchers(self, known: set[CID]) -> None:
        if not any(n.up for n in self.nodes if n.peer not in self.held_down):
            return  # every node was a killed launcher: no survivor to hold to account
        for sub in self._unended_killed_launchers():
            if sub.exec not in known:
                # Its records went down with killed launchers (the one that wrote them
                # and another, killed for its own flow) before any survivor had them:
                # no node allowed up can know of the flow. The final check still holds
                # it to ending everywhere once they are back.
                self.trace.add("sim", "killed_launcher.unknown", exec=sub.exec.encode()[-10:])
                continue
            self.checker.violate(
                "killed_launcher",
                f"{sub.kind.name} {sub.exec.encode()[-10:]} (launcher {sub.node} killed) "
                f"has not ended on any survivor {LAUNCHER_GRACE_S:.0f} s after the faults "
                "stopped, its launcher still down",
            )


class Watchdog(trio.abc.Instrument):
    """Virtual time moves only when every task waits: a task that keeps running without
    ever waiting (a busy loop, harmless-looking under real time) stops the world's clock
    for good. After `limit` task steps at one instant, the run is ended as a livelock,
    naming the tasks that kept running."""

    def __init__(self, on_stuck: Callable[[str], None], limit: int = 200_000) -> None:
        self.on_stuck = on_stuck
        self.limit = limit
        self._at = -1.0
        self._steps = 0
        self._who: Counter[str] = Counter()
        self.fired = False

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        now = trio.current_time()
        if now != self._at:
            self._at, self._steps = now, 0
            self._who.clear()
            return
        self._steps += 1
        if self._steps > self.limit // 2:
            self._who[task.name] += 1
        if self._steps > self.limit and not self.fired:
            self.fired = True
            busiest = ", ".join(f"{name} x{n}" for name, n in self._who.most_common(4))
            self.on_stuck(f"virtual time stuck at {now:.3f}s: {busiest}")


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Trio's scheduler in its deterministic mode, seeded; blocking calls inline; valid
    signatures checked once per process (the virtual nodes share it)."""
    import trio._core._run as trio_run

    saved = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    state = trio_run._r.getstate()
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]  # Final in trio; Hypothesis sets it too
    trio_run._r.seed(seed)
    keys.remember_verified(_VERIFIED_KEPT)
    try:
        with offload.inline():
            yield
    finally:
        keys.remember_verified(None)
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = saved  # type: ignore[misc]  # as above
        trio_run._r.setstate(state)


def run(config: RunConfig, trace_file: TextIO | None = None) -> RunResult:
    """Run one seed to the end; never raises for what the nodes do (that is a violation)."""
    started = time.perf_counter()
    trace = Trace(trace_file)
    base = _SHM if _SHM.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="qflow-sim-", dir=base) as root:
        world = World(config, Path(root), trace)
        with capturing_logs(trace, world.logged_error), deterministic(config.seed):
            trio.run(
                world.main,
                clock=trio.testing.MockClock(autojump_threshold=0),
                instruments=[Watchdog(world.stuck)],
            )
    tracked = world.tracked()
    ended = sum(1 for exec in tracked if world.checker.ended.get(exec, False))
    return RunResult(
        config=config,
        violations=world.checker.violations,
        sim_s=world.ended_at,
        events=trace.count,
        faults=world.fault_counts,
        flows=len(tracked),
        flows_ended=ended,
        duplicate_records=world.checker.duplicate_records,
        digest=trace.digest(),
        net=world.net.stats,
        wall_s=time.perf_counter() - started,
        critical=world.watch.counts,
        tail=trace.tail() if world.checker.violations else [],
    )
