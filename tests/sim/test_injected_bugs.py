"""The simulator catches protocol bugs: each test patches one into the node's real code
(in this process, so the runs are in-process too) and expects a violation within the
CI seed set, stopping at the first seed that shows it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qflow_node.codec import CID
from qflow_node.core import engine as eng
from qflow_node.core.engine.records import event_of
from qflow_node.core.scheduling import claims
from qflow_node.ledger_store import LedgerStore
from qflow_node.runtime import replica as replica_module
from qflow_node.runtime.replica import Replica
from qflow_node.sim import critical, world
from qflow_node.sim.runner import CI_SEEDS
from qflow_node.sim.workload import KINDS
from qflow_node.sim.world import RunConfig, RunResult, run


def first_violation(configs: list[RunConfig], limit: int) -> RunResult | None:
    for config in configs[:limit]:
        result = run(config)
        if not result.ok:
            return result
    return None


def hostile_small_first() -> list[RunConfig]:
    """The CI seeds, quickest to show a bug first (3 nodes, hostile)."""
    order = {"hostile": 0, "moderate": 1, "gentle": 2}
    return sorted(CI_SEEDS, key=lambda c: (c.nodes, order[c.profile], c.seed))


@pytest.fixture
def lease_never_expires(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(claims.Claim, "valid_at", lambda self, now_ms: True)
    yield


@pytest.mark.slow
@pytest.mark.usefixtures("lease_never_expires")
def test_a_claim_that_ignores_lease_expiry_is_caught() -> None:
    found = first_violation(hostile_small_first(), limit=len(CI_SEEDS))
    assert found is not None, "no seed of the CI set noticed leases that never expire"
    kinds = {v.invariant for v in found.violations}
    assert kinds & {"liveness", "killed_launcher"}, [str(v) for v in found.violations]


def _extend_without_parents(replica: Replica, ledger: LedgerStore, head: CID) -> bool:
    """The bug: apply the new head's record on the replica's state whether or not the
    records between (its parents) were applied."""
    record = ledger.record(head)
    applied = eng.apply(replica.state, event_of(head, record, ledger.store.get))
    if isinstance(applied, eng.Rejection):
        return False
    replica.state, replica.heads = applied, (head,)
    replica.records += 1
    return True


@pytest.mark.slow
def test_a_replica_that_applies_a_record_before_its_parents_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(replica_module, "_extend", _extend_without_parents)
    found = first_violation(hostile_small_first(), limit=len(CI_SEEDS))
    assert found is not None, "no seed of the CI set noticed records applied out of order"
    # A replica state the records do not say: seen as such (same_state), or by what
    # the node then does with it (a flow that stalls, a step run again).
    kinds = {v.invariant for v in found.violations}
    assert kinds & {"same_state", "one_result", "liveness", "killed_launcher"}, kinds


@pytest.mark.slow
def test_byzantine_validators_above_the_bound_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two equivocating validators of three (t = 2: two quorums overlap in one validator,
    so not even one Byzantine validator is tolerated), and a workload of critical steps:
    a slot ends up with certificates of two decisions, and `one_certificate` says so."""
    monkeypatch.setattr(critical, "tolerated", lambda n, t: n - 1)
    monkeypatch.setattr(critical, "BEHAVIOURS", ("equivocate",))
    kinds = tuple(k for k in KINDS if k.name in ("payment", "settle", "spin-chain"))
    monkeypatch.setattr(world, "KINDS", kinds)
    for seed in range(3001, 3031):
        result = run(RunConfig(seed, 3, "hostile"))
        if any(v.invariant == "one_certificate" for v in result.violations):
            break
    else:
        raise AssertionError("no seed noticed two certificates for one slot")
    assert result.critical["byzantine validators"] == 2
