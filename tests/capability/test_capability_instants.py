"""Seconds <-> RFC 3339 without `datetime` in core, checked against `datetime`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qflow_node.core.capability import GrantError, format_rfc3339, parse_rfc3339, to_seconds
from qflow_node.core.capability.instants import MAX_SECONDS

seconds = st.integers(min_value=0, max_value=MAX_SECONDS)


@given(seconds)
def test_format_matches_datetime_and_parses_back(value: int) -> None:
    text = format_rfc3339(value)
    assert text == datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert parse_rfc3339(text) == value


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)))
def test_aware_datetimes_floor_to_their_second(moment: datetime) -> None:
    for tz in (UTC, timezone(timedelta(hours=-7, minutes=-30))):
        aware = moment.replace(tzinfo=tz)
        exact = (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1)
        assert to_seconds(aware) == exact == to_seconds(aware.replace(microsecond=0))


def test_edges() -> None:
    assert format_rfc3339(0) == "1970-01-01T00:00:00Z"
    assert format_rfc3339(MAX_SECONDS) == "9999-12-31T23:59:59Z"
    assert parse_rfc3339("2024-02-29T12:00:00Z") == 1_709_208_000
    assert to_seconds(1_709_208_000) == 1_709_208_000


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-00-10T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:60:00Z",
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00+00:00",
        "2026-01-01 00:00:00Z",
        "\uff12\uff10\uff12\uff16-01-01T00:00:00Z",  # fullwidth digits match \\d
    ],
)
def test_parse_refuses_anything_but_a_valid_utc_second(text: str) -> None:
    with pytest.raises(GrantError):
        parse_rfc3339(text)


@pytest.mark.parametrize(
    "value",
    [-1, MAX_SECONDS + 1, True, 1.5, "2026", datetime(2026, 1, 1)],
)
def test_to_seconds_refuses_bad_instants(value: object) -> None:
    with pytest.raises(GrantError):
        to_seconds(value)  # type: ignore[arg-type]
