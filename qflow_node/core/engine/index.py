"""Static facts about a compiled flow that the engine looks up on every step."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from qflow_node.core.flow import FlowIR, StepIR, child_lists, instance_id

COMPENSATE: Final = "/compensate"
_LOOP: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\[(0|[1-9][0-9]*)\]")


@dataclass(frozen=True, slots=True)
class Position:
    siblings: list[StepIR]  # the list the step is in
    index: int


@dataclass(slots=True)
class FlowIndex:
    """Every step by id (compensations as `<id>/compensate`), where it sits, and which
    foreach steps enclose it (outermost first)."""

    flow: FlowIR
    steps: dict[str, StepIR] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    loops: dict[str, tuple[str, ...]] = field(default_factory=dict)
    initial_vars: bytes = b""  # the flow's `vars` as a Yjs update (state.initial_vars_update)
    # Values of expressions by "<instance>#<slot>", with the objects they were computed
    # from (plan.py): a plan reuses a value when those are the very same objects. States
    # never change, so identity means the value would be the same.
    memo: dict[str, tuple[tuple[object, ...], object]] = field(default_factory=dict)
    # The same for whole step lists, by list key: (deps, outcome, actions).
    lists: dict[str, tuple[tuple[Any, ...], tuple[str, Any], list[Any]]] = field(
        default_factory=dict
    )
    items: dict[str, tuple[list[Any], list[Any]]] = field(default_factory=dict)  # plan._items
    branches: dict[str, list[tuple[str, list[StepIR]]]] = field(default_factory=dict)  # sorted
    parents: dict[str, str] = field(default_factory=dict)  # step id -> enclosing control step
    list_uses_vars: dict[str, bool] = field(default_factory=dict)  # by first step id

    @classmethod
    def of(cls, flow: FlowIR, uses_vars: Callable[[StepIR], bool]) -> FlowIndex:
        """`uses_vars(step)`: whether the step's own expressions read `vars`."""
        index = cls(flow)
        index._add(flow["steps"], (), None, uses_vars)
        return index

    def fresh(self) -> FlowIndex:
        """An index for another execution of the same flow: the static facts shared
        (never written after `of`), the per-execution memos empty."""
        return FlowIndex(
            self.flow,
            self.steps,
            self.positions,
            self.loops,
            self.initial_vars,
            parents=self.parents,
            list_uses_vars=self.list_uses_vars,
        )

    def _add(
        self,
        steps: list[StepIR],
        loops: tuple[str, ...],
        parent: str | None,
        uses_vars: Callable[[StepIR], bool],
    ) -> bool:
        reads_vars = False
        for i, step in enumerate(steps):
            self.steps[step["id"]] = step
            self.positions[step["id"]] = Position(steps, i)
            self.loops[step["id"]] = loops
            if parent is not None:
                self.parents[step["id"]] = parent
            comp = step["compensate"]
            if comp is not None:
                self.steps[step["id"] + COMPENSATE] = comp
                self.loops[step["id"] + COMPENSATE] = loops
            reads_vars |= uses_vars(step)
            inner = (*loops, step["id"]) if step["kind"] == "foreach" else loops
            for _, nested in child_lists(step):
                reads_vars |= self._add(nested, inner, step["id"], uses_vars)
        if steps:
            self.list_uses_vars[steps[0]["id"]] = reads_vars
        return reads_vars

    def list_keys(self, step_id: str, loops: tuple[tuple[str, int], ...]) -> list[str]:
        """The keys of the lists that hold a step instance, innermost first."""
        keys: list[str] = []
        current: str | None = step_id
        while current is not None:
            keys.append(instance_id(self.positions[current].siblings[0]["id"], loops))
            current = self.parents.get(current)
            if current is not None and self.steps[current]["kind"] == "foreach":
                loops = loops[:-1]
        return keys


def parse_instance(instance: str) -> tuple[str, tuple[tuple[str, int], ...]] | None:
    """`outer[1]/inner[0]/pack` → ("pack", (("outer", 1), ("inner", 0))); None if malformed."""
    parts = instance.split("/")
    loops: list[tuple[str, int]] = []
    i = 0
    while i < len(parts) - 1:
        match = _LOOP.fullmatch(parts[i])
        if match is None:
            break
        loops.append((match[1], int(match[2])))
        i += 1
    step_id = "/".join(parts[i:])
    if not step_id or instance_id(step_id, loops) != instance:
        return None
    return step_id, tuple(loops)
