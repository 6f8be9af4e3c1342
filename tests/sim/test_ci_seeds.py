"""The CI seed set (qflow_node/sim/runner.py: CI_SEEDS): 210 seeded runs of 3 to 10
virtual nodes under gentle, moderate and hostile faults must keep every invariant."""

from __future__ import annotations

import pytest

from qflow_node.sim.runner import CI_SEEDS, sweep


@pytest.mark.slow
def test_the_ci_seed_set_keeps_every_invariant() -> None:
    summary = sweep(CI_SEEDS, jobs=2)
    print("\n".join(summary.lines()))
    assert summary.runs == len(CI_SEEDS)
    assert not summary.failed, "\n".join(summary.lines())
    assert summary.flows_ended == summary.flows > len(CI_SEEDS) * 4
    # The faults did happen: a set that injects nothing proves nothing.
    for kind in ("crash", "partition", "slow", "forge", "replay", "kill_launcher"):
        assert summary.faults[kind] > 0, kind
