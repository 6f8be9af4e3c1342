"""Where every trio task of this node is waiting: for diagnosing a hang in a live node
(`debug.tasks` on the control API) without stopping it."""

from __future__ import annotations

from typing import Any

import trio


def task_tree() -> list[dict[str, Any]]:
    """Every task under the root, depth first: its name, nesting depth and the chain of
    frames (function:line) its coroutine is suspended in, outermost first."""
    found: list[dict[str, Any]] = []

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        found.append({"task": task.name, "depth": depth, "at": _awaiting(task.coro)})
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child, depth + 1)

    walk(trio.lowlevel.current_root_task(), 0)
    return found


def _awaiting(coro: Any) -> list[str]:
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            frame = getattr(coro, "ag_frame", None)
        if frame is None:
            break
        frames.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )
    return frames
