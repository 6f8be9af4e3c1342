"""Blocking calls (file I/O, signing batches, wasm runs) off the event loop.

`run_sync` is `trio.to_thread.run_sync`, except in a context made with `inline()`: the
deterministic simulator runs everything on its one thread, since a worker thread's
timing is real time and would make a run unrepeatable (and, under trio's autojumping
virtual clock, let virtual time pass while the thread works).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar, TypeVarTuple

import trio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_inline: ContextVar[bool] = ContextVar("qflow_offload_inline", default=False)


async def run_sync(fn: Callable[[*Ts], T], *args: *Ts) -> T:
    if _inline.get():
        await trio.lowlevel.checkpoint()  # still a point where other tasks run
        return fn(*args)
    return await trio.to_thread.run_sync(fn, *args)


@contextmanager
def inline() -> Iterator[None]:
    """Run offloaded calls on the calling thread in this context."""
    token = _inline.set(True)
    try:
        yield
    finally:
        _inline.reset(token)
