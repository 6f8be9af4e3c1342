"""The subnet's sandbox policy: which modules may run and how much any step may ask for."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from qflow_node.codec import CID
from qflow_node.sandbox.limits import (
    LIMIT_NAMES,
    WASM_PAGE,
    GiB,
    KiB,
    Limits,
    MiB,
    describe_limit,
)

DEFAULT_MAX_WASM_STACK: Final = 512 * KiB  # wasmtime's own default

DEFAULT_MAXIMA: Final = Limits(
    fuel=50_000_000_000,
    memory=1 * GiB,
    timeout=60.0,
    output=1 * MiB,
    tables=16,
    table_elements=1 << 20,
)

# Below these a step cannot even start (a wasm page; a C module's single table).
_MINIMA: Final = {"memory": WASM_PAGE, "tables": 1}


@dataclass(frozen=True, slots=True)
class SubnetPolicy:
    """`allowed_modules=None` allows any module: for `qflow step run` on a developer's own
    module, never for a node (the runtime passes the subnet's whitelist)."""

    allowed_modules: frozenset[CID] | None = None
    defaults: Limits = field(default_factory=Limits)
    maxima: Limits = DEFAULT_MAXIMA
    max_wasm_stack: int = DEFAULT_MAX_WASM_STACK

    def __post_init__(self) -> None:
        problem = _check(self.defaults, self.maxima)
        if problem is not None:
            raise ValueError(f"invalid subnet policy defaults: {problem}")
        if self.max_wasm_stack < 64 * KiB:
            raise ValueError(f"max_wasm_stack of {self.max_wasm_stack} bytes is below 64 KiB")

    def allows(self, module: CID) -> bool:
        return self.allowed_modules is None or module in self.allowed_modules

    def check(self, limits: Limits) -> str | None:
        """Why a step may not have these limits, or None."""
        return _check(limits, self.maxima)


def _check(limits: Limits, maxima: Limits) -> str | None:
    for name in LIMIT_NAMES:
        value = getattr(limits, name)
        ceiling = getattr(maxima, name)
        floor = _MINIMA.get(name)
        kind = (int, float) if name == "timeout" else (int,)
        if isinstance(value, bool) or not isinstance(value, kind) or math.isnan(value):
            wanted = "a number of seconds" if name == "timeout" else "an integer"
            return f"{name} must be {wanted}, got {value!r}"
        if value <= 0:
            return f"{name} must be positive, got {value!r}"
        if floor is not None and value < floor:
            minimum = describe_limit(name, floor)
            return f"{name} of {limits.describe(name)} is below the minimum of {minimum}"
        if value > ceiling:
            return (
                f"{name} of {limits.describe(name)} is above this subnet's maximum of "
                f"{maxima.describe(name)}"
            )
    return None
