"""Per-step authorization of host calls: `StepAuthorizer` and its `AuthDecision`s.

The sandbox builds one StepAuthorizer per step from a parsed token, the step's context
and `now`, then calls `authorize` on every host call. Tokens in the Qflow vocabulary run
on their compiled `Scope` (a few µs per call); any other valid token is authorized by
Biscuit itself on each call (~100-250 µs), so every token is honoured exactly (ADR 0003).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from qflow_node.core.capability import vocabulary as v
from qflow_node.core.capability.arguments import ArgumentError, normalise
from qflow_node.core.capability.biscuit import Outcome
from qflow_node.core.capability.datalog import FIRST_ALLOW_POLICY, POLICIES
from qflow_node.core.capability.errors import CapabilityError, Reason
from qflow_node.core.capability.instants import Instant, format_rfc3339, to_seconds
from qflow_node.core.capability.scope import Scope
from qflow_node.core.capability.token import Token, parse_token

Engine = Literal["auto", "biscuit"]

_CONTEXT_PREDICATES: Final = frozenset({"time", "exec", "flow", "step"})
# Reading biscuit-python 0.4's failure text (pinned <0.5) only picks a reason code for a
# denial Biscuit already made; it never turns a denial into an allow.
_PREDICATE: Final = re.compile(r"(?<![\w.$])([a-z_][a-z0-9_]*)\(")
_DENY_POLICY: Final = re.compile(r"a deny policy matched \(policy index: (\d+)\)")
_FAILED_CHECK: Final = re.compile(r"Check n°\d+ in block n°\d+: (.*?)(?=, Check n°|$)", re.S)


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """One host call's verdict. `trap`: the token asks to trap the guest on denial.

    `code` is the machine-readable reason (None when allowed); `reason` is for people.
    The sandbox answers LIMIT_EXCEEDED for `Reason.LIMIT_EXCEEDED`, DENIED otherwise.
    """

    allowed: bool
    reason: str
    trap: bool = False
    code: Reason | None = None


ALLOWED: Final = AuthDecision(True, "allowed")


class StepAuthorizer:
    """Decides the host calls of one step. Immutable; safe to share between threads."""

    __slots__ = ("_base", "_denial", "_granted", "_scope", "_token", "_trap")

    def __init__(
        self,
        *,
        token: Token | None,
        scope: Scope | None,
        granted: frozenset[str],
        trap: bool,
        denial: AuthDecision | None,
        base: tuple[str, dict[str, str | int | bool]],
    ) -> None:
        self._token = token
        self._scope = scope
        self._granted = granted
        self._trap = trap
        self._denial = denial
        self._base = base  # context facts for the Biscuit engine: source, parameters

    @classmethod
    def for_step(
        cls,
        token: Token,
        *,
        now: Instant,
        exec: str | None = None,
        flow: str | None = None,
        step: str | None = None,
        engine: Engine = "auto",
    ) -> StepAuthorizer:
        """The authorizer of one step; `now` is fixed for the step (core has no clock).

        `engine="biscuit"` forces per-call Biscuit authorization (the reference the
        compiled engine is tested against).
        """
        seconds = to_seconds(now, "now")
        for what, value in (("exec", exec), ("flow", flow), ("step", step)):
            if value is not None:
                v.label(value, what)
        base = _context_source(seconds, (exec, flow, step))
        scope = token.scope if engine == "auto" else None
        if scope is not None:
            trap = scope.trap_on_deny
            found = scope.context_denial(seconds, exec, flow, step)
            granted = scope.granted()
        else:
            trap = token.trap_on_deny
            found = _biscuit_context_denial(token, base)
            granted = token.authority_rights
        denial = None if found is None else AuthDecision(False, found[1], trap, found[0])
        return cls(token=token, scope=scope, granted=granted, trap=trap, denial=denial, base=base)

    @classmethod
    def without_token(cls) -> StepAuthorizer:
        """For a step that has no token: nothing granted, every call denied."""
        denial = AuthDecision(False, "the step has no capability token", False, Reason.NO_TOKEN)
        return cls(
            token=None, scope=None, granted=frozenset(), trap=False, denial=denial, base=("", {})
        )

    def granted(self) -> frozenset[str]:
        """Operations the token grants at all (attenuations that drop one remove it).

        Compiled tokens: operations for which some call can be allowed. Tokens outside
        the vocabulary: the authority's `right` facts (a superset; calls are still
        decided exactly). Time and context are not considered: an expired token still
        lists its operations, and each call is then denied with `expired`.
        """
        return self._granted

    @property
    def trap_on_deny(self) -> bool:
        return self._trap

    @property
    def context_denial(self) -> AuthDecision | None:
        """Set when no call can be allowed in this step (expired, other step…).

        Exact for compiled tokens; for others a diagnosis from the checks that only
        mention time/exec/flow/step (`authorize` still asks Biscuit on every call).
        """
        return self._denial

    @property
    def compiled(self) -> bool:
        return self._scope is not None

    @property
    def http_timeout_ms(self) -> int | None:
        """The token's http.fetch timeout (`timeout_ms`), if it sets one."""
        if self._scope is not None:
            return self._scope.timeout_ms
        return None if self._token is None else self._token.timeout_ms

    def authorize(self, operation: str, args: Mapping[str, str | int]) -> AuthDecision:
        """Allow or deny one host call with its actual arguments (see `arguments`)."""
        # The compiled engine decided time and context once; Biscuit re-checks every call.
        if self._denial is not None and (self._token is None or self._scope is not None):
            return self._denial
        try:
            facts = normalise(operation, args)
        except ArgumentError as exc:
            return AuthDecision(False, str(exc), self._trap, Reason.BAD_ARGUMENT)
        if self._scope is not None:
            found = self._scope.check(operation, facts)
            if found is None:
                return ALLOWED
            return AuthDecision(False, found[1], self._trap, found[0])
        return self._biscuit(operation, facts)

    def _biscuit(self, operation: str, facts: Mapping[str, str | int]) -> AuthDecision:
        assert self._token is not None
        source, context = self._base
        params: dict[str, str | int | bool] = {**context, "operation": operation}
        lines = [source, "operation({operation});"]
        for name in sorted(facts):
            lines.append(f"{name}({{arg_{name}}});")
            params[f"arg_{name}"] = facts[name]
        probes = _PROBES.get(operation, (_RIGHT,))
        outcome = self._token.biscuit.authorize(
            "\n".join(lines) + "\n" + POLICIES, params, [rule for _, rule in probes]
        )
        if outcome.allowed:
            return ALLOWED
        return AuthDecision(False, outcome.message, self._trap, _classify(outcome, probes))


