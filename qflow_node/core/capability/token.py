"""Tokens: issue, attenuate, parse (verify signatures), inspect.

A token is a Biscuit (base64url, padded) whose authority block is signed with the
subnet authority's Ed25519 key. Issuing and attenuating are offline: anyone holding a
token can append a block, and a block can only add checks (docs/capabilities.md).

Biscuit draws a fresh ephemeral key pair from the OS for each new block, so the bytes
of an issued or attenuated token differ from run to run; parsing, compiling and
authorizing are deterministic.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

from qflow_node.core.capability import biscuit as bx
from qflow_node.core.capability import vocabulary as v
from qflow_node.core.capability.datalog import (
    AuthorityBlock,
    Grants,
    Restriction,
    authority_source,
    restriction_source,
)
from qflow_node.core.capability.errors import CapabilityError, GrantError, Reason
from qflow_node.core.capability.instants import Instant, format_rfc3339, to_seconds
from qflow_node.core.capability.proto import ProtoError, has_third_party_blocks
from qflow_node.core.capability.scope import Scope, compile_scope
from qflow_node.identity.keys import (
    IdentityError,
    SigningKey,
    did_from_public_key,
    public_key_from_did,
)

MAX_TOKEN_CHARS: Final = 65_536
MAX_BLOCKS: Final = 32
INSPECT_FORMAT: Final = "qflow.capability.inspect/1"

_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_AUTHORITY_FACT: Final = re.compile(r'authority\("(did:key:z[1-9A-HJ-NP-Za-km-z]{1,64})"\);')


@dataclass(frozen=True, slots=True, eq=False)
class Token:
    """A token whose signatures verified under `authority_public_key`. Immutable."""

    text: str = field(repr=False)
    authority_public_key: bytes
    biscuit: bx.Verified = field(repr=False)
    sources: tuple[str, ...] = field(repr=False)
    # The compiled bounds, or None when the token is outside the Qflow vocabulary.
    scope: Scope | None
    authority_rights: frozenset[str]
    trap_on_deny: bool
    timeout_ms: int | None

    @property
    def authority(self) -> str:
        return did_from_public_key(self.authority_public_key)

    @property
    def block_count(self) -> int:
        return len(self.sources)


def _malformed(message: str) -> CapabilityError:
    return CapabilityError(Reason.MALFORMED, message)


def _decode(token: str) -> tuple[bx.Unverified, bytes]:
    """Decode without checking signatures; refuses what is not a token at all."""
    if not isinstance(token, str):
        raise _malformed(f"a token is a string, got {type(token).__name__}")
    if not token:
        raise _malformed("the token is empty")
    if len(token) > MAX_TOKEN_CHARS:
        raise _malformed(f"the token is longer than {MAX_TOKEN_CHARS} characters")
    if not _BASE64URL.fullmatch(token):
        raise _malformed("the token is not base64url text")
    try:
        raw = base64.urlsafe_b64decode(token)
        unverified = bx.decode(token)
    except (binascii.Error, bx.BiscuitFormatError) as exc:
        raise _malformed(f"not a Biscuit token ({exc})") from None
    count = unverified.block_count()
    if count > MAX_BLOCKS:
        raise _malformed(f"the token has {count} blocks; at most {MAX_BLOCKS} are accepted")
    return unverified, raw


def _sources(token: bx.Unverified | bx.Verified) -> tuple[str, ...]:
    try:
        return tuple(token.block_source(i) for i in range(token.block_count()))
    except bx.BiscuitFormatError as exc:
        raise _malformed(f"unreadable block ({exc})") from None


def _claimed_authority(token: bx.Unverified) -> bytes | None:
    """The key named by the authority block's `authority(did)` fact, if any."""
    try:
        authority_source = token.block_source(0)
    except bx.BiscuitFormatError:
        return None
    for line in authority_source.split("\n"):
        if match := _AUTHORITY_FACT.fullmatch(line):
            try:
                return public_key_from_did(match.group(1))
            except IdentityError:
                return None
    return None


def _checked_key(public_key: bytes) -> bytes:
    try:
        did_from_public_key(public_key)
    except IdentityError as exc:
        raise GrantError(f"bad authority public key: {exc}") from None
    return public_key


def parse_token(token: str, authority_public_key: bytes) -> Token:
    """Decode `token` and verify its signature chain under the authority's key.

    Raises CapabilityError: `malformed` (not a token, too big, non-canonical encoding),
    `wrong_authority` (it verifies under the key its `authority` fact names, which is
    another one), `forged` (its signatures do not verify). Time and context are checked
    later, per step (`StepAuthorizer.for_step`, `verify`).
    """
    return _parse(token, _checked_key(authority_public_key))


