"""The launcher-kill chaos scenario (chaos/kill_launcher.py) as a CI test: real node
processes on loopback, the launcher `kill -9`ed mid-flow, the flow completing on the
others with verified ledgers, every step completed exactly once, converged heads."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.kill_launcher import STEPS, run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("nodes", [3, 5])
def test_the_flow_survives_the_death_of_its_launcher(tmp_path: Path, nodes: int) -> None:
    outcome = run(tmp_path, nodes=nodes)
    print(outcome.summary())  # shown with -s, and on failure
    assert len(outcome.checks) == nodes - 1  # every survivor was checked
    for name, check in outcome.checks.items():
        assert check.verified, name
        assert check.status == "completed", name
        assert check.completions == dict.fromkeys(STEPS, 1), name
    assert len({check.heads for check in outcome.checks.values()}) == 1
    assert outcome.ok
