"""Random schedules: lost, duplicated and reordered messages, coordinators that crash and
are taken over, validators that restart from their journal, f < 2t - n Byzantine
validators that equivocate and lie, and lying coordinators that propose an outcome no
honest validator computes. No two decisions of a slot are ever both certified. With a
deterministic step and honest coordinators, the honest validators never sign abort and a
final clean round always decides, for every f < n/3 (n = 3f + 1, t = 2f + 1) and for an
all-honest n = 5, t = 3 or n = 4, t = 3 (the committee whose locks used to split)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from qflow_node.core.critical import (
    AbortRequest,
    Answer,
    Certificate,
    Coordinator,
    CoordinatorAction,
    Decided,
    Decision,
    Equivocation,
    InvalidPartial,
    Outcome,
    Prepare,
    Query,
    Refusal,
    Send,
    Settings,
    SignedDecision,
    Validator,
    Vote,
    verify_certificate,
)
from qflow_node.core.critical.messages import Request
from qflow_node.core.critical.testing import (
    POLICY,
    SLOT,
    SUBNET,
    Byzantine,
    Committee,
    Honest,
    Member,
    committee,
    deliver,
    outcome,
    run_round,
)
from qflow_node.crypto import Share

X = outcome(b"paid 10")
Y = outcome(b"paid 11")
Z = outcome(b"paid 12")
DECISIONS = (Decision.commit(X), Decision.commit(Y), Decision.commit(Z), Decision.abort())
SETTINGS = Settings(query_ms=300, commit_ms=1_000, abort_ms=800, resend_ms=200)
# (n, t, f) with f < 2t - n: safety holds against f equivocating validators. The first
# two are n = 3f + 1, t = 2f + 1; the last two all honest.
CONFIGS = ((4, 3, 1), (7, 5, 2), (5, 3, 0), (4, 3, 0))
GROUPS = {(n, t): committee(t, n, b"property") for n, t, _ in CONFIGS}


@dataclass
class Liar:
    """A Byzantine validator. Cooperative, it signs whatever it is asked, whatever it
    signed before, and tells queries nothing: the worst case for safety, since it helps
    every coordinator towards t. Otherwise each request gets a random answer: its own
    partials on any decision, a stolen or garbage partial, a false index, or silence."""

    share: Share
    thief_of: Share  # another validator's share, for stolen partials
    rng: random.Random
    cooperative: bool
    cache: dict[tuple[int, Decision], SignedDecision] = field(default_factory=dict)

    def sign(self, decision: Decision, share: Share | None = None) -> SignedDecision:
        share = share or self.share
        key = (share.index, decision)
        if key not in self.cache:  # BLS is deterministic: caching only saves time
            self.cache[key] = Byzantine(share).sign(SLOT, decision)
        return self.cache[key]

    def handle(self, message: Prepare | AbortRequest | Query) -> Vote | Answer | None:
        rng = self.rng
        index = self.share.index
        if isinstance(message, Query):
            lie = None if self.cooperative else rng.choice((None, *DECISIONS))
            return Answer(SUBNET, POLICY, SLOT, index, None if lie is None else self.sign(lie))
        request: Request = "prepare" if isinstance(message, Prepare) else "abort"
        asked = message.decision if isinstance(message, Prepare) else Decision.abort()
        behaviour = 7 if self.cooperative else rng.randrange(8)
        if behaviour == 0:
            return None
        if behaviour == 1 and request == "prepare":  # a yes vote for some commit
            signed = self.sign(Decision.commit(rng.choice((X, Y, Z))))
            return Vote(SUBNET, POLICY, SLOT, index, request, signed)
        if behaviour == 2:
            signed = self.sign(Decision.commit(rng.choice((X, Y, Z))))
            return Vote(SUBNET, POLICY, SLOT, index, request, signed, Refusal.LOCKED)
        if behaviour == 3 and request == "prepare":
            signed = self.sign(Decision.abort())
            return Vote(SUBNET, POLICY, SLOT, index, request, signed, Refusal.ABORTED)
        if behaviour == 4:  # someone else's partial, or bytes that are no point at all
            stolen = self.sign(asked, self.thief_of)
            partial = stolen.partial if rng.random() < 0.5 else rng.randbytes(96)
            return Vote(SUBNET, POLICY, SLOT, index, request, SignedDecision(asked, partial))
        if behaviour == 5:
            return Vote(SUBNET, POLICY, SLOT, index, request, None, Refusal.POLICY, "no")
        if behaviour == 6:  # another validator's index: rejected, never counted
            other = self.thief_of.index
            signed = self.sign(asked, self.thief_of)
            return Vote(SUBNET, POLICY, SLOT, other, request, signed)
        return Vote(SUBNET, POLICY, SLOT, index, request, self.sign(asked))


@dataclass
class Runner:
    """A coordinator in the simulation: whom it cannot reach, and whether it died."""

    coordinator: Coordinator
    cut: set[int]  # a partition: validators it does not reach at all
    crash_at: int | None  # the step at which it dies
    lying: bool = False  # proposes an outcome it did not compute
    alive: bool = True

    @property
    def running(self) -> bool:
        return self.alive and self.coordinator.next_timer_ms is not None


@dataclass
class World:
    group: Committee
    honest: dict[int, Honest]
    byzantine: set[int]
    rng: random.Random
    deterministic: bool
    members: dict[int, Member] = field(default_factory=dict)
    runners: list[Runner] = field(default_factory=list)
    certificates: list[Certificate] = field(default_factory=list)
    # ("request", runner, to, message) or ("reply", runner, from, message)
    in_flight: list[tuple[str, int, int, object]] = field(default_factory=list)

    @property
    def lied(self) -> bool:
        return any(runner.lying for runner in self.runners)

    def take(self, runner: int, actions: tuple[CoordinatorAction, ...]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.in_flight.append(("request", runner, action.to, action.message))
            elif isinstance(action, Decided):
                self.certificates.append(action.certificate)
            elif isinstance(action, Equivocation | InvalidPartial):
                assert action.index in self.byzantine, f"honest validator blamed: {action}"

    def step(self, item: tuple[str, int, int, object], now: int) -> None:
        kind, runner, index, message = item
        if kind == "request":
            assert isinstance(message, Prepare | AbortRequest | Query)
            if index in self.runners[runner].cut:
                return
            member = self.members[index]
            if isinstance(member, Honest) and self.rng.random() < 0.05:
                member.restart(self.group.shares[index - 1])  # only its journal survives
            reply = member.handle(message)
            if reply is not None:
                self.in_flight.append(("reply", runner, index, reply))
        elif self.runners[runner].running:  # a dead coordinator hears nothing
            assert isinstance(message, Vote | Answer)
            self.take(runner, deliver(self.runners[runner].coordinator, index, message, now))


def simulate(
    config: tuple[int, int, int],
    seed: int,
    loss: float,
    dup: float,
    rounds: int,
    deterministic: bool,
    liars: bool,
) -> World:
    """`deterministic`: every honest validator computes X (else X or Y at random).
    `liars`: some coordinators propose Y or Z, which no honest one would."""
    n, t, f = config
    rng = random.Random(seed)
    group = GROUPS[(n, t)]
    byzantine = set(rng.sample(range(1, n + 1), f))
    world = World(group, {}, byzantine, rng, deterministic)
    for share in group.shares:
        if share.index in byzantine:
            thief_of = group.shares[share.index % n]
            liar = Liar(share, thief_of, random.Random(rng.random()), rng.random() < 0.5)
            world.members[share.index] = liar
        else:
            own: Outcome = X if deterministic else rng.choice((X, Y))
            member = Honest(Validator(SUBNET, POLICY, share), own)
            world.honest[share.index] = member
            world.members[share.index] = member
    now = 0
    for _ in range(rounds):
        # Usually one lease holder; sometimes two at once (a lease taken over while the
        # old holder still runs, or a lying node coordinating on its own).
        started = []
        pair = rng.random() < 0.4
        # Two at once usually face a split brain: each reaches one side, and only the
        # Byzantine validators reach both.
        side = set(rng.sample(sorted(world.honest), len(world.honest) // 2))
        for k in range(2 if pair else 1):
            lying = liars and rng.random() < 0.3
            if lying:
                # Proposes what it did not compute, and mostly without looking at what
                # was signed.
                proposal: Outcome | None = rng.choice((Y, Z))
                query_first = rng.random() < 0.3
            else:
                # None: a coordinator that could not compute the outcome (inputs missing).
                # An honest one may skip the query when it is the first lease holder.
                proposal = rng.choice((X, X, X, None) if deterministic else (X, Y, Z, None))
                query_first = proposal is None or rng.random() < 0.6
            c = Coordinator(
                subnet=SUBNET,
                policy=POLICY,
                keys=group.keys,
                slot=SLOT,
                proposal=proposal,
                query_first=query_first,
                settings=SETTINGS,
            )
            if pair and rng.random() < 0.7:
                cut = (side if k else set(range(1, n + 1)) - side) - byzantine
            elif rng.random() < 0.5:
                cut = set(rng.sample(range(1, n + 1), rng.randrange(n)))
            else:
                cut = set()
            crash_at = rng.randrange(1, 40) if rng.random() < 0.4 else None
            world.runners.append(Runner(c, cut, crash_at, lying))
            started.append(world.runners[-1])
            world.take(len(world.runners) - 1, c.start(now))
        for step in range(3_000):
            for runner in started:
                runner.alive = runner.alive and step != runner.crash_at
            running = [r for r in started if r.running]
            if not running:
                break
            if world.in_flight and rng.random() < 0.9:
                item = world.in_flight.pop(rng.randrange(len(world.in_flight)))
                if rng.random() < loss:
                    continue
                if rng.random() < dup:
                    world.in_flight.append(item)
                world.step(item, now)
            else:
                runner = min(running, key=lambda r: r.coordinator.next_timer_ms or 0)
                now = max(now, runner.coordinator.next_timer_ms or 0)
                world.take(world.runners.index(runner), runner.coordinator.on_timer(now))
        now += 5_000  # leases lapse before the next coordinator starts
    return world


def check_safety(world: World) -> None:
    keys = world.group.keys
    for cert in world.certificates:
        assert verify_certificate(cert, keys, SUBNET, SLOT)
    decisions = {cert.decision for cert in world.certificates}
    assert len(decisions) <= 1, f"two decisions certified: {decisions}"
    assert len({cert.sig for cert in world.certificates}) <= 1  # BLS: one signature each
    for member in world.honest.values():
        assert len({lock.signed for lock in member.journal}) <= 1
    if world.deterministic:
        # A lying coordinator's outcome is never committed: no honest validator signs it.
        assert decisions <= {Decision.commit(X), Decision.abort()}, decisions
        if not world.lied:
            # Honest coordinators never hold the proof against X: nobody honest aborts.
            assert all(
                lock.decision == Decision.commit(X)
                for member in world.honest.values()
                for lock in member.journal
            )


def final_round(world: World) -> list[CoordinatorAction]:
    """A clean round: no loss, every honest validator reachable, the Byzantine silent."""
    world.in_flight.clear()
    c = Coordinator(
        subnet=SUBNET,
        policy=POLICY,
        keys=world.group.keys,
        slot=SLOT,
        proposal=X,
        query_first=True,
        settings=SETTINGS,
    )
    log = run_round(c, world.honest, now_ms=10**9)
    world.take(-1, tuple(a for a in log if not isinstance(a, Send)))
    return log


def check_decides(world: World, log: list[CoordinatorAction]) -> None:
    """The final clean round decided, and recovered any earlier certificate exactly."""
    (result,) = [a for a in log if isinstance(a, Decided)]
    assert world.certificates[-1] == result.certificate
    assert world.certificates[0] == result.certificate  # recovered, byte-identical
    if world.deterministic and not world.lied:
        assert result.decision == Decision.commit(X)


@settings(max_examples=100, deadline=None)
@given(
    config=st.sampled_from(CONFIGS),
    seed=st.integers(0, 2**32 - 1),
    loss=st.sampled_from((0.0, 0.1, 0.3)),
    dup=st.sampled_from((0.0, 0.2)),
    rounds=st.integers(1, 4),
    deterministic=st.booleans(),
    liars=st.booleans(),
)
def test_no_two_decisions_of_a_slot_are_both_certified(
    config: tuple[int, int, int],
    seed: int,
    loss: float,
    dup: float,
    rounds: int,
    deterministic: bool,
    liars: bool,
) -> None:
    world = simulate(config, seed, loss, dup, rounds, deterministic, liars)
    check_safety(world)
    log = final_round(world)
    check_safety(world)
    if deterministic and not world.lied:
        check_decides(world, log)


@settings(max_examples=100, deadline=None)
@given(
    config=st.sampled_from(CONFIGS),
    seed=st.integers(0, 2**32 - 1),
    loss=st.sampled_from((0.0, 0.1, 0.3, 0.5)),
    dup=st.sampled_from((0.0, 0.2)),
    rounds=st.integers(1, 5),
)
def test_a_deterministic_step_always_decides_once_reachable(
    config: tuple[int, int, int], seed: int, loss: float, dup: float, rounds: int
) -> None:
    """Honest coordinators, a deterministic step, f < n/3 Byzantine validators (or none):
    whatever the schedule did, no honest lock is an abort, so a clean round commits X."""
    world = simulate(config, seed, loss, dup, rounds, deterministic=True, liars=False)
    check_safety(world)
    log = final_round(world)
    check_safety(world)
    check_decides(world, log)
