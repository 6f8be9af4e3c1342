"""Seeds that exposed real bugs when the simulator first ran them (docs/testing.md,
"Bugs it found"). Seeds drift as the code changes, so each bug also has a scripted test
(docs/testing.md names them); these keep the original runs green."""

from __future__ import annotations

import pytest

from qflow_node.sim.world import RunConfig, run

FOUND = [
    # the scheduler's busy loop on a truncated millisecond (a livelock in virtual time),
    # then a node killed by a record announced twice in one `records` envelope
    RunConfig(seed=2, nodes=10, profile="moderate"),
    # records merged without their payload; a submission held without its inputs
    RunConfig(seed=3, nodes=10, profile="hostile"),
    # an accepted submission forgotten by a crash before its start record
    RunConfig(seed=3010, nodes=3, profile="hostile"),
    # survivors holding records of a flow they could not run (its launcher killed)
    RunConfig(seed=3036, nodes=3, profile="hostile"),
    # concurrent starts of a timer folded to the later one; a restarted node answering
    # "not done" for the slots of executions it had finished
    RunConfig(seed=3084, nodes=3, profile="hostile"),
    # an accepted execution forgotten by a restarted node that rewound its own
    # exec.started because the one peer answering (just restarted too) lacked it
    RunConfig(seed=3045, nodes=3, profile="hostile"),
    # a start record merged without the submission's flow and inputs (its launcher killed)
    RunConfig(seed=3012, nodes=3, profile="hostile"),
    # heads refused for a block a cut-off node could not fetch, taken for a forgery and
    # never caught up again (a walk that passed over blocks the exchange did not return)
    RunConfig(seed=3014, nodes=3, profile="hostile"),
    RunConfig(seed=3041, nodes=3, profile="hostile"),
]


@pytest.mark.parametrize("config", FOUND, ids=lambda c: f"seed{c.seed}-{c.profile}")
def test_a_seed_that_found_a_bug_keeps_every_invariant(config: RunConfig) -> None:
    result = run(config)
    assert result.ok, "\n".join(str(v) for v in result.violations)
    assert result.flows_ended == result.flows > 0
