"""Priority lanes and re-announcement backoff.

Lanes scale Δ, the wait between consecutive ranks' turns (`decide`): an urgent flow's
step fails over to the next rank sooner. Δ should stay above the gossip delay (claims
must arrive before the next turn), so the high lane keeps a floor of `MIN_DELTA_MS`.

  high:   Δ = base / 4 (at least MIN_DELTA_MS)
  normal: Δ = base
  low:    Δ = base * 4

Unclaimed work is re-announced (heads, submission) with exponential backoff:
`min(cap, base · 2^round)`, scaled by a deterministic jitter factor uniform in
[0.8, 1.2] (parts per million, drawn from sha256(domain ‖ seed ‖ u64-be(round))), then
clamped to the cap. Seeding with the slot and the node id spreads nodes apart without
randomness.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal

Priority = Literal["high", "normal", "low"]
PRIORITIES: Final[tuple[Priority, ...]] = ("high", "normal", "low")
MIN_DELTA_MS: Final = 50
REANNOUNCE_DOMAIN: Final = b"qflow/reannounce/v1\x00"
JITTER_PPM: Final = 200_000  # ±20 %, in parts per million

_SCALE: Final[dict[Priority, tuple[int, int]]] = {
    "high": (1, 4),
    "normal": (1, 1),
    "low": (4, 1),
}


def delta_for(priority: Priority, base_delta_ms: int) -> int:
    """Δ for a lane, from the base (normal) Δ."""
    if priority not in _SCALE:
        raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
    if base_delta_ms < 0:
        raise ValueError("base_delta_ms must not be negative")
    num, den = _SCALE[priority]
    delta = base_delta_ms * num // den
    return max(delta, min(MIN_DELTA_MS, base_delta_ms)) if priority == "high" else delta


def reannounce_delay_ms(
    round: int, seed: bytes, *, base_ms: int = 500, cap_ms: int = 30_000
) -> int:
    """Wait before re-announce number `round` (0, 1, …): backoff with ±20 % jitter, ≤ cap."""
    if not 0 <= round < 2**64:
        raise ValueError("round must be 0..2^64-1")
    if base_ms < 0 or cap_ms < 0:
        raise ValueError("base_ms and cap_ms must not be negative")
    raw = min(cap_ms, base_ms << min(round, 64))  # the shift is bounded: no huge ints
    digest = hashlib.sha256(REANNOUNCE_DOMAIN + seed + round.to_bytes(8, "big")).digest()
    offset = int.from_bytes(digest[:8], "big") % (2 * JITTER_PPM + 1) - JITTER_PPM
    return min(cap_ms, raw * (1_000_000 + offset) // 1_000_000)