def _context_source(
    now: int, context: tuple[str | None, str | None, str | None]
) -> tuple[str, dict[str, str | int | bool]]:
    lines = [f"time({format_rfc3339(now)});"]
    params: dict[str, str | int | bool] = {}
    for name, value in zip(("exec", "flow", "step"), context, strict=True):
        if value is not None:
            lines.append(f"{name}({{ctx_{name}}});")
            params[f"ctx_{name}"] = value
    return "\n".join(lines), params


# When several things are wrong, the compiled engine reports the first of these; the
# Biscuit engine picks by the same order so both give the same code.
_PRIORITY: Final = (
    Reason.TOO_COMPLEX,
    Reason.EXPIRED,
    Reason.NOT_FOR_THIS_EXEC,
    Reason.NOT_FOR_THIS_FLOW,
    Reason.NOT_FOR_THIS_STEP,
    Reason.NOT_GRANTED,
    Reason.HOST_NOT_ALLOWED,
    Reason.METHOD_NOT_ALLOWED,
    Reason.KEY_NOT_ALLOWED,
    Reason.CODEC_NOT_ALLOWED,
    Reason.LIMIT_EXCEEDED,
    Reason.CHECK_FAILED,
)
# Predicates a failed check mentions -> its reason, first match in this order.
_CHECK_REASONS: Final = (
    ("time", Reason.EXPIRED),
    ("exec", Reason.NOT_FOR_THIS_EXEC),
    ("flow", Reason.NOT_FOR_THIS_FLOW),
    ("step", Reason.NOT_FOR_THIS_STEP),
    ("bytes", Reason.LIMIT_EXCEEDED),
    ("response_bytes", Reason.LIMIT_EXCEEDED),
    ("host", Reason.HOST_NOT_ALLOWED),
    ("method", Reason.METHOD_NOT_ALLOWED),
    ("key", Reason.KEY_NOT_ALLOWED),
    ("codec", Reason.CODEC_NOT_ALLOWED),
    ("operation", Reason.NOT_GRANTED),
)
# The conditions of each operation's allow policy, as rules: one that derives nothing
# names what the authority block does not allow.
_RIGHT: Final = (Reason.NOT_GRANTED, "probe(true) <- operation($op), right($op)")
_PROBES: Final[dict[str, tuple[tuple[Reason, str], ...]]] = {
    v.HTTP_FETCH: (
        _RIGHT,
        (Reason.HOST_NOT_ALLOWED, "probe(true) <- host($h), host_allowed($h)"),
        (Reason.METHOD_NOT_ALLOWED, "probe(true) <- method($m), method_allowed($m)"),
    ),
    v.STATE_GET: (
        _RIGHT,
        (Reason.KEY_NOT_ALLOWED, "probe(true) <- key($k), key_prefix($p), $k.starts_with($p)"),
    ),
    v.BLOCK_PUT: (
        _RIGHT,
        (Reason.CODEC_NOT_ALLOWED, "probe(true) <- codec($c), codec_allowed($c)"),
    ),
}
_PROBES[v.STATE_SET] = _PROBES[v.STATE_GET]


