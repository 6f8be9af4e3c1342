"""One seed, one run: the same seed replays the same run event for event, whatever the
process (hash randomization included), and different seeds make different runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from qflow_node.sim.world import RunConfig, run

CONFIG = RunConfig(seed=5, nodes=5, profile="hostile")


def _digest_in_subprocess(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    args = ["--seed", str(CONFIG.seed), "--nodes", str(CONFIG.nodes), "--faults", CONFIG.profile]
    done = subprocess.run(
        [sys.executable, "-m", "qflow_node.sim", "run", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"trace ([0-9a-f]{16})", done.stdout)
    assert found is not None, done.stdout
    return found.group(1)


def test_a_seed_replays_exactly_across_processes_and_hash_seeds() -> None:
    here = run(CONFIG)
    assert here.ok, [str(v) for v in here.violations]
    assert here.faults["crash"] + here.faults["partition"] > 0  # a run with things going on
    assert _digest_in_subprocess("1") == here.digest
    assert _digest_in_subprocess("4242") == here.digest


def test_another_seed_makes_another_run() -> None:
    assert run(RunConfig(6, 3, "moderate")).digest != run(RunConfig(7, 3, "moderate")).digest
