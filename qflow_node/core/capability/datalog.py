"""The Datalog of Qflow tokens: what `issue` and `attenuate` write, and the authorizer.

docs/capabilities.md is the spec; this module is its single implementation. Blocks are
generated as text, one statement per line, every string from the safe alphabet of
`vocabulary`, sets sorted: the same arguments always give byte-identical blocks, which
the compiled fast path relies on (`scope.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from qflow_node.core.capability import vocabulary as v
from qflow_node.core.capability.errors import GrantError
from qflow_node.core.capability.instants import format_rfc3339

# The authorizer's policies, first match wins. Byte bounds deny before any allow; each
# operation is allowed only with its right and with arguments inside the authority's
# bounds. Attenuation blocks add checks, which must all pass as well.
POLICIES: Final = """\
deny if bytes($b), max_bytes($n), $b > $n;
deny if response_bytes($b), max_response_bytes($n), $b > $n;
allow if operation("http.fetch"), right("http.fetch"),
  host($h), host_allowed($h), method($m), method_allowed($m);
allow if operation("state.get"), right("state.get"), key($k), key_prefix($p), $k.starts_with($p);
allow if operation("state.set"), right("state.set"), key($k), key_prefix($p), $k.starts_with($p);
allow if operation("block.get"), right("block.get");
allow if operation("block.put"), right("block.put"), codec($c), codec_allowed($c);
allow if operation("log"), right("log");
"""
# Index of the first allow policy: a deny policy before it is a byte bound.
FIRST_ALLOW_POLICY: Final = 2


@dataclass(frozen=True, slots=True)
class Grants:
    """What an authority grants: the authority block of a token, minus its signer."""

    operations: frozenset[str]
    hosts: frozenset[str] = frozenset()
    methods: frozenset[str] = frozenset()
    key_prefixes: frozenset[str] = frozenset()
    codecs: frozenset[str] = frozenset()
    max_bytes: int | None = None
    max_response_bytes: int | None = None
    timeout_ms: int | None = None
    trap_on_deny: bool = False

    @classmethod
    def build(
        cls,
        operations: Iterable[str],
        *,
        hosts: Iterable[str] = (),
        methods: Iterable[str] = (),
        key_prefixes: Iterable[str] = (),
        codecs: Iterable[str] | None = None,
        max_bytes: int | None = None,
        max_response_bytes: int | None = None,
        timeout_ms: int | None = None,
        trap_on_deny: bool = False,
    ) -> Grants:
        """Validated, normalised grants (hosts lowercased, methods uppercased).

        Nothing is implied: http.fetch needs hosts and methods, state.* needs key
        prefixes (`""` for every key). block.put allows both codecs unless `codecs` says.
        """
        ops = v.value_set(operations, v.operation, "operations")
        if codecs is None:
            codecs = v.CODECS if v.BLOCK_PUT in ops else ()
        grants = cls(
            operations=ops,
            hosts=v.value_set(hosts, v.host, "hosts"),
            methods=v.value_set(methods, v.method, "methods"),
            key_prefixes=v.value_set(key_prefixes, v.key_prefix, "key prefixes"),
            codecs=v.value_set(codecs, v.codec, "codecs"),
            max_bytes=_optional(max_bytes, v.byte_bound, "max_bytes"),
            max_response_bytes=_optional(max_response_bytes, v.byte_bound, "max_response_bytes"),
            timeout_ms=_optional(timeout_ms, v.positive, "timeout_ms"),
            trap_on_deny=bool(trap_on_deny),
        )
        if not grants.operations:
            raise GrantError("grant at least one operation")
        return grants


@dataclass(frozen=True, slots=True)
class AuthorityBlock:
    """Block 0: the grants, who signs them (informational, `authority(did)`), expiry."""

    grants: Grants
    authority: str | None
    expires: int | None


@dataclass(frozen=True, slots=True)
class Restriction:
    """One attenuation block. Every field narrows; None/False leaves that aspect alone."""

    expires: int | None = None
    exec: str | None = None
    flow: str | None = None
    step: str | None = None
    operations: frozenset[str] | None = None
    hosts: frozenset[str] | None = None
    methods: frozenset[str] | None = None
    key_prefixes: frozenset[str] | None = None
    codecs: frozenset[str] | None = None
    max_bytes: int | None = None
    max_response_bytes: int | None = None
    trap_on_deny: bool = False

    def is_empty(self) -> bool:
        return self == Restriction()


def _optional(value: int | None, check: Callable[[int, str], int], what: str) -> int | None:
    return None if value is None else check(value, what)


def lit(value: str) -> str:
    """A Datalog string literal. Values are validated upstream; this is the last guard."""
    if v.text(value, "string", max_len=1 << 16, allow_empty=True) != value:
        raise AssertionError("unreachable")
    return f'"{value}"'


def _set(values: Iterable[str]) -> str:
    return "{" + ", ".join(lit(x) for x in sorted(values)) + "}"


def _ops(values: Iterable[str]) -> list[str]:
    present = set(values)
    return [op for op in v.OPERATIONS if op in present]


def _expiry(seconds: int) -> str:
    return f"check if time($t), $t < {format_rfc3339(seconds)};"


def authority_source(block: AuthorityBlock) -> str:
    g = block.grants
    lines: list[str] = []
    if block.authority is not None:
        lines.append(f"authority({lit(block.authority)});")
    lines += [f"right({lit(op)});" for op in _ops(g.operations)]
    lines += [f"host_allowed({lit(h)});" for h in sorted(g.hosts)]
    lines += [f"method_allowed({lit(m)});" for m in sorted(g.methods)]
    lines += [f"key_prefix({lit(p)});" for p in sorted(g.key_prefixes)]
    lines += [f"codec_allowed({lit(c)});" for c in v.CODECS if c in g.codecs]
    if g.max_bytes is not None:
        lines.append(f"max_bytes({g.max_bytes});")
    if g.max_response_bytes is not None:
        lines.append(f"max_response_bytes({g.max_response_bytes});")
    if g.timeout_ms is not None:
        lines.append(f"timeout_ms({g.timeout_ms});")
    if g.trap_on_deny:
        lines.append("trap_on_deny(true);")
    if block.expires is not None:
        lines.append(_expiry(block.expires))
    return "\n".join(lines) + "\n"


def restriction_source(r: Restriction) -> str:
    lines: list[str] = []
    if r.trap_on_deny:
        lines.append("trap_on_deny(true);")
    if r.expires is not None:
        lines.append(_expiry(r.expires))
    for predicate, value in (("exec", r.exec), ("flow", r.flow), ("step", r.step)):
        if value is not None:
            lines.append(f"check if {predicate}({lit(value)});")
    if r.operations is not None:
        ops = "{" + ", ".join(lit(op) for op in _ops(r.operations)) + "}"
        lines.append(f"check if operation($op), {ops}.contains($op);")
    if r.hosts is not None:
        lines.append(
            'check if operation($op), $op != "http.fetch" or host($h), '
            f"{_set(r.hosts)}.contains($h);"
        )
    if r.methods is not None:
        lines.append(
            'check if operation($op), $op != "http.fetch" or method($m), '
            f"{_set(r.methods)}.contains($m);"
        )
    if r.key_prefixes is not None:
        alternatives = "".join(
            f" or key($k), $k.starts_with({lit(p)})" for p in sorted(r.key_prefixes)
        )
        lines.append(
            f'check if operation($op), !{{"state.get", "state.set"}}.contains($op){alternatives};'
        )
    if r.codecs is not None:
        lines.append(
            'check if operation($op), $op != "block.put" or codec($c), '
            f"{_set(r.codecs)}.contains($c);"
        )
    if r.max_bytes is not None:
        lines.append(f"reject if bytes($b), $b > {r.max_bytes};")
    if r.max_response_bytes is not None:
        lines.append(f"reject if response_bytes($b), $b > {r.max_response_bytes};")
    return "\n".join(lines) + "\n"
