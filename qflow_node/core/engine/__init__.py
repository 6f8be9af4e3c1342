"""The execution engine: a pure reducer over an execution's records.

    state = fold(flow, exec_id, events)            # or apply(state, event) one at a time
    for action in next_actions(state, now_ms): ...  # the driver performs them

No I/O, clock or randomness: time comes in as `now`, retry and timer due times come
from recorded timestamps, so every replica folding the same records computes the same
state and the same next actions. docs/engine.md is the reference.
"""

from qflow_node.core.critical.replica import CriticalKeys
from qflow_node.core.engine.actions import (
    Action,
    AwaitApproval,
    AwaitEvent,
    CompleteExecution,
    CompleteStep,
    FailExecution,
    FailStep,
    FireTimer,
    RunStep,
    StartStep,
    StepAction,
    Wake,
)
from qflow_node.core.engine.events import Event, Rejection, error
from qflow_node.core.engine.expressions import EvalError, evaluate, fill
from qflow_node.core.engine.index import COMPENSATE, FlowIndex, parse_instance
from qflow_node.core.engine.plan import is_decision
from qflow_node.core.engine.reducer import (
    apply,
    decision_refusal,
    fold,
    initial,
    next_actions,
    settles_decision,
)
from qflow_node.core.engine.state import ExecState, Instance

__all__ = [
    "COMPENSATE",
    "Action",
    "AwaitApproval",
    "AwaitEvent",
    "CompleteExecution",
    "CompleteStep",
    "CriticalKeys",
    "EvalError",
    "Event",
    "ExecState",
    "FailExecution",
    "FailStep",
    "FireTimer",
    "FlowIndex",
    "Instance",
    "Rejection",
    "RunStep",
    "StartStep",
    "StepAction",
    "Wake",
    "apply",
    "decision_refusal",
    "error",
    "evaluate",
    "fill",
    "fold",
    "initial",
    "is_decision",
    "next_actions",
    "parse_instance",
    "settles_decision",
]