@lru_cache(maxsize=256)
def _parse(token: str, authority_public_key: bytes) -> Token:
    unverified, raw = _decode(token)
    verified = unverified.verify(authority_public_key)
    if verified is None:
        claimed = _claimed_authority(unverified)
        if (
            claimed is not None
            and claimed != authority_public_key
            and unverified.verify(claimed) is not None
        ):
            raise CapabilityError(
                Reason.WRONG_AUTHORITY,
                f"signed by {did_from_public_key(claimed)}, "
                f"not by {did_from_public_key(authority_public_key)}",
            )
        raise CapabilityError(
            Reason.FORGED,
            f"its signatures do not verify under {did_from_public_key(authority_public_key)}",
        )
    # Protobuf decoding tolerates some bit flips (unknown fields); re-encoding tells.
    if verified.to_base64() != token:
        raise _malformed("non-canonical encoding (the token was altered)")
    sources = _sources(verified)
    try:
        scope = compile_scope(sources, raw, has_third_party_blocks(raw))
    except ProtoError as exc:
        raise _malformed(f"unreadable token structure ({exc})") from None
    if scope is not None:
        rights, trap, timeout = scope.authority_rights, scope.trap_on_deny, scope.timeout_ms
    else:
        rights, trap, timeout = _authority_facts(verified, sources)
    return Token(
        text=token,
        authority_public_key=authority_public_key,
        biscuit=verified,
        sources=sources,
        scope=scope,
        authority_rights=rights,
        trap_on_deny=trap,
        timeout_ms=timeout,
    )


def _authority_facts(
    token: bx.Verified, sources: tuple[str, ...]
) -> tuple[frozenset[str], bool, int | None]:
    """Rights, trap flag and timeout of a token outside the vocabulary, asked of Biscuit."""
    rights = frozenset(
        t[0] for t in token.query("data($op) <- right($op)") if t and t[0] in v.OPERATIONS
    )
    trap = any(t == [True] for t in token.query("data($x) <- trap_on_deny($x)"))
    # Attenuation facts are invisible to the authorizer; trapping is only ever stricter,
    # so a line reading `trap_on_deny(true);` in any block turns it on.
    trap = trap or any("\ntrap_on_deny(true);\n" in f"\n{s}" for s in sources[1:])
    timeouts = [
        t[0]
        for t in token.query("data($n) <- timeout_ms($n)")
        if t and isinstance(t[0], int) and not isinstance(t[0], bool) and t[0] > 0
    ]
    return rights, trap, min(timeouts, default=None)


def issue(authority: SigningKey, grants: Grants, *, expires: Instant | None) -> str:
    """A new token granting `grants`, signed by `authority` (base64url text).

    `expires`: the token is valid while `now < expires` (whole seconds, UTC).
    """
    if not isinstance(grants, Grants):
        raise GrantError(f"grants must be Grants (see Grants.build), got {type(grants).__name__}")
    seconds = None if expires is None else to_seconds(expires, "expires")
    source = authority_source(AuthorityBlock(grants, authority.did, seconds))
    return bx.build(source, authority.seed).to_base64()


def _optional_set(
    values: Iterable[str] | None, check: Callable[[str], str], what: str
) -> frozenset[str] | None:
    if values is None:
        return None
    result = v.value_set(values, check, what)
    if not result:
        raise GrantError(f"{what}: give at least one (an empty list would allow nothing)")
    return result


