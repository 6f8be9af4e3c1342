"""The compiled form of a flow (the IR): a normalised, defaults-filled DAG-CBOR tree.

Its CID is the flow's identity: two sources that mean the same thing (key order, YAML
or JSON, comments, defaults written or omitted) compile to the same bytes. Every step
node has every common key, so the engine never guesses a default. docs/flows.md,
"Compiled form", describes each field.

Conventions: durations are integer milliseconds; expressions are CEL source strings
(already compiled once at load; the engine compiles and caches them by source); wasm
modules and sub-flows are IPLD links (CIDs), so pinning a flow pins what it runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final, Literal, TypeAlias, TypedDict

from qflow_node.codec import CID

FORMAT: Final = "qflow.flow/1"

# A CEL source string, or a mapping whose values are templates: the engine evaluates
# every string and keeps the mapping's shape.
Template: TypeAlias = str | dict[str, "Template"]

OnError = Literal["fail", "continue", "compensate"]


class RetryIR(TypedDict):
    max_attempts: int  # attempts in total, the first included; 1 = no retry
    backoff: Literal["fixed", "linear", "exponential"]
    delay_ms: int
    max_delay_ms: int | None
    jitter_ms: int


class CapabilityIR(TypedDict, total=False):
    op: str  # always present; the other keys exactly as the op allows (see docs)
    hosts: list[str]
    methods: list[str]
    key_prefixes: list[str]
    codecs: list[str]
    max_bytes: int | None
    max_response_bytes: int | None


class _Common(TypedDict):
    id: str
    on_error: OnError
    timeout_ms: int | None
    retry: RetryIR
    compensate: StepIR | None
    # Commits through the subnet's validator quorum (docs/consensus.md). Only a run step
    # may be critical; every other kind carries false.
    critical: bool
    capabilities: list[CapabilityIR]


# `with` and `else` are Python keywords, so these two parts use the functional syntax.
_WithInput = TypedDict("_WithInput", {"with": "Template"})
_Else = TypedDict("_Else", {"else": "list[StepIR]"})


class RunStep(_Common, _WithInput):
    kind: Literal["run"]
    module: CID


class TransformStep(_Common):
    kind: Literal["transform"]
    value: Template


class ValidateStep(_Common):
    kind: Literal["validate"]
    schema: dict[str, Any]
    data: str


class HttpStep(_Common):
    kind: Literal["http"]
    method: str
    url: str
    headers: dict[str, str]  # lowercase names → CEL
    body: str | None


class SleepStep(_Common):
    kind: Literal["sleep"]
    duration_ms: int


class WaitForStep(_Common):
    kind: Literal["wait_for"]
    topic: str
    match: str


class ApprovalStep(_Common):
    kind: Literal["approval"]
    approvers: list[str]  # did:key, sorted
    quorum: int
    message: str | None


class FlowStep(_Common, _WithInput):
    kind: Literal["flow"]
    flow: CID


class IfStep(_Common, _Else):
    kind: Literal["if"]
    condition: str
    then: list[StepIR]


class ParallelStep(_Common):
    kind: Literal["parallel"]
    join: int  # branches that must succeed: all = every branch, any = 1
    branches: dict[str, list[StepIR]]


class ForeachStep(_Common):
    kind: Literal["foreach"]
    items: str
    max_parallel: int
    max_items: int
    on_item_error: Literal["stop", "continue", "collect"]
    steps: list[StepIR]


StepIR: TypeAlias = (
    RunStep
    | TransformStep
    | ValidateStep
    | HttpStep
    | SleepStep
    | WaitForStep
    | ApprovalStep
    | FlowStep
    | IfStep
    | ParallelStep
    | ForeachStep
)


class FlowIR(TypedDict):
    format: str  # FORMAT
    name: str
    subnet: str | None
    description: str | None
    inputs: dict[str, Any]  # JSON Schema of the inputs
    vars: dict[str, Any]  # initial flow variables
    steps: list[StepIR]
    output: Template


def child_lists(step: StepIR) -> Iterator[tuple[str, list[StepIR]]]:
    """The nested step lists of a control step, with their slot names (see scope.py)."""
    if step["kind"] == "if":
        yield "then", step["then"]
        yield "else", step["else"]
    elif step["kind"] == "parallel":
        yield from sorted(step["branches"].items())
    elif step["kind"] == "foreach":
        yield "do", step["steps"]


def walk(steps: Sequence[StepIR]) -> Iterator[StepIR]:
    """Every step node, depth-first in source order, compensations after their step."""
    stack = list(reversed(steps))
    while stack:
        step = stack.pop()
        yield step
        children: list[StepIR] = []
        if step["compensate"] is not None:
            children.append(step["compensate"])
        for _, nested in child_lists(step):
            children.extend(nested)
        stack.extend(reversed(children))


def step_index(flow: FlowIR) -> dict[str, StepIR]:
    """Every step by id (compensations as `<id>/compensate`)."""
    return {step["id"]: step for step in walk(flow["steps"])}


def subflow_links(flow: Any) -> list[CID]:
    """The sub-flow CIDs a compiled flow (or an untrusted decoded object) refers to."""
    found: list[CID] = []
    stack = [flow]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("kind") == "flow" and isinstance(item.get("flow"), CID):
                found.append(item["flow"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def instance_id(step_id: str, loops: Sequence[tuple[str, int]] = ()) -> str:
    """The address of one run of a step inside foreach bodies, for records:
    `instance_id("pack", [("ship", 2)])` → `ship[2]/pack`."""
    return "".join(f"{loop}[{index}]/" for loop, index in loops) + step_id
