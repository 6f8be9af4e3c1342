"""The simulator in CI: seeded runs of 10 virtual nodes under hostile and moderate
faults must keep every invariant.

For now CI runs 23 seeds of the set (`CI_SEEDS`, 210 runs, is `make sim`): the whole set
took well over its 3-minute budget on this machine (docs/testing.md, "Status")."""

from __future__ import annotations

import pytest

from qflow_node.sim.runner import CI_SEEDS, seed_set, sweep

IN_CI = [*CI_SEEDS[:20], *seed_set(1001, 3, 10, "moderate")]


@pytest.mark.slow
def test_the_ci_seeds_keep_every_invariant() -> None:
    summary = sweep(IN_CI, jobs=2)
    print("\n".join(summary.lines()))
    assert summary.runs == len(IN_CI)
    assert not summary.failed, "\n".join(summary.lines())
    assert summary.flows_ended == summary.flows > len(IN_CI) * 4
    # The faults did happen: a set that injects nothing proves nothing.
    for kind in ("crash", "partition", "slow", "forge", "replay", "kill_launcher"):
        assert summary.faults[kind] > 0, kind
