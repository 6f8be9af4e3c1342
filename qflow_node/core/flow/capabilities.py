"""A step's `capabilities`, checked with the capability vocabulary and normalised.

Hosts, methods and key prefixes go through the same validators as capability tokens
(`qflow_node.core.capability.vocabulary`), so whatever a flow declares can be written
into a token as is. Sets are sorted and deduplicated; entries follow the operation
order of tokens; every key an operation allows is present (defaults filled in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qflow_node.core.capability import vocabulary as v
from qflow_node.core.capability.errors import GrantError
from qflow_node.core.flow.errors import Path
from qflow_node.core.flow.ir import CapabilityIR
from qflow_node.core.flow.schema import OPERATION_KEYS, OPERATIONS
from qflow_node.core.flow.values import integer

Report = Callable[[Path, str], None]


def normalise_capabilities(entries: Any, path: Path, report: Report) -> list[CapabilityIR]:
    if not isinstance(entries, list):
        return []
    found: dict[str, CapabilityIR] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("op") not in OPERATION_KEYS:
            continue  # the schema reported it
        op: str = entry["op"]
        here = (*path, i)
        if op in found:
            report((*here, "op"), f"{op} is declared twice in this step; merge the two entries")
            continue
        found[op] = _entry(op, entry, here, report)
    return [found[op] for op in OPERATIONS if op in found]


def _entry(op: str, entry: dict[str, Any], here: Path, report: Report) -> CapabilityIR:
    keys = OPERATION_KEYS[op]
    cap: CapabilityIR = {"op": op}
    if "hosts" in keys:
        cap["hosts"] = _strings(entry.get("hosts"), v.host, (*here, "hosts"), report)
    if "methods" in keys:
        cap["methods"] = _strings(
            entry.get("methods", ["GET"]), v.method, (*here, "methods"), report
        )
    if "key_prefixes" in keys:
        if "key_prefix" in entry:
            cap["key_prefixes"] = _strings(
                [entry["key_prefix"]], v.key_prefix, (*here, "key_prefix"), report
            )
        else:
            cap["key_prefixes"] = _strings(
                entry.get("key_prefixes"), v.key_prefix, (*here, "key_prefixes"), report
            )
    if "codecs" in keys:
        cap["codecs"] = _strings(
            entry.get("codecs", list(v.CODECS)), v.codec, (*here, "codecs"), report
        )
    for bound in ("max_bytes", "max_response_bytes"):
        if bound in keys:
            value = entry.get(bound)
            cap[bound] = integer(value, None)
    return cap


def _strings(values: Any, check: Callable[[str], str], path: Path, report: Report) -> list[str]:
    if not isinstance(values, list):
        return []
    out: set[str] = set()
    for i, value in enumerate(values):
        if not isinstance(value, str):
            continue
        try:
            out.add(check(value))
        except GrantError as exc:
            report(path if len(values) == 1 and path[-1] == "key_prefix" else (*path, i), str(exc))
    return sorted(out)
