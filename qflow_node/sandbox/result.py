"""What `Sandbox.run` returns: output or failure, resource usage, and what the step did."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qflow_node.codec import CID
from qflow_node.sandbox.failures import StepFailure

LOG_LEVELS = ("debug", "info", "warn", "error")


@dataclass(frozen=True, slots=True)
class Usage:
    fuel: int  # fuel consumed (after a timeout: a lower bound, see docs/steps.md)
    memory: int  # peak linear memory, bytes (wasm memory only grows)
    wall_time: float  # seconds spent instantiating and running the module
    host_calls: int = 0  # calls to qflow.* host functions
    output_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "fuel": self.fuel,
            "memory": self.memory,
            "wall_time": round(self.wall_time, 6),
            "host_calls": self.host_calls,
            "output_bytes": self.output_bytes,
        }


NO_USAGE = Usage(fuel=0, memory=0, wall_time=0.0)


@dataclass(frozen=True, slots=True)
class Denial:
    """A host call the capability token refused."""

    operation: str
    reason: str
    args: Mapping[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LogEntry:
    level: int  # 0 debug, 1 info, 2 warn, 3 error
    message: str


@dataclass(frozen=True, slots=True)
class StepResult:
    module: CID
    output: bytes | None  # exactly what the step wrote to stdout, on success only
    failure: StepFailure | None
    usage: Usage
    stderr: bytes = b""  # captured (capped); logged, never part of the output
    state_delta: bytes | None = None  # Yjs update of the step's state changes, on success
    denials: tuple[Denial, ...] = ()  # the first few refused host calls
    denied_calls: int = 0  # all refused host calls
    logs: tuple[LogEntry, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failure is None

    def output_value(self) -> Any:
        """The output parsed (the runner has already checked it is one JSON value)."""
        if self.output is None:
            raise ValueError(f"the step failed: {self.failure}")
        return json.loads(self.output)

    def to_json(self) -> dict[str, Any]:
        """The report `qflow step run --json` prints."""
        failure = self.failure
        return {
            "ok": self.ok,
            "module": self.module.encode(),
            "output": None if self.output is None else self.output_value(),
            "failure": None
            if failure is None
            else {
                "kind": str(failure.kind),
                "message": failure.message,
                "exit_code": failure.exit_code,
            },
            "usage": self.usage.to_json(),
            "stderr": self.stderr.decode("utf-8", "replace"),
            "logs": [{"level": LOG_LEVELS[e.level], "message": e.message} for e in self.logs],
            "denied_calls": self.denied_calls,
            "denials": [
                {"operation": d.operation, "reason": d.reason, "args": dict(d.args)}
                for d in self.denials
            ],
            "state_delta": None if self.state_delta is None else self.state_delta.hex(),
        }


def _failure_json(failure: StepFailure) -> dict[str, Any]:
    return {"kind": str(failure.kind), "message": failure.message, "exit_code": failure.exit_code}
