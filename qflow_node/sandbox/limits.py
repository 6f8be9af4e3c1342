"""Per-step resource limits, their defaults, and the parsers the CLI uses for them.

A step asks for limits; the subnet policy (`policy.py`) says how much any step may ask
for. Stack depth is not here: wasmtime fixes it per engine, so it is a subnet-wide
setting (`SubnetPolicy.max_wasm_stack`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Final

KiB: Final = 1 << 10
MiB: Final = 1 << 20
GiB: Final = 1 << 30
WASM_PAGE: Final = 64 * KiB

# About 1e9 fuel per second of pure wasm on this class of machine (one unit per
# instruction, roughly), so the default CPU budget is about a second.
DEFAULT_FUEL: Final = 1_000_000_000
DEFAULT_MEMORY: Final = 64 * MiB
DEFAULT_TIMEOUT: Final = 5.0
# Outputs are stored as one raw block, and blocks are at most 1 MiB.
DEFAULT_OUTPUT: Final = 1 * MiB
DEFAULT_TABLES: Final = 4
DEFAULT_TABLE_ELEMENTS: Final = 65_536


@dataclass(frozen=True, slots=True)
class Limits:
    """What one step may consume. Sizes in bytes, timeout in seconds."""

    fuel: int = DEFAULT_FUEL
    memory: int = DEFAULT_MEMORY
    timeout: float = DEFAULT_TIMEOUT
    output: int = DEFAULT_OUTPUT
    tables: int = DEFAULT_TABLES
    table_elements: int = DEFAULT_TABLE_ELEMENTS

    def describe(self, name: str) -> str:
        """A field's value as a flow author would write it (`64 MiB`, `2 s`, `10000`)."""
        return describe_limit(name, getattr(self, name))


LIMIT_NAMES: Final = tuple(f.name for f in fields(Limits))


def describe_limit(name: str, value: float) -> str:
    if name in ("memory", "output"):
        return format_bytes(int(value))
    if name == "timeout":
        return format_duration(float(value))
    return f"{int(value):,}"


def format_bytes(n: int) -> str:
    """`64 MiB`, `1.5 KiB`, `17 B`: exact when it can be, one decimal otherwise."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            whole, rest = divmod(n, size)
            return f"{whole} {unit}" if rest == 0 else f"{n / size:.1f} {unit}"
    return f"{n} B"


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    return f"{seconds:g} s"


_SIZE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_SIZE_UNITS: Final = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "ki": KiB, "kib": KiB, "mi": MiB, "mib": MiB, "gi": GiB, "gib": GiB,
}  # fmt: skip
_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min)?\s*")
_DURATION_UNITS: Final = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0}


def parse_size(text: str) -> int:
    """`64MiB`, `512 KiB`, `1GB`, `65536` → bytes. Raises ValueError saying what is wrong."""
    match = _SIZE.fullmatch(text)
    unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"{text!r} is not a size (examples: 65536, 64MiB, 512KiB, 1GB)")
    value = float(match.group(1)) * unit
    if not value.is_integer():
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(value)


def parse_duration(text: str) -> float:
    """`2s`, `500ms`, `1.5`, `1m` → seconds. Raises ValueError saying what is wrong."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (examples: 2s, 500ms, 1.5, 1m)")
    value = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite duration")
    return value
