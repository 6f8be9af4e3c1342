"""Fault profiles and the seeded schedule of faults of one run.

A profile says how bad the network is and how many of each fault to expect; the
schedule draws the exact times, nodes and durations from the run's seed. Faults last
until `quiet_at`; then the network is healed (links clean, partitions gone, slow nodes
back to speed) and every node that is down is restarted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final, Literal

from qflow_node.sim.network import LinkModel

FaultKind = Literal[
    "crash", "partition", "slow", "forge", "replay", "kill_launcher", "kill_coordinator"
]


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    links: LinkModel
    crashes: tuple[int, int]  # how many, at least and at most
    down_s: tuple[float, float]  # how long a crashed node stays down
    partitions: tuple[int, int]
    partition_s: tuple[float, float]
    slow_nodes: tuple[int, int]
    slow_extra_s: tuple[float, float]  # added to each message of a slow node
    forged_per_min: float  # tampered copies of real messages injected
    replayed_per_min: float  # old messages sent again
    launcher_kills: int  # flows whose launcher is killed right after it takes them
    coordinator_kills: int  # lease holders killed while they put a critical step to a round
    byzantine: tuple[int, int]  # Byzantine validators (at most what the policy tolerates)
    skew_ms: int  # each node's wall clock is off by up to this
    flows: tuple[int, int]
    quiet_at_s: float  # faults end here (virtual seconds after the start)
    settle_s: float  # then every flow must end and every node agree within this


PROFILES: Final = {
    "gentle": Profile(
        "gentle",
        LinkModel(loss=0.01),
        crashes=(0, 0),
        down_s=(1, 1),
        partitions=(0, 0),
        partition_s=(1, 1),
        slow_nodes=(0, 0),
        slow_extra_s=(0, 0),
        forged_per_min=0,
        replayed_per_min=0,
        launcher_kills=0,
        coordinator_kills=0,
        byzantine=(0, 0),
        skew_ms=50,
        flows=(4, 8),
        quiet_at_s=40,
        settle_s=150,
    ),
    "moderate": Profile(
        "moderate",
        LinkModel(loss=0.05, dup=0.02, tail_median_ms=3),
        crashes=(1, 3),
        down_s=(1, 15),
        partitions=(0, 1),
        partition_s=(3, 15),
        slow_nodes=(0, 1),
        slow_extra_s=(0.05, 0.3),
        forged_per_min=6,
        replayed_per_min=6,
        launcher_kills=1,
        coordinator_kills=2,
        byzantine=(0, 1),
        skew_ms=500,
        flows=(4, 8),
        quiet_at_s=60,
        settle_s=150,
    ),
    "hostile": Profile(
        "hostile",
        LinkModel(loss=0.2, dup=0.1, tail_median_ms=20, tail_sigma=2.0),
        crashes=(2, 6),
        down_s=(0.5, 25),
        partitions=(1, 3),
        partition_s=(2, 20),
        slow_nodes=(1, 2),
        slow_extra_s=(0.2, 2.0),
        forged_per_min=30,
        replayed_per_min=30,
        launcher_kills=2,
        coordinator_kills=3,
        byzantine=(1, 2),
        skew_ms=2000,
        flows=(5, 10),
        quiet_at_s=80,
        settle_s=150,
    ),
}

WARMUP_S: Final = 3.0  # nodes boot and hear each other before the first submission


@dataclass(frozen=True, slots=True)
class Fault:
    at: float
    kind: FaultKind
    node: int = -1  # index, for node faults
    until: float = 0.0  # end, for lasting faults
    groups: tuple[int, ...] = ()  # partition: group of each node
    extra_s: float = 0.0  # slow


def schedule(profile: Profile, nodes: int, rng: random.Random) -> list[Fault]:
    """The faults of one run (launcher kills are decided by the workload), by time."""
    start, quiet = WARMUP_S, profile.quiet_at_s
    faults: list[Fault] = []

    def count(bounds: tuple[int, int]) -> int:
        return rng.randint(*bounds)

    for _ in range(count(profile.crashes)):
        at = rng.uniform(start, quiet - 1)
        faults.append(
            Fault(
                at,
                "crash",
                rng.randrange(nodes),
                until=min(quiet, at + rng.uniform(*profile.down_s)),
            )
        )
    for _ in range(count(profile.partitions)):
        at = rng.uniform(start, quiet - 1)
        shape = rng.choice(("minority", "isolated", "halves"))
        order = list(range(nodes))
        rng.shuffle(order)
        cut = (
            1
            if shape == "isolated" or nodes < 3
            else (nodes // 2 if shape == "halves" else max(1, nodes // 3))
        )
        groups = [0] * nodes
        for index in order[:cut]:
            groups[index] = 1
        until = min(quiet, at + rng.uniform(*profile.partition_s))
        faults.append(Fault(at, "partition", until=until, groups=tuple(groups)))
    for _ in range(count(profile.slow_nodes)):
        at = rng.uniform(start, quiet - 1)
        faults.append(
            Fault(
                at,
                "slow",
                rng.randrange(nodes),
                until=min(quiet, at + rng.uniform(5, 30)),
                extra_s=rng.uniform(*profile.slow_extra_s),
            )
        )
    span_min = (quiet - start) / 60
    messages: tuple[tuple[FaultKind, float], ...] = (
        ("forge", profile.forged_per_min),
        ("replay", profile.replayed_per_min),
    )
    for kind, per_min in messages:
        for _ in range(round(per_min * span_min)):
            faults.append(Fault(rng.uniform(start, quiet), kind))
    faults.sort(key=lambda f: (f.at, f.kind, f.node))
    return faults
