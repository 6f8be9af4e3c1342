"""Instants as whole seconds since the Unix epoch, and their RFC 3339 spelling.

Core may not import `datetime` (docs/adr/0001), yet callers pass aware datetimes: they
are accepted structurally (anything with `utcoffset()` and `timestamp()`). Biscuit dates
are whole seconds, written `2026-12-31T00:00:00Z` in Datalog; the civil-date arithmetic
below is Howard Hinnant's days_from_civil / civil_from_days.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

from qflow_node.core.capability.errors import GrantError

# 9999-12-31T23:59:59Z: the last instant a Biscuit date literal can spell.
MAX_SECONDS: Final = 253_402_300_799

_RFC3339: Final = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")


class AwareDateTime(Protocol):
    """What is used of a `datetime.datetime`: it must be timezone-aware."""

    @property
    def microsecond(self) -> int: ...

    def utcoffset(self) -> object: ...

    def timestamp(self) -> float: ...


Instant = int | AwareDateTime


def to_seconds(value: Instant, what: str = "time") -> int:
    """Whole seconds since the epoch (floored); refuses naive datetimes and out-of-range."""
    if isinstance(value, bool):
        raise GrantError(f"{what} must be an int or an aware datetime, got bool")
    if isinstance(value, int):
        seconds = value
    elif hasattr(value, "utcoffset") and hasattr(value, "timestamp"):
        # A naive datetime's timestamp() would read the machine's timezone.
        if value.utcoffset() is None:
            raise GrantError(f"{what} must be timezone-aware (a naive datetime is ambiguous)")
        # timestamp() is a float: at 1e10 s its step is ~2e-6 s, so 23:59:59.999999 can
        # round up to the next second. Drop the microseconds first, then round exactly.
        seconds = round(value.timestamp() - value.microsecond / 1_000_000)
    else:
        raise GrantError(f"{what} must be an int or an aware datetime, got {type(value).__name__}")
    if not 0 <= seconds <= MAX_SECONDS:
        raise GrantError(f"{what} {seconds} is outside 1970-01-01 .. 9999-12-31 (UTC)")
    return seconds


def _days_from_civil(year: int, month: int, day: int) -> int:
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719_468
    era = days // 146_097
    doe = days - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (month <= 2), month, day


def format_rfc3339(seconds: int) -> str:
    """`2026-12-31T00:00:00Z`, the form Biscuit prints and parses."""
    if not 0 <= seconds <= MAX_SECONDS:
        raise GrantError(f"time {seconds} is outside 1970-01-01 .. 9999-12-31 (UTC)")
    days, rest = divmod(seconds, 86_400)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


def parse_rfc3339(text: str) -> int:
    """Seconds of a UTC `YYYY-MM-DDTHH:MM:SSZ`; raises GrantError for anything else."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise GrantError(f"{text!r} is not a UTC time of the form YYYY-MM-DDTHH:MM:SSZ")
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    days = _days_from_civil(year, month, day)
    # Round-trip the date so 2026-02-30 is refused rather than read as March 2.
    if not (1 <= month <= 12 and _civil_from_days(days) == (year, month, day)):
        raise GrantError(f"{text!r} is not a valid date")
    if hour > 23 or minute > 59 or second > 59:
        raise GrantError(f"{text!r} is not a valid time of day")
    seconds = days * 86_400 + hour * 3600 + minute * 60 + second
    if not 0 <= seconds <= MAX_SECONDS:
        raise GrantError(f"{text!r} is before 1970-01-01")
    return seconds