def attenuate(
    token: str,
    authority_public_key: bytes,
    *,
    exec: str | None = None,
    flow: str | None = None,
    step: str | None = None,
    expires: Instant | None = None,
    operations: Iterable[str] | None = None,
    hosts: Iterable[str] | None = None,
    methods: Iterable[str] | None = None,
    key_prefixes: Iterable[str] | None = None,
    codecs: Iterable[str] | None = None,
    max_bytes: int | None = None,
    max_response_bytes: int | None = None,
    trap_on_deny: bool | None = None,
) -> str:
    """`token` with one more block that narrows it. Offline: no authority secret needed.

    The token is verified first (CapabilityError as `parse_token`). Each argument adds a
    check; a check can only deny more, never allow more. Asking for something the token
    does not have (another host, a later expiry…) is refused with GrantError rather
    than silently producing a useless token.
    """
    parsed = parse_token(token, authority_public_key)
    restriction = Restriction(
        expires=None if expires is None else to_seconds(expires, "expires"),
        exec=None if exec is None else v.label(exec, "exec"),
        flow=None if flow is None else v.label(flow, "flow"),
        step=None if step is None else v.label(step, "step"),
        operations=_optional_set(operations, v.operation, "operations"),
        hosts=_optional_set(hosts, v.host, "hosts"),
        methods=_optional_set(methods, v.method, "methods"),
        key_prefixes=_optional_set(key_prefixes, v.key_prefix, "key prefixes"),
        codecs=_optional_set(codecs, v.codec, "codecs"),
        max_bytes=None if max_bytes is None else v.byte_bound(max_bytes, "max_bytes"),
        max_response_bytes=(
            None
            if max_response_bytes is None
            else v.byte_bound(max_response_bytes, "max_response_bytes")
        ),
        trap_on_deny=bool(trap_on_deny),
    )
    if restriction.is_empty():
        raise GrantError("nothing to attenuate: give at least one restriction")
    if parsed.block_count >= MAX_BLOCKS:
        raise GrantError(f"the token already has {MAX_BLOCKS} blocks")
    _refuse_widening(parsed, restriction)
    return parsed.biscuit.append(restriction_source(restriction)).to_base64()


def _refuse_widening(token: Token, r: Restriction) -> None:
    scope = token.scope
    rights = token.authority_rights if scope is None else scope.rights
    if r.operations is not None and (extra := r.operations - rights):
        raise GrantError(f"cannot widen: the token does not grant {', '.join(sorted(extra))}")
    if scope is None:
        return  # outside the vocabulary: the new checks still only narrow
    for what, asked, have in (
        ("hosts", r.hosts, scope.hosts),
        ("methods", r.methods, scope.methods),
        ("codecs", r.codecs, scope.codecs),
    ):
        if asked is not None and (extra := asked - have):
            raise GrantError(f"cannot widen: the token allows no {what} {', '.join(sorted(extra))}")
    if r.key_prefixes is not None:
        outside = sorted(p for p in r.key_prefixes if not scope.key_allowed(p))
        if outside:
            raise GrantError(f"cannot widen: key prefixes {outside} are outside the token's")
    for what, asked_bound, have_bound in (
        ("max_bytes", r.max_bytes, scope.max_bytes),
        ("max_response_bytes", r.max_response_bytes, scope.max_response_bytes),
    ):
        if asked_bound is not None and have_bound is not None and asked_bound > have_bound:
            raise GrantError(f"cannot widen: {what} is already {have_bound}")
    if r.expires is not None and scope.expires is not None and r.expires > scope.expires:
        raise GrantError(f"cannot widen: the token expires at {format_rfc3339(scope.expires)}")
    for what, asked_name, have_names in (
        ("exec", r.exec, scope.execs),
        ("flow", r.flow, scope.flows),
        ("step", r.step, scope.steps),
    ):
        if asked_name is not None and have_names - {asked_name}:
            raise GrantError(f"the token is already bound to {what} {sorted(have_names)[0]!r}")


def _statements(source: str) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {"facts": [], "rules": [], "checks": []}
    for line in source.split("\n"):
        if not line:
            continue
        if line.startswith(("check if ", "check all ", "reject if ")):
            kinds["checks"].append(line)
        elif " <- " in line:
            kinds["rules"].append(line)
        else:
            kinds["facts"].append(line)
    return kinds


def inspect(token: str) -> dict[str, object]:
    """What a token says, without checking its signatures (there is no key here).

    Raises CapabilityError(`malformed`) for what is not a token. Holds nothing secret:
    a token carries no private key but the ephemeral one that lets holders attenuate,
    which this does not show.
    """
    unverified, raw = _decode(token)
    sources = _sources(unverified)
    try:
        scope = compile_scope(sources, raw, has_third_party_blocks(raw))
    except ProtoError as exc:
        raise _malformed(f"unreadable token structure ({exc})") from None
    claimed = _claimed_authority(unverified)
    return {
        "format": INSPECT_FORMAT,
        "verified": False,
        "authority": None if claimed is None else did_from_public_key(claimed),
        "engine": "biscuit" if scope is None else "compiled",
        "revocation_ids": unverified.revocation_ids(),
        "blocks": [
            {"index": i, "source": source, **_statements(source)}
            for i, source in enumerate(sources)
        ],
        "scope": None if scope is None else scope.to_json(),
    }
