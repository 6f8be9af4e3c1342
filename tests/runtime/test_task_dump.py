"""`task_tree()` and `debug.tasks`: every trio task, how deep it nests, where it waits."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from qflow_node.api.debug_methods import task_methods
from qflow_node.api.errors import BAD_REQUEST, ApiError
from qflow_node.runtime.task_dump import task_tree

PARKED = "qflow-test-parked"


async def parked_on_event(event: trio.Event, started: trio.Event) -> None:
    started.set()
    await event.wait()


def entries_named(tree: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in tree if entry["task"] == name]


def functions(entry: dict[str, Any]) -> list[str]:
    """The qualnames of an entry's frames (each `qualname:line`)."""
    return [frame.rsplit(":", 1)[0] for frame in entry["at"]]


def check_tree(tree: list[dict[str, Any]]) -> None:
    """The tree of a trio run with a child parked in `parked_on_event`, seen from here."""
    assert tree[0]["depth"] == 0  # the root task comes first
    assert all(entry["depth"] > 0 for entry in tree[1:])
    for entry in tree:
        assert set(entry) == {"task", "depth", "at"}
        assert isinstance(entry["task"], str)
        assert all(isinstance(frame, str) and ":" in frame for frame in entry["at"])
        assert all(frame.rsplit(":", 1)[1].isdigit() for frame in entry["at"])

    (child,) = entries_named(tree, PARKED)
    here = trio.lowlevel.current_task()
    (me,) = [e for e in entries_named(tree, here.name) if e["depth"] == child["depth"] - 1]
    assert child["depth"] > tree[0]["depth"]
    # Outermost first: the task's own coroutine, then what it awaits, down to trio.
    assert functions(child)[0] == parked_on_event.__qualname__
    assert "Event.wait" in functions(child)
    assert functions(child).index(parked_on_event.__qualname__) < functions(child).index(
        "Event.wait"
    )
    # The calling task (running, not suspended) is listed too, one level up.
    assert me["at"], me


async def test_task_tree_finds_a_parked_child_and_where_it_waits() -> None:
    release = trio.Event()
    started = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(parked_on_event, release, started, name=PARKED)
            await started.wait()
            await trio.testing.wait_all_tasks_blocked()
            tree = task_tree()
            check_tree(tree)
            release.set()
    # Once it returned, the child is gone from the tree.
    assert entries_named(task_tree(), PARKED) == []


async def test_nested_nurseries_nest_deeper() -> None:
    release = trio.Event()
    started = trio.Event()

    async def middle() -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(parked_on_event, release, started, name=PARKED)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(middle, name="qflow-test-middle")
            await started.wait()
            await trio.testing.wait_all_tasks_blocked()
            tree = task_tree()
            (outer,) = entries_named(tree, "qflow-test-middle")
            (child,) = entries_named(tree, PARKED)
            assert child["depth"] == outer["depth"] + 1
            # Depth first: the child is listed under its parent, after it.
            assert tree.index(outer) < tree.index(child)
            assert functions(outer)[0].endswith("middle")
            release.set()


async def test_debug_tasks_returns_the_task_tree() -> None:
    handler = task_methods()["debug.tasks"]
    release = trio.Event()
    started = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(parked_on_event, release, started, name=PARKED)
            await started.wait()
            await trio.testing.wait_all_tasks_blocked()
            result = await handler({})
            assert set(result) == {"tasks"}
            check_tree(result["tasks"])
            # Same structure as task_tree(): the same tasks at the same depths.
            direct = task_tree()
            assert [(e["task"], e["depth"]) for e in result["tasks"]] == [
                (e["task"], e["depth"]) for e in direct
            ]
            (via_api,) = entries_named(result["tasks"], PARKED)
            (seen,) = entries_named(direct, PARKED)
            assert via_api["at"] == seen["at"]  # the child has not moved
            release.set()


@pytest.mark.parametrize("params", [{"depth": 1}, {"task": "x", "verbose": True}])
async def test_debug_tasks_refuses_unknown_params(params: dict[str, Any]) -> None:
    handler = task_methods()["debug.tasks"]
    with pytest.raises(ApiError) as caught:
        await handler(params)
    assert caught.value.code == BAD_REQUEST
    assert "debug.tasks" in caught.value.message
    for name in params:
        assert name in caught.value.message
