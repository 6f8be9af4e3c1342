"""A thin, typed wrapper over `biscuit_auth` (biscuit-python 0.4): the only module that
imports it, so the rest of the package never sees its loosely typed API.

biscuit-python's bundled stubs disagree with the binary (e.g. `PrivateKey.from_bytes`
takes an algorithm), so calls go through `_api: Any` and results are given real types
here. Ed25519 keys are Qflow actor keys: the 32-byte seed is a Biscuit private key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import biscuit_auth

_api: Any = biscuit_auth

# Biscuit's default evaluation time limit is 1 ms of wall clock: under load an honest
# request could be denied at random. The reference engine allows 50x that (still
# bounded); the compiled engine does not evaluate Datalog per call at all.
_TIME_LIMIT_FACTOR: Final = 50

Term = str | int | bool


class BiscuitFormatError(ValueError):
    """Bytes or text that do not decode as a Biscuit token."""


class BiscuitDatalogError(ValueError):
    """Datalog that biscuit refuses to parse or build."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One Biscuit authorization: allowed, or biscuit's failure message and, for
    diagnosis, the indices of the probe rules that derived nothing."""

    allowed: bool
    message: str
    unmet: tuple[int, ...] = ()


class _Token:
    """What every token view reads of the wrapped biscuit: its blocks' Datalog."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def block_count(self) -> int:
        return int(self._inner.block_count())

    def block_source(self, index: int) -> str:
        try:
            return str(self._inner.block_source(index))
        except (_api.BiscuitBlockError, _api.BiscuitValidationError) as exc:
            raise BiscuitFormatError(f"block {index}: {exc}") from None


class Unverified(_Token):
    """A decoded token whose signatures have not been checked."""

    __slots__ = ()

    def revocation_ids(self) -> list[str]:
        return [str(r) for r in self._inner.revocation_ids]

    def verify(self, public_key: bytes) -> Verified | None:
        """The verified token, or None if the signatures do not verify under `public_key`."""
        try:
            key = _api.PublicKey.from_bytes(public_key, _api.Algorithm.Ed25519)
            return Verified(self._inner.verify(key))
        except (_api.BiscuitValidationError, ValueError):
            return None


class Verified(_Token):
    """A token whose signature chain verified under a root public key. Immutable."""

    __slots__ = ()

    def to_bytes(self) -> bytes:
        return bytes(self._inner.to_bytes())

    def to_base64(self) -> str:
        return str(self._inner.to_base64())

    def append(self, source: str, parameters: Mapping[str, object] | None = None) -> Verified:
        try:
            return Verified(self._inner.append(_api.BlockBuilder(source, parameters)))
        except _api.DataLogError as exc:
            raise BiscuitDatalogError(str(exc)) from None

    def authorize(
        self, source: str, parameters: Mapping[str, Term], probes: Sequence[str] = ()
    ) -> Outcome:
        """Run an authorizer made of `source` (facts, checks, policies) against the token.

        On failure, each probe rule is queried on the same world (authority + authorizer
        facts): it tells which condition of a policy was not met.
        """
        try:
            builder = _api.AuthorizerBuilder(source, dict(parameters))
            limits = builder.limits()
            limits.max_time = limits.max_time * _TIME_LIMIT_FACTOR
            builder.set_limits(limits)
            authorizer = builder.build(self._inner)
        except _api.DataLogError as exc:
            raise BiscuitDatalogError(str(exc)) from None
        try:
            authorizer.authorize()
        except _api.AuthorizationError as exc:
            try:
                unmet = tuple(
                    i for i, rule in enumerate(probes) if not authorizer.query(_api.Rule(rule))
                )
            except _api.AuthorizationError:  # execution limits again
                unmet = ()
            return Outcome(False, str(exc), unmet)
        return Outcome(True, "")

    def query(self, rule: str) -> list[list[Term]]:
        """Terms of the facts `rule` derives from the authority block (trusted scope)."""
        try:
            authorizer = _api.AuthorizerBuilder("").build(self._inner)
            return [list(fact.terms) for fact in authorizer.query(_api.Rule(rule))]
        except _api.DataLogError as exc:
            raise BiscuitDatalogError(str(exc)) from None


def decode(text: str) -> Unverified:
    try:
        return Unverified(_api.UnverifiedBiscuit.from_base64(text))
    except (_api.BiscuitValidationError, _api.BiscuitSerializationError, ValueError) as exc:
        raise BiscuitFormatError(str(exc)) from None


def build(source: str, seed: bytes, parameters: Mapping[str, object] | None = None) -> Verified:
    """A new token whose authority block is `source`, signed with Ed25519 `seed`."""
    try:
        root = _api.PrivateKey.from_bytes(seed, _api.Algorithm.Ed25519)
        return Verified(_api.BiscuitBuilder(source, parameters).build(root))
    except _api.DataLogError as exc:
        raise BiscuitDatalogError(str(exc)) from None