def _check_reason(check: str) -> Reason:
    """The reason code of a failed check, from the predicates it mentions."""
    predicates = set(_PREDICATE.findall(check))
    for predicate, reason in _CHECK_REASONS:
        if predicate in predicates:
            return reason
    return Reason.CHECK_FAILED


def _classify(outcome: Outcome, probes: Sequence[tuple[Reason, str]]) -> Reason:
    if "execution limits" in outcome.message:
        return Reason.TOO_COMPLEX
    found = {_check_reason(check) for check in _FAILED_CHECK.findall(outcome.message)}
    found.update(probes[i][0] for i in outcome.unmet)
    deny = _DENY_POLICY.search(outcome.message)
    if deny is not None and int(deny.group(1)) < FIRST_ALLOW_POLICY:
        found.add(Reason.LIMIT_EXCEEDED)
    return min(found, key=_PRIORITY.index, default=Reason.NOT_GRANTED)


def _biscuit_context_denial(
    token: Token, base: tuple[str, dict[str, str | int | bool]]
) -> tuple[Reason, str] | None:
    source, params = base
    outcome = token.biscuit.authorize(source + "\nallow if true;\n", params)
    if outcome.allowed:
        return None
    for check in _FAILED_CHECK.findall(outcome.message):
        if set(_PREDICATE.findall(check)) <= _CONTEXT_PREDICATES:
            return _check_reason(check), f"check failed: {check}"
    return None


def verify(
    token: str,
    authority_public_key: bytes,
    *,
    now: Instant,
    exec: str | None = None,
    flow: str | None = None,
    step: str | None = None,
) -> None:
    """Raise CapabilityError unless `token` is valid for this authority, time and context."""
    parsed = parse_token(token, authority_public_key)
    denial = StepAuthorizer.for_step(parsed, now=now, exec=exec, flow=flow, step=step)
    if denial.context_denial is not None:
        found = denial.context_denial
        raise CapabilityError(found.code or Reason.CHECK_FAILED, found.reason)
