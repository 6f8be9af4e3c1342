"""The partition scenario (chaos/partition.py) as a CI test: a 4-node cluster split in
two halves that keep working, then healed; every flow completes and every node ends
with the same verified heads."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.partition import run

pytestmark = pytest.mark.slow


def test_both_halves_progress_and_every_replica_converges_after_the_heal(
    tmp_path: Path,
) -> None:
    outcome = run(tmp_path, nodes=4)
    print(outcome.summary())
    assert len(outcome.checks) == 3
    assert outcome.ok, outcome.summary()
