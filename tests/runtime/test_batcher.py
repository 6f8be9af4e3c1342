"""`Batcher`: what waits while a flush runs goes out together; nothing waits to fill a
batch; each submitter gets its own result, or the error of its batch."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from qflow_node.runtime.batcher import Batcher


class Doubler:
    """A flush that records its batches and can be held open or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate: trio.Event | None = None
        self.fail_on: int | None = None

    async def flush(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot flush {self.fail_on}")
        return [2 * item for item in items]


async def submit_all(batcher: Batcher[int, int], items: Sequence[int]) -> dict[int, int]:
    results: dict[int, int] = {}

    async def one(item: int) -> None:
        results[item] = await batcher.submit(item)

    async with trio.open_nursery() as nursery:
        for item in items:
            nursery.start_soon(one, item)
    return results


async def test_items_submitted_together_share_one_flush_and_get_their_own_result() -> None:
    doubler = Doubler()
    batcher = Batcher(doubler.flush, max_items=64)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        assert await submit_all(batcher, range(5)) == {i: 2 * i for i in range(5)}
        nursery.cancel_scope.cancel()
    assert [sorted(b) for b in doubler.batches] == [[0, 1, 2, 3, 4]]  # trio: any order
    assert (batcher.batches, batcher.items) == (1, 5)


async def test_a_lone_item_goes_at_once_and_later_ones_wait_for_the_flush_in_progress() -> None:
    doubler = Doubler()
    doubler.gate = trio.Event()
    batcher = Batcher(doubler.flush, max_items=64)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        first = trio.Event()

        async def lone() -> None:
            assert await batcher.submit(1) == 2
            first.set()

        nursery.start_soon(lone)
        await trio.testing.wait_all_tasks_blocked()
        assert doubler.batches == [[1]]  # flushed alone, nobody waited for company
        later = trio.Event()

        async def more() -> None:
            assert await submit_all(batcher, [2, 3, 4]) == {2: 4, 3: 6, 4: 8}
            later.set()

        nursery.start_soon(more)
        await trio.testing.wait_all_tasks_blocked()
        assert doubler.batches == [[1]]  # queued behind the flush in progress
        doubler.gate.set()
        await first.wait()
        await later.wait()
        nursery.cancel_scope.cancel()
    assert [sorted(b) for b in doubler.batches] == [[1], [2, 3, 4]]


async def test_batches_are_at_most_max_items() -> None:
    doubler = Doubler()
    batcher = Batcher(doubler.flush, max_items=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        assert await submit_all(batcher, range(5)) == {i: 2 * i for i in range(5)}
        nursery.cancel_scope.cancel()
    assert [len(b) for b in doubler.batches] == [2, 2, 1]
    assert sorted(i for b in doubler.batches for i in b) == list(range(5))


async def test_a_failed_flush_raises_in_each_submitter_of_that_batch_only() -> None:
    doubler = Doubler()
    doubler.fail_on = 3
    batcher = Batcher(doubler.flush, max_items=2)
    errors: list[int] = []
    results: dict[int, int] = {}

    async def one(item: int) -> None:
        try:
            results[item] = await batcher.submit(item)
        except ValueError:
            errors.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        async with trio.open_nursery() as submitters:
            for item in range(4):
                submitters.start_soon(one, item)
        nursery.cancel_scope.cancel()
    batch_with_3 = next(b for b in doubler.batches if 3 in b)
    assert sorted(errors) == sorted(batch_with_3)
    assert results == {i: 2 * i for i in range(4) if i not in batch_with_3}


async def test_a_flush_that_miscounts_is_an_error_for_its_submitters() -> None:
    async def short(items: Sequence[int]) -> list[int]:
        return list(items[1:])

    batcher = Batcher(short, max_items=8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        with pytest.raises(RuntimeError, match="flush returned 0 results for 1 items"):
            await batcher.submit(1)
        nursery.cancel_scope.cancel()


def test_max_items_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_items"):
        Batcher(Doubler().flush, max_items=0)
