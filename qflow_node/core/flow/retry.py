"""Retry delays: the backoff schedule of a step's `retry`, with deterministic jitter.

Every replica must compute the same delay for the same failed attempt, so the jitter
is not random: it is a hash of (execution, step, attempt), uniform in [0, jitter_ms].
"""

from __future__ import annotations

import hashlib

from qflow_node.core.flow.ir import RetryIR
from qflow_node.core.flow.values import MAX_DURATION_MS


def retry_delay_ms(retry: RetryIR, *, exec_id: str, step: str, attempt: int) -> int:
    """How long to wait after attempt `attempt` (1-based) failed, before the next one.

    fixed: delay; linear: delay * attempt; exponential: delay * 2^(attempt-1); capped at
    max_delay (and at 366 days), then plus the jitter.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be ≥ 1, got {attempt}")
    delay = retry["delay_ms"]
    if retry["backoff"] == "linear":
        delay *= attempt
    elif retry["backoff"] == "exponential":
        delay <<= min(attempt - 1, 64)  # bounded: the cap applies right after
    cap = retry["max_delay_ms"]
    delay = min(delay, MAX_DURATION_MS if cap is None else cap)
    return delay + jitter_ms(retry["jitter_ms"], exec_id=exec_id, step=step, attempt=attempt)


def jitter_ms(bound: int, *, exec_id: str, step: str, attempt: int) -> int:
    """A number in [0, bound] fixed by (exec, step, attempt)."""
    if bound <= 0:
        return 0
    seed = f"qflow-retry-jitter\x00{exec_id}\x00{step}\x00{attempt}".encode()
    return int.from_bytes(hashlib.sha256(seed).digest()[:8], "big") % (bound + 1)
