"""The compiled form of a token: the effective bounds after every block, checked in
plain Python on each host call (the fast path of ADR 0003).

A token is compiled only when each block reads back (`recognize`) into arguments that
regenerate (`datalog`) the very same signed payload bytes. Then its Datalog is exactly
the vocabulary of docs/capabilities.md, whose meaning `Scope` implements; the property
tests check that it agrees with Biscuit's own authorization on random tokens and calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from qflow_node.core.capability import biscuit
from qflow_node.core.capability import vocabulary as v
from qflow_node.core.capability.datalog import (
    AuthorityBlock,
    Restriction,
    authority_source,
    restriction_source,
)
from qflow_node.core.capability.errors import Reason
from qflow_node.core.capability.instants import format_rfc3339
from qflow_node.core.capability.proto import ProtoError, block_payloads
from qflow_node.core.capability.recognize import read_authority, read_restriction

# Regenerated blocks are signed with this throwaway root: only payloads are compared.
_REGEN_SEED: Final = b"qflow capability regen root key!"

Denial = tuple[Reason, str]


@dataclass(frozen=True, slots=True)
class Scope:
    """What a token allows, all blocks combined. Immutable; built once per token."""

    rights: frozenset[str]  # authority rights minus operations any attenuation left out
    hosts: frozenset[str]  # http.fetch: authority hosts ∩ every attenuation's hosts
    methods: frozenset[str]
    codecs: frozenset[str]
    prefix_sets: tuple[frozenset[str], ...]  # a key must match one prefix of every set
    max_bytes: int | None
    max_response_bytes: int | None
    timeout_ms: int | None
    trap_on_deny: bool
    expires: int | None  # valid while now < expires (the earliest of all blocks)
    execs: frozenset[str]  # every exec/flow/step some attenuation requires
    flows: frozenset[str]
    steps: frozenset[str]
    authority: str | None  # the did the authority block names (informational)
    authority_rights: frozenset[str]  # the authority block's `right` facts

    @classmethod
    def of(cls, head: AuthorityBlock, restrictions: Sequence[Restriction]) -> Scope:
        g = head.grants
        rights, hosts, methods, codecs = g.operations, g.hosts, g.methods, g.codecs
        prefix_sets = [g.key_prefixes]
        trap = g.trap_on_deny
        max_bytes, max_response, expires = g.max_bytes, g.max_response_bytes, head.expires
        execs: set[str] = set()
        flows: set[str] = set()
        steps: set[str] = set()
        for r in restrictions:
            rights = rights if r.operations is None else rights & r.operations
            hosts = hosts if r.hosts is None else hosts & r.hosts
            methods = methods if r.methods is None else methods & r.methods
            codecs = codecs if r.codecs is None else codecs & r.codecs
            if r.key_prefixes is not None:
                prefix_sets.append(r.key_prefixes)
            trap = trap or r.trap_on_deny
            max_bytes = _min(max_bytes, r.max_bytes)
            max_response = _min(max_response, r.max_response_bytes)
            expires = _min(expires, r.expires)
            execs.update([r.exec] if r.exec is not None else [])
            flows.update([r.flow] if r.flow is not None else [])
            steps.update([r.step] if r.step is not None else [])
        return cls(
            rights=rights,
            hosts=hosts,
            methods=methods,
            codecs=codecs,
            prefix_sets=tuple(prefix_sets),
            max_bytes=max_bytes,
            max_response_bytes=max_response,
            timeout_ms=g.timeout_ms,
            trap_on_deny=trap,
            expires=expires,
            execs=frozenset(execs),
            flows=frozenset(flows),
            steps=frozenset(steps),
            authority=head.authority,
            authority_rights=g.operations,
        )

    def key_allowed(self, key: str) -> bool:
        return all(any(key.startswith(p) for p in prefixes) for prefixes in self.prefix_sets)

    def granted(self) -> frozenset[str]:
        """Operations for which some call can be allowed (ignoring time and context)."""
        return frozenset(op for op in self.rights if self._satisfiable(op))

    def _satisfiable(self, op: str) -> bool:
        if op == v.HTTP_FETCH:
            return bool(self.hosts and self.methods)
        if op in v.STATE_OPERATIONS:
            # Some key matches every set iff one of the prefixes itself does.
            return any(self.key_allowed(p) for prefixes in self.prefix_sets for p in prefixes)
        if op == v.BLOCK_PUT:
            return bool(self.codecs)
        return True

    def context_denial(
        self, now: int, exec: str | None, flow: str | None, step: str | None
    ) -> Denial | None:
        """Why no call at all can be allowed at `now` in this context, or None."""
        if self.expires is not None and not now < self.expires:
            return Reason.EXPIRED, f"the token expired at {format_rfc3339(self.expires)}"
        for reason, what, required, actual in (
            (Reason.NOT_FOR_THIS_EXEC, "execution", self.execs, exec),
            (Reason.NOT_FOR_THIS_FLOW, "flow", self.flows, flow),
            (Reason.NOT_FOR_THIS_STEP, "step", self.steps, step),
        ):
            for value in sorted(required):
                if value != actual:
                    here = "none" if actual is None else repr(actual)
                    return reason, f"the token is for {what} {value!r}, not {here}"
        return None

    def check(self, op: str, args: Mapping[str, str | int]) -> Denial | None:
        """Why this call (normalised arguments, see `authorizer`) is denied, or None."""
        if op not in self.rights:
            return Reason.NOT_GRANTED, f"the token does not grant {op}"
        if op == v.HTTP_FETCH:
            if args["host"] not in self.hosts:
                return Reason.HOST_NOT_ALLOWED, f"host {args['host']!r} is not allowed"
            if args["method"] not in self.methods:
                return Reason.METHOD_NOT_ALLOWED, f"method {args['method']!r} is not allowed"
        elif op in v.STATE_OPERATIONS:
            key = args["key"]
            if not (isinstance(key, str) and self.key_allowed(key)):
                return Reason.KEY_NOT_ALLOWED, f"key {key!r} is outside the allowed prefixes"
        elif op == v.BLOCK_PUT and args["codec"] not in self.codecs:
            return Reason.CODEC_NOT_ALLOWED, f"codec {args['codec']!r} is not allowed"
        size = args.get("bytes")
        if self.max_bytes is not None and isinstance(size, int) and size > self.max_bytes:
            return Reason.LIMIT_EXCEEDED, f"{size} bytes is over the bound of {self.max_bytes}"
        size = args.get("response_bytes")
        limit = self.max_response_bytes
        if limit is not None and isinstance(size, int) and size > limit:
            return Reason.LIMIT_EXCEEDED, f"a {size}-byte response is over the bound of {limit}"
        return None

    def to_json(self) -> dict[str, object]:
        return {
            "operations": [op for op in v.OPERATIONS if op in self.rights],
            "granted": [op for op in v.OPERATIONS if op in self.granted()],
            "hosts": sorted(self.hosts),
            "methods": sorted(self.methods),
            "key_prefixes": [sorted(prefixes) for prefixes in self.prefix_sets],
            "codecs": [c for c in v.CODECS if c in self.codecs],
            "max_bytes": self.max_bytes,
            "max_response_bytes": self.max_response_bytes,
            "timeout_ms": self.timeout_ms,
            "trap_on_deny": self.trap_on_deny,
            "expires": None if self.expires is None else format_rfc3339(self.expires),
            "exec": sorted(self.execs),
            "flow": sorted(self.flows),
            "step": sorted(self.steps),
        }


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


@lru_cache(maxsize=512)
def compile_scope(sources: tuple[str, ...], raw: bytes, external: bool) -> Scope | None:
    """The token's Scope if every block is exactly in the vocabulary, else None.

    `sources` are the printed blocks, `raw` the serialized token, `external` whether it
    has third-party blocks (their symbols and scopes differ: never compiled).
    """
    if external or not sources:
        return None
    head = read_authority(sources[0])
    restrictions = [read_restriction(source) for source in sources[1:]]
    if head is None or any(r is None for r in restrictions):
        return None
    readings = [r for r in restrictions if r is not None]
    try:
        regenerated = biscuit.build(authority_source(head), _REGEN_SEED)
        for r in readings:
            regenerated = regenerated.append(restriction_source(r))
        same = block_payloads(regenerated.to_bytes()) == block_payloads(raw)
    except (biscuit.BiscuitDatalogError, ProtoError):
        return None
    return Scope.of(head, readings) if same else None
