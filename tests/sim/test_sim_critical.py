"""Validators in the simulator (`qflow_node/sim/critical.py`): every world deals a subnet
policy from its seed, with no more Byzantine validators than the policy tolerates, and a
run with each Byzantine behaviour keeps every invariant, `one_certificate` included."""

from __future__ import annotations

import random

import pytest

from qflow_node.core.policy import Tolerance
from qflow_node.identity import SigningKey
from qflow_node.sim import critical, world
from qflow_node.sim.critical import BEHAVIOURS, deal, sizes
from qflow_node.sim.workload import KINDS, modules
from qflow_node.sim.world import RunConfig, run

PEERS = [SigningKey(bytes([i + 1]) * 32).peer_id for i in range(10)]


@pytest.mark.parametrize("nodes", [1, 2, 3, 4, 5, 7, 10, 30, 100])
def test_validator_sets_are_safe_and_live_with_their_byzantine_share(nodes: int) -> None:
    n, t = sizes(nodes)
    assert n <= nodes
    tolerance = Tolerance(n, t)
    f = tolerance.byzantine
    # Two quorums overlap in 2t - n validators: more than f, so one of them is honest;
    # and n - f >= t: the honest ones alone make a quorum.
    assert f < 2 * t - n
    assert n - f >= t
    assert f == min(2, tolerance.best_byzantine)


def test_a_dealing_is_the_seeds_and_keeps_within_the_bound() -> None:
    def dealt(seed: int) -> critical.Dealing:
        rng = random.Random(seed)
        return deal(seed, "default", PEERS, modules=modules(), rng=rng, byzantine=(5, 5))

    first, again, other = dealt(7), dealt(7), dealt(8)
    assert first.policy.cid == again.policy.cid
    assert first.byzantine == again.byzantine
    assert first.policy.cid != other.policy.cid
    assert first.policy.size == 7 and first.policy.threshold == 5
    assert set(first.shares) == {v.peer for v in first.policy.validators}
    assert set(first.policy.members) == set(PEERS)
    assert len(first.byzantine) == 2  # five asked for, two tolerated
    assert set(first.byzantine) <= set(first.shares)
    assert all(first.policy.allows_module(m) for m in modules())


@pytest.mark.slow
@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_a_byzantine_validator_within_the_bound_breaks_nothing(
    monkeypatch: pytest.MonkeyPatch, behaviour: str
) -> None:
    """One Byzantine validator of four (3 of 4 tolerates one) behaving one way, and a
    workload of critical steps: every invariant holds, and it did misbehave."""
    monkeypatch.setattr(critical, "BEHAVIOURS", (behaviour,))
    kinds = tuple(k for k in KINDS if k.name in ("payment", "settle", "spin-chain"))
    monkeypatch.setattr(world, "KINDS", kinds)
    result = run(RunConfig(seed=4001, nodes=5, profile="hostile"))
    assert result.ok, "\n".join(str(v) for v in result.violations)
    assert result.critical["byzantine validators"] == 1
    assert result.critical["byzantine votes"] > 0
    assert result.critical["certificates"] > 0
    assert result.flows_ended == result.flows > 0
