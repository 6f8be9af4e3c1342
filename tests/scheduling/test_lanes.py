"""Priority lanes and deterministic re-announce backoff."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qflow_node.core.scheduling import MIN_DELTA_MS, PRIORITIES, delta_for, reannounce_delay_ms


def test_lanes_scale_delta() -> None:
    assert PRIORITIES == ("high", "normal", "low")
    assert [delta_for(p, 1_000) for p in PRIORITIES] == [250, 1_000, 4_000]
    assert delta_for("high", 100) == MIN_DELTA_MS  # floor: stay above gossip delay
    assert delta_for("high", 20) == 20  # never slower than the normal lane
    assert delta_for("normal", 0) == 0


def test_lanes_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="priority"):
        delta_for("urgent", 1_000)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="base_delta_ms"):
        delta_for("normal", -1)


@given(st.integers(0, 100_000))
def test_lanes_are_ordered(base: int) -> None:
    assert delta_for("high", base) <= delta_for("normal", base) <= delta_for("low", base)


def test_reannounce_delay_is_the_documented_formula() -> None:
    seed = b"slot-and-node"
    digest = hashlib.sha256(b"qflow/reannounce/v1\x00" + seed + (3).to_bytes(8, "big")).digest()
    offset = int.from_bytes(digest[:8], "big") % 400_001 - 200_000
    assert reannounce_delay_ms(3, seed) == 4_000 * (1_000_000 + offset) // 1_000_000


@given(st.integers(0, 200), st.binary(max_size=40))
def test_reannounce_delay_backs_off_within_jitter_and_cap(round: int, seed: bytes) -> None:
    raw = min(30_000, 500 * 2**round)
    delay = reannounce_delay_ms(round, seed)
    assert delay == reannounce_delay_ms(round, seed)  # deterministic
    assert raw * 0.8 - 1 <= delay <= min(30_000, raw * 1.2)


def test_reannounce_jitter_spreads_nodes_apart() -> None:
    delays = {reannounce_delay_ms(2, b"node-%d" % i) for i in range(100)}
    assert len(delays) > 90
    assert min(delays) < 1_800 < 2_200 < max(delays)  # both sides of 2000


def test_reannounce_custom_base_and_cap() -> None:
    assert reannounce_delay_ms(0, b"s", base_ms=0) == 0
    assert reannounce_delay_ms(10**6, b"s", base_ms=100, cap_ms=1_000) <= 1_000
    with pytest.raises(ValueError, match="round"):
        reannounce_delay_ms(-1, b"s")
    with pytest.raises(ValueError, match="base_ms"):
        reannounce_delay_ms(0, b"s", cap_ms=-1)
