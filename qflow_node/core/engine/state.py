"""The state of one execution: what every step instance has done so far.

States are values: `apply` (reducer.py) never changes one, it builds the next. The only
mutable parts are caches of values derived from the state itself (the plan, `vars`),
filled on first use, so sharing a state between callers is safe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Final

from pycrdt import Doc, Map

from qflow_node.core.critical import CriticalKeys
from qflow_node.core.engine.index import FlowIndex
from qflow_node.core.flow import FlowIR

VARS: Final = "vars"  # the Yjs map of the execution's variables (sandbox.state agrees)

# Instance statuses.
STARTED: Final = "started"  # a timed step is waiting (sleep, wait_for, approval, timeout)
RETRY: Final = "retry"  # an attempt failed; the next one is due after the backoff
COMPLETED: Final = "completed"
FAILED: Final = "failed"  # failed for good

# Execution statuses.
NEW: Final = "new"
RUNNING: Final = "running"
PAUSED: Final = "paused"
SUCCEEDED: Final = "completed"
FAILED_EXEC: Final = "failed"
ABORTED: Final = "aborted"
TERMINAL: Final = frozenset({SUCCEEDED, FAILED_EXEC, ABORTED})


@dataclass(frozen=True, slots=True)
class Instance:
    status: str
    attempt: int
    ts: int  # of the record that set this status (retry and deadline base)
    output: Any = None
    error: dict[str, Any] | None = None
    granted: tuple[str, ...] = ()  # approvals so far

    def evolve(self, **changes: Any) -> Instance:
        return replace(self, **changes)


class ExecState:
    """An execution's state. Read-only by convention; build new ones with `evolve`."""

    __slots__ = (
        "_plan",
        "_vars",
        "applied",
        "completed_order",
        "critical",
        "cursors",
        "deltas",
        "error",
        "exec_id",
        "index",
        "inputs",
        "instances",
        "output",
        "saga",
        "status",
        "versions",
    )

    def __init__(
        self,
        index: FlowIndex,
        exec_id: str,
        *,
        status: str = NEW,
        inputs: Any = None,
        instances: dict[str, Instance] | None = None,
        cursors: dict[str, int] | None = None,
        versions: dict[str, object] | None = None,
        deltas: tuple[bytes, ...] = (),
        completed_order: tuple[str, ...] = (),
        saga: dict[str, Any] | None = None,
        output: Any = None,
        error: dict[str, Any] | None = None,
        applied: int = 0,
        vars_cache: dict[str, Any] | None = None,
        critical: CriticalKeys | None = None,
    ) -> None:
        self.index = index
        self.exec_id = exec_id
        # The subnet policy's keys that critical steps' certificates are checked with: a
        # setting of the replica, fixed for the execution (not folded from records, so
        # not in `snapshot`). None: no critical step's record can be applied.
        self.critical = critical
        self.status = status
        self.inputs = inputs
        self.instances: dict[str, Instance] = instances if instances is not None else {}
        # list key (instance of the list's first step) -> index of its first unfinished step
        self.cursors: dict[str, int] = cursors if cursors is not None else {}
        # list key -> a token replaced whenever an instance in the list (or nested in one
        # of its steps) changes: the plan reuses a list's walk while it holds the same
        # token. Fresh objects, not counters, so two states forked from one never agree.
        self.versions: dict[str, object] = versions if versions is not None else {}
        self.deltas = deltas  # CRDT updates in replay order
        self.completed_order = completed_order  # completed steps that have a compensation
        self.saga = saga  # the error that started the unwinding, if any
        self.output = output
        self.error = error
        self.applied = applied  # events applied
        self._plan: Any = None
        self._vars = vars_cache

    @property
    def flow(self) -> FlowIR:
        return self.index.flow

    def evolve(self, **changes: Any) -> ExecState:
        fields: dict[str, Any] = {
            "status": self.status,
            "inputs": self.inputs,
            "instances": self.instances,
            "cursors": self.cursors,
            "versions": self.versions,
            "deltas": self.deltas,
            "completed_order": self.completed_order,
            "saga": self.saga,
            "output": self.output,
            "error": self.error,
            "applied": self.applied + 1,
        }
        fields.update(changes)
        if fields["deltas"] is self.deltas:
            fields["vars_cache"] = self._vars  # same deltas, same variables
        return ExecState(self.index, self.exec_id, critical=self.critical, **fields)

    def vars_update(self) -> bytes:
        """The variables document as one Yjs update (a step's `state` snapshot)."""
        return bytes(self._doc().get_update())

    def vars(self) -> dict[str, Any]:
        """The variables as JSON values: the flow's initial `vars`, then every delta."""
        if self._vars is None:
            found: dict[str, Any] = {}
            for key, text in self._doc().get(VARS, type=Map).items():
                try:
                    found[key] = json.loads(text) if isinstance(text, str) else None
                except ValueError:
                    found[key] = None  # a step stored invalid JSON text: read as null
            self._vars = found
        return self._vars

    def _doc(self) -> Doc[Any]:
        doc: Doc[Any] = Doc()
        if self.index.initial_vars:
            doc.apply_update(self.index.initial_vars)
        for delta in self.deltas:
            doc.apply_update(delta)
        return doc

    def snapshot(self) -> dict[str, Any]:
        """Everything that defines the state, as plain data (tests compare these)."""
        return {
            "exec": self.exec_id,
            "status": self.status,
            "inputs": self.inputs,
            "instances": {
                key: {
                    "status": inst.status,
                    "attempt": inst.attempt,
                    "output": inst.output,
                    "error": inst.error,
                    "granted": list(inst.granted),
                }
                for key, inst in sorted(self.instances.items())
            },
            "vars": self.vars(),
            "saga": self.saga,
            "output": self.output,
            "error": self.error,
        }


def initial_vars_update(flow: FlowIR) -> bytes:
    """The flow's initial `vars` as a Yjs update from a fixed client (id 0), so every
    node builds the same bytes."""
    if not flow["vars"]:
        return b""
    doc: Doc[Any] = Doc(client_id=0)
    variables = doc.get(VARS, type=Map)
    for key in sorted(flow["vars"]):
        variables[key] = json.dumps(flow["vars"][key], sort_keys=True)
    return bytes(doc.get_update())
