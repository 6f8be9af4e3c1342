"""Admission: a node claims only while it has a free work token.

A token bucket per node: `capacity` tokens, refilled continuously at `refill_per_s`.
A node takes one token per claim; with none free it declines (does not claim), so the
next rank's turn comes Δ later and the work moves to a node with capacity. The free
count is what heartbeats advertise as `free_work_tokens`.

Deterministic: time is an argument and the arithmetic is exact (fractions), so the same
calls give the same answers on every machine. A clock that steps back refills nothing.
"""

from __future__ import annotations

import math
from fractions import Fraction


class TokenBucket:
    """Starts full; `take` spends a token if one is free at `now_ms`."""

    def __init__(self, capacity: int, refill_per_s: float) -> None:
        if capacity < 0:
            raise ValueError("capacity must not be negative")
        if not (math.isfinite(refill_per_s) and refill_per_s >= 0):
            raise ValueError("refill_per_s must be a finite number >= 0")
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        # The decimal the caller wrote (0.6 is 3/5, not the float just below it), so a
        # rate of 0.6/s yields exactly 3 tokens in 5 s.
        self._per_ms = Fraction(repr(refill_per_s)) / 1000
        self._tokens = Fraction(capacity)
        self._at_ms: int | None = None  # when `_tokens` was last brought up to date

    def _level(self, now_ms: int) -> Fraction:
        if self._at_ms is None or now_ms <= self._at_ms:
            return self._tokens
        return min(Fraction(self.capacity), self._tokens + (now_ms - self._at_ms) * self._per_ms)

    def _settle(self, now_ms: int) -> None:
        self._tokens = self._level(now_ms)
        self._at_ms = now_ms if self._at_ms is None else max(self._at_ms, now_ms)

    def available(self, now_ms: int) -> int:
        """Whole tokens free at `now_ms` (changes nothing)."""
        return math.floor(self._level(now_ms))

    def take(self, now_ms: int) -> bool:
        """Spend one token; False (and nothing spent) if none is free: decline."""
        self._settle(now_ms)
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def refund(self, now_ms: int) -> None:
        """Give a token back, e.g. for a claim that lost a conflict before running."""
        self._settle(now_ms)
        self._tokens = min(Fraction(self.capacity), self._tokens + 1)
