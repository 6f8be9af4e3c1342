"""The simulator in CI: the whole CI seed set (`CI_SEEDS`, 210 runs of 3, 5 and 10 nodes
under gentle, moderate and hostile faults; about 2 minutes on two cores) must keep every
invariant, but for the seeds of a bug still open (`KNOWN_OPEN` in `qflow_node/sim/runner.py`;
docs/testing.md, "Open").

A known seed is held to its violation: if it passes, or fails another way, the test
fails, so a fix (or a new bug) is noticed and the entry goes."""

from __future__ import annotations

import pytest

from qflow_node.sim.runner import CI_SEEDS, KNOWN_OPEN, as_known, sweep


@pytest.mark.slow
def test_the_ci_seeds_keep_every_invariant() -> None:
    summary = sweep(CI_SEEDS, jobs=2)
    print("\n".join(summary.lines()))
    assert summary.runs == len(CI_SEEDS)
    assert as_known(summary), "\n".join(summary.lines())
    assert {r.config.seed for r in summary.failed} == set(KNOWN_OPEN)
    assert summary.flows_ended == summary.flows > len(CI_SEEDS) * 4
    # The faults did happen: a set that injects nothing proves nothing.
    for kind in ("crash", "partition", "slow", "forge", "replay", "kill_launcher"):
        assert summary.faults[kind] > 100, kind
