"""Retry delays: the three schedules, the cap and the deterministic jitter."""

from __future__ import annotations

from typing import Literal

import pytest

from qflow_node.core.flow import RetryIR, jitter_ms, retry_delay_ms

Backoff = Literal["fixed", "linear", "exponential"]


def policy(
    backoff: Backoff, *, delay: int = 1000, cap: int | None = None, jitter: int = 0
) -> RetryIR:
    return {
        "max_attempts": 10,
        "backoff": backoff,
        "delay_ms": delay,
        "max_delay_ms": cap,
        "jitter_ms": jitter,
    }


@pytest.mark.parametrize(
    ("backoff", "delays"),
    [
        ("fixed", [1000, 1000, 1000, 1000, 1000]),
        ("linear", [1000, 2000, 3000, 4000, 5000]),
        ("exponential", [1000, 2000, 4000, 8000, 10_000]),
    ],
)
def test_schedules_with_a_cap(backoff: Backoff, delays: list[int]) -> None:
    retry = policy(backoff, cap=10_000)
    assert [retry_delay_ms(retry, exec_id="e", step="s", attempt=n) for n in range(1, 6)] == delays


def test_uncapped_exponential_stops_at_the_longest_duration() -> None:
    assert (
        retry_delay_ms(policy("exponential"), exec_id="e", step="s", attempt=99) == 366 * 86_400_000
    )


def test_jitter_is_deterministic_bounded_and_spread() -> None:
    values = [jitter_ms(500, exec_id="bafyexec", step="charge", attempt=n) for n in range(1, 201)]
    assert values == [
        jitter_ms(500, exec_id="bafyexec", step="charge", attempt=n) for n in range(1, 201)
    ]
    assert all(0 <= v <= 500 for v in values)
    assert len(set(values)) > 150
    assert jitter_ms(500, exec_id="other", step="charge", attempt=1) != values[0]
    assert jitter_ms(0, exec_id="e", step="s", attempt=1) == 0
    assert (
        jitter_ms(500, exec_id="e", step="s", attempt=3) == 47
    )  # sha256("qflow-retry-jitter\0e\0s\03")[:8] mod 501
    retry = policy("fixed", jitter=500)
    assert retry_delay_ms(retry, exec_id="e", step="s", attempt=3) == 1047


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="attempt must be ≥ 1"):
        retry_delay_ms(policy("fixed"), exec_id="e", step="s", attempt=0)
