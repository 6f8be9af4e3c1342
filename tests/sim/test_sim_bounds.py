"""The simulator's own correctness: a run always ends, in virtual time, with a verdict, and
its checks blame the node only for what the node did."""

from __future__ import annotations

import pytest
import trio

from qflow_node.sim import world
from qflow_node.sim.world import RunConfig, run


def test_a_wait_that_never_ends_is_a_progress_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never(_self: world.World) -> None:
        await trio.sleep_forever()

    monkeypatch.setattr(world.World, "_heal", never)
    result = run(RunConfig(seed=1, nodes=3, profile="gentle"))
    assert [v.invariant for v in result.violations] == ["progress"]
    assert "did not end by its deadline" in result.violations[0].detail


def test_a_restart_and_the_heal_at_one_instant_do_not_hang_the_world() -> None:
    """Regression: a crash ending at `quiet_at` restarts its node at the instant the heal
    runs; the heal saw the booting node as down and waited for it to stop, forever (the
    world ran on in virtual time; this is what made the CI seed set overrun)."""
    result = run(RunConfig(seed=10, nodes=10, profile="hostile"))
    assert result.ok, "\n".join(str(v) for v in result.violations)


def test_a_flow_that_ended_on_a_node_killed_later_counts_as_ended() -> None:
    """Regression (soak seed 50051): a flow ended on n2, which was then killed as the
    launcher of another flow; the killed-launcher check looked only at live nodes and
    reported the first flow as stalled. What a node saw end is noted when it crashes."""
    result = run(RunConfig(seed=50051, nodes=3, profile="hostile"))
    assert result.ok, "\n".join(str(v) for v in result.violations)


@pytest.mark.parametrize("seed", [80022, 80049])
def test_a_flow_no_survivor_ever_held_is_not_held_against_the_survivors(seed: int) -> None:
    """Regression (soak seeds 80022, 80049): the launcher wrote the start record, the one
    other node that got it was then killed as the launcher of another flow, and the only
    node left up never had it. Held down, the two killed launchers took every record of
    the flow with them, so no survivor could know of it; the killed-launcher check now
    holds the survivors only to the flows one of them held (the final check still holds
    the flow to ending everywhere)."""
    world_result = run(RunConfig(seed=seed, nodes=3, profile="hostile"))
    assert world_result.ok, "\n".join(str(v) for v in world_result.violations)
