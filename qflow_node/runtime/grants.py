"""Capability tokens for steps run by this node: the node is the authority of its own
local runs (a subnet token replaces it in the distributed runtime), and each step gets
exactly what its `capabilities` declare."""

from __future__ import annotations

from qflow_node import clock
from qflow_node.core.capability import Grants, StepAuthorizer, issue, parse_token
from qflow_node.core.flow import CapabilityIR
from qflow_node.identity.keys import SigningKey

_TTL_S = 3600


class LocalAuthority:
    """Issues and caches one token per distinct capability list."""

    def __init__(self, key: SigningKey) -> None:
        self._key = key
        self._tokens: dict[str, str] = {}

    def authorizer(
        self, capabilities: list[CapabilityIR], *, exec: str, step: str
    ) -> StepAuthorizer | None:
        if not capabilities:
            return None
        now = int(clock.wall_s())
        cache_key = repr(capabilities)
        token = self._tokens.get(cache_key)
        if token is None:
            token = issue(self._key, _grants(capabilities), expires=now + _TTL_S)
            self._tokens[cache_key] = token
        parsed = parse_token(token, self._key.public_key)
        return StepAuthorizer.for_step(parsed, now=now)


def _grants(capabilities: list[CapabilityIR]) -> Grants:
    ops: list[str] = []
    hosts: list[str] = []
    methods: list[str] = []
    prefixes: list[str] = []
    codecs: list[str] | None = None
    max_bytes: int | None = None
    max_response: int | None = None
    for cap in capabilities:
        ops.append(cap["op"])
        hosts += cap.get("hosts", [])
        methods += cap.get("methods", [])
        prefixes += cap.get("key_prefixes", [])
        if "codecs" in cap:
            codecs = [*(codecs or []), *cap["codecs"]]
        bound = cap.get("max_bytes")
        if bound is not None:
            max_bytes = bound if max_bytes is None else max(max_bytes, bound)
        bound = cap.get("max_response_bytes")
        if bound is not None:
            max_response = bound if max_response is None else max(max_response, bound)
    return Grants.build(
        ops,
        hosts=hosts,
        methods=methods,
        key_prefixes=prefixes,
        codecs=codecs,
        max_bytes=max_bytes,
        max_response_bytes=max_response,
    )
