"""Which step outputs an expression may read: the lexical scope rule of flows.

A step's location is the chain of positions from the top-level list down to it:
`(index, slot, index, slot, …, index)`, where a slot names a nested step list of a
control step (`then`/`else` of an if, a parallel branch's name, `do` for a foreach
body). An expression evaluated at location P may read `steps.<id>` of step T iff T is
guaranteed to have completed when P runs: T is an earlier sibling of P or of one of P's
ancestors. So: not itself, not an enclosing step, not a later step, not a step nested
inside another step (read that step's output instead), and not a step in a parallel
branch or if branch other than P's own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from qflow_node.core.flow.errors import Path, format_path

Loc = tuple[int | str, ...]


@dataclass(frozen=True, slots=True)
class StepDef:
    id: str
    kind: str
    loc: Loc
    path: Path  # of the step mapping in the source


def after(loc: Loc) -> Loc:
    """The position just after a step: where its compensation's expressions run."""
    index = loc[-1]
    assert isinstance(index, int)
    return (*loc[:-1], index + 1)


def why_not_visible(target: StepDef, here: Loc, by_loc: Mapping[Loc, StepDef]) -> str | None:
    """None if `target` has completed whenever an expression at `here` runs, else why not."""
    name = json.dumps(target.id)
    parent, index = target.loc[:-1], target.loc[-1]
    assert isinstance(index, int)
    if here[: len(parent)] == parent and len(here) > len(parent):
        mine = here[len(parent)]
        assert isinstance(mine, int)
        if index < mine:
            return None
        if index > mine:
            return (
                f"step {name} has not run yet at this point (it comes later, at "
                f"{format_path(target.path)}); only steps that completed before can be read"
            )
        if len(here) == len(target.loc):
            return "a step cannot read its own output"
        return f"step {name} encloses this expression and has not completed when it runs"
    k = 0
    while k < min(len(here), len(target.loc)) and here[k] == target.loc[k]:
        k += 1
    if k == len(here):  # here is the step that contains the target
        container = by_loc[here]
        return (
            f"step {name} is inside step {json.dumps(container.id)}, which has not completed "
            "when this expression runs"
        )
    if k % 2 == 1:  # same control step, another branch
        container = by_loc[target.loc[:k]]
        slot = target.loc[k]
        if container.kind == "parallel":
            return (
                f"step {name} is in branch {json.dumps(slot)} of parallel step "
                f"{json.dumps(container.id)}; branches run concurrently and cannot read each other"
            )
        return (
            f"step {name} is in the {slot} branch of if step {json.dumps(container.id)}, "
            "which never runs together with this one"
        )
    container = by_loc[target.loc[: k + 1]]
    return (
        f"step {name} is inside step {json.dumps(container.id)} and not visible outside it; "
        f"read steps.{container.id}.output instead"
    )
