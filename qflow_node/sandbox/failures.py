"""The typed ways a step can fail. `Sandbox.run` returns one of these; it never raises them."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FailureKind(enum.StrEnum):
    # Refused before the step ran.
    INVALID_LIMITS = "invalid_limits"  # a limit is not positive or above the subnet maximum
    MODULE_NOT_ALLOWED = "module_not_allowed"  # not in the subnet's module whitelist
    MODULE_NOT_FOUND = "module_not_found"  # no block with the module CID in the store
    INVALID_MODULE = "invalid_module"  # not valid wasm, or not a WASI command step
    CAPABILITY_DENIED = "capability_denied"  # imports an ungranted host function, or a
    # call was denied with trap_on_deny
    # The step ran and was stopped, or ended badly.
    OUT_OF_FUEL = "out_of_fuel"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_TOO_LARGE = "output_too_large"
    TRAP = "trap"
    EXIT_CODE = "exit_code"
    INVALID_OUTPUT = "invalid_output"


@dataclass(frozen=True, slots=True)
class StepFailure:
    kind: FailureKind
    message: str
    exit_code: int | None = None  # for EXIT_CODE (and MEMORY_LIMIT inferred from an exit)

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def timeout_failure(timeout: str) -> StepFailure:
    """`timeout` as a flow author wrote it (`2 s`, `500 ms`)."""
    return StepFailure(
        FailureKind.TIMEOUT,
        f"the step ran longer than its {timeout} wall-clock limit and was stopped",
    )
