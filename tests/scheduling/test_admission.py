"""The work-token bucket: starts full, refills exactly, declines when empty."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qflow_node.core.scheduling import TokenBucket


def test_starts_full_and_declines_when_empty() -> None:
    bucket = TokenBucket(3, refill_per_s=1.0)
    assert bucket.available(0) == 3
    assert [bucket.take(0) for _ in range(4)] == [True, True, True, False]
    assert bucket.available(0) == 0


def test_refills_over_time_up_to_capacity() -> None:
    bucket = TokenBucket(2, refill_per_s=2.0)
    assert bucket.take(0) and bucket.take(0)
    assert bucket.available(499) == 0
    assert bucket.available(500) == 1
    assert bucket.available(60_000) == 2  # capped
    assert bucket.take(500)
    assert not bucket.take(999)
    assert bucket.take(1_000)


def test_available_changes_nothing() -> None:
    bucket = TokenBucket(1, refill_per_s=1.0)
    assert bucket.take(0)
    for now in (100, 5_000, 200):
        bucket.available(now)
    assert bucket.available(999) == 0
    assert bucket.available(1_000) == 1


def test_decimal_rates_are_exact() -> None:
    # 0.6/s for 5 s is exactly 3 tokens (the float 0.6 is slightly less than 3/5).
    bucket = TokenBucket(10, refill_per_s=0.6)
    for _ in range(10):
        assert bucket.take(0)
    assert bucket.available(5_000) == 3


def test_a_clock_stepping_back_refills_nothing() -> None:
    bucket = TokenBucket(1, refill_per_s=1.0)
    assert bucket.take(10_000)
    assert not bucket.take(5_000)
    assert bucket.available(10_999) == 0
    assert bucket.take(11_000)


def test_refund_gives_a_token_back_up_to_capacity() -> None:
    bucket = TokenBucket(1, refill_per_s=0.0)
    assert bucket.take(0)
    bucket.refund(10)
    assert bucket.available(10) == 1
    bucket.refund(20)
    assert bucket.available(20) == 1


def test_zero_capacity_always_declines() -> None:
    bucket = TokenBucket(0, refill_per_s=100.0)
    assert not bucket.take(0)
    assert not bucket.take(1_000_000)


@pytest.mark.parametrize(("capacity", "rate"), [(-1, 1.0), (1, -0.5), (1, math.inf), (1, math.nan)])
def test_invalid_parameters(capacity: int, rate: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(capacity, rate)


@given(
    st.integers(0, 20),
    st.sampled_from([0.0, 0.5, 1.0, 2.5, 10.0]),
    st.lists(st.integers(0, 100_000), max_size=50),
)
def test_never_grants_more_than_capacity_plus_refill(
    capacity: int, rate: float, times: list[int]
) -> None:
    bucket = TokenBucket(capacity, rate)
    times = sorted(times)
    granted = sum(bucket.take(t) for t in times)
    span = (times[-1] - times[0]) if times else 0
    assert granted <= capacity + math.floor(rate * span / 1000) + 1
    assert 0 <= bucket.available(times[-1] if times else 0) <= capacity
