"""Group what many tasks ask for into one operation: `Batcher`.

Under load, a node has many slots at the same stage at once - claims to publish,
records to sign and store, questions for the same peer, records to announce. Each of
those costs mostly per operation (a gossip message, a yamux frame, a worker-thread
trip, an fsync), so several slots share one (docs/design/simulator-plan.md, section 9).

A batch forms only from what is already waiting: the first item is flushed as soon as
the batcher's task runs, and whatever arrives while a flush is in progress goes into the
next one. A lone item therefore waits for nothing but a scheduler turn.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import outcome
import trio

T = TypeVar("T")
R = TypeVar("R")


class _Waiter(Generic[T, R]):
    __slots__ = ("done", "item", "outcome")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = trio.Event()
        self.outcome: outcome.Outcome[R] = outcome.Error(RuntimeError("batcher stopped"))


class Batcher(Generic[T, R]):
    """`await submit(item)` returns `flush(batch)[i]` for the item's place `i` in a batch
    of at most `max_items`; an exception from `flush` is raised in every submitter of
    that batch. `run()` must be running (in a nursery) for anything to be flushed.

    A submitter that is cancelled leaves its item in the batch (a claim or record may
    still be published): `flush` must not depend on anyone waiting for its result.
    """

    def __init__(
        self, flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *, max_items: int
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self._flush = flush
        self._max = max_items
        self._queue: list[_Waiter[T, R]] = []
        self._ready = trio.Event()
        self.batches = 0  # flushes so far (tests, statistics)
        self.items = 0  # items flushed so far

    async def submit(self, item: T) -> R:
        waiter: _Waiter[T, R] = _Waiter(item)
        self._queue.append(waiter)
        self._ready.set()
        await waiter.done.wait()
        return waiter.outcome.unwrap()

    async def run(self) -> None:
        """Flush batches until cancelled."""
        while True:
            await self._ready.wait()
            while self._queue:
                await self._flush_once()
            self._ready = trio.Event()

    async def _flush_once(self) -> None:
        batch, self._queue = self._queue[: self._max], self._queue[self._max :]
        try:
            results = _checked(await self._flush([w.item for w in batch]), len(batch))
        except Exception as exc:  # every submitter of this batch learns of it
            for waiter in batch:
                waiter.outcome = outcome.Error(exc)
                waiter.done.set()
            return
        except BaseException:  # cancelled: nobody gets an answer ("batcher stopped")
            for waiter in batch + self._queue:
                waiter.done.set()
            raise
        self.batches += 1
        self.items += len(batch)
        for waiter, result in zip(batch, results, strict=True):
            waiter.outcome = outcome.Value(result)
            waiter.done.set()


def _checked(results: Sequence[R], expected: int) -> Sequence[R]:
    if len(results) != expected:
        raise RuntimeError(f"flush returned {len(results)} results for {expected} items")
    return results
