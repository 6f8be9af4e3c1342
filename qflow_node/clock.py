"""The node's wall clock, replaceable per task tree.

Everything in the node that reads the time of day (record timestamps, heads change
times, heartbeats, sequence bases, token expiry) reads it here, so the deterministic
simulator (`qflow_node.sim`) can give each virtual node its own virtual clock: a source
set with `wall_clock_from` holds for the calling task and every task it starts later
(trio copies context variables into new tasks). Monotonic time is trio's clock
(`mono_ms`), which the simulator makes virtual with its own trio clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import trio

WallSource = Callable[[], int]
"""Nanoseconds since the Unix epoch, like `time.time_ns`."""

_source: ContextVar[WallSource | None] = ContextVar("qflow_wall_source", default=None)


def wall_ns() -> int:
    source = _source.get()
    return time.time_ns() if source is None else source()


def wall_ms() -> int:
    return wall_ns() // 1_000_000


def wall_s() -> float:
    return wall_ns() / 1e9


def mono_ms() -> int:
    """trio's clock in whole milliseconds, rounded. A wait until `ms / 1000` must end at a
    time that reads as `ms` again: truncating read 16.211 s as 16210.999... → 16210 ms,
    and a loop waiting for 16211 ms woke at once, forever (found by the simulator, whose
    clock stops exactly on the deadline; a real clock just spun until the next ms)."""
    return round(trio.current_time() * 1000)


@contextmanager
def wall_clock_from(source: WallSource) -> Iterator[None]:
    """Read the time of day from `source` in this context (and tasks started from it)."""
    token = _source.set(source)
    try:
        yield
    finally:
        _source.reset(token)
