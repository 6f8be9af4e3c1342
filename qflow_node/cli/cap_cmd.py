"""`qflow cap`: issue, attenuate, inspect and verify capability tokens (Biscuit).

Tokens come as an argument, `-` (stdin) or `@FILE`. The authority is an actor of the
repo (`qflow id new authority`) or, where only its public key is needed, a did:key.
Unlike the pure core, this reads the clock: `--ttl` and `verify` use the current time
(`verify --at` overrides it). Exit codes: 0 ok, 1 the token is refused (`error: CODE:
why`), 2 usage or I/O.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import click

from qflow_node.cli.errors import EXIT_CHECK_FAILED, fail
from qflow_node.cli.options import repo_option
from qflow_node.core.capability import (
    MAX_TOKEN_CHARS,
    OPERATIONS,
    CapabilityError,
    GrantError,
    Grants,
    StepAuthorizer,
    attenuate,
    inspect,
    issue,
    parse_token,
)
from qflow_node.identity.keys import IdentityError, SigningKey, public_key_from_did
from qflow_node.identity.store import load_actor_key
from qflow_node.repo import RepoPaths

_DURATION: Final = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_UNITS: Final = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_INT_ARGS: Final = frozenset({"bytes", "response_bytes"})


# -- argument parsing ------------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """`90s`, `10m`, `1h30m`, `2d`, `500ms` -> a positive timedelta."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        fail(f"bad duration {text!r}: use e.g. 90s, 10m, 1h30m, 2d")
    total = sum((int(n) * _UNITS[u] for n, u in parts), timedelta())
    if total <= timedelta():
        fail(f"duration {text!r} must be positive")
    return total


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 / RFC 3339 time with a timezone (`2026-12-31T00:00:00Z`)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option}: {text!r} is not an ISO 8601 time (e.g. 2026-12-31T00:00:00Z)")
    if moment.utcoffset() is None:
        fail(f"{option}: {text!r} has no timezone; add Z or an offset like +02:00")
    return moment


def _expiry(expires: str | None, ttl: str | None, now: datetime) -> datetime | None:
    if expires is not None and ttl is not None:
        fail("give --expires or --ttl, not both")
    if expires is not None:
        moment = parse_time(expires, "--expires")
    elif ttl is not None:
        moment = now + parse_duration(ttl)
    else:
        return None
    if moment <= now:
        fail(f"the expiry {moment.isoformat()} is not in the future")
    return moment


def read_token(source: str) -> str:
    """TOKEN as given: literal text, `-` for stdin, `@FILE` for a file's content."""
    if source == "-":
        text = sys.stdin.read(MAX_TOKEN_CHARS + 1)
    elif source.startswith("@"):
        path = Path(source[1:])
        try:
            with path.open(encoding="utf-8") as handle:
                text = handle.read(MAX_TOKEN_CHARS + 1)
        except OSError as exc:
            fail(f"cannot read token file {path}: {exc.strerror or exc}")
        except UnicodeDecodeError:
            fail(f"token file {path} is not UTF-8 text")
    else:
        text = source
    return text.strip()


def resolve_authority(value: str, repo: Path) -> bytes:
    """The authority's public key: a did:key, or the name of an actor in the repo."""
    with _usage_errors():
        if value.startswith("did:"):
            key: bytes = public_key_from_did(value)
            return key
        return _actor_key(value, repo).public_key


def _actor_key(name: str, repo: Path) -> SigningKey:
    return load_actor_key(RepoPaths(repo.expanduser().absolute()), name)


def parse_call_args(pairs: tuple[str, ...]) -> dict[str, str | int]:
    """`--arg k=v` pairs; byte counts (and numeric levels) as integers."""
    args: dict[str, str | int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(f"--arg {pair!r}: expected NAME=VALUE")
        if name in args:
            fail(f"--arg {name} given twice")
        if name in _INT_ARGS or (name == "level" and value.isdigit()):
            if not value.isdigit():
                fail(f"--arg {name}={value!r}: expected a non-negative integer")
            args[name] = int(value)
        else:
            args[name] = value
    return args


@contextmanager
def _usage_errors() -> Iterator[None]:
    try:
        yield
    except (GrantError, IdentityError, OSError) as exc:
        fail(str(exc))


@contextmanager
def _token_errors() -> Iterator[None]:
    """A refused token: exit 1 with its reason code; bad arguments: exit 2."""
    try:
        yield
    except CapabilityError as exc:
        fail(f"{exc.reason.value}: {exc.message}", EXIT_CHECK_FAILED)
    except GrantError as exc:
        fail(str(exc))


def _now() -> datetime:
    return datetime.now(UTC)


# -- commands --------------------------------------------------------------------------------

authority_option = click.option(
    "--authority",
    "authority",
    required=True,
    help="The subnet authority: a did:key, or the name of an actor in the repo.",
)
op_option = click.option(
    "--op",
    "ops",
    multiple=True,
    type=click.Choice(OPERATIONS),
    help="An operation (repeatable).",
)
host_option = click.option("--host", "hosts", multiple=True, help="http.fetch host (repeatable).")
method_option = click.option(
    "--method", "methods", multiple=True, help="http.fetch method (repeatable)."
)
prefix_option = click.option(
    "--key-prefix",
    "key_prefixes",
    multiple=True,
    help="state.get/state.set key prefix (repeatable; '' for every key).",
)
codec_option = click.option(
    "--codec",
    "codecs",
    multiple=True,
    type=click.Choice(["raw", "dag-cbor"]),
    help="block.put codec (repeatable).",
)
max_bytes_option = click.option(
    "--max-bytes",
    type=click.IntRange(min=0),
    help="Bound on every call's bytes (request body, value, block, log message).",
)
max_response_option = click.option(
    "--max-response-bytes", type=click.IntRange(min=0), help="Bound on http.fetch responses."
)
expires_option = click.option("--expires", help="Expiry time, e.g. 2026-12-31T00:00:00Z.")
ttl_option = click.option("--ttl", help="Expiry as a duration from now, e.g. 1h, 10m, 2d.")
trap_option = click.option(
    "--trap-on-deny", is_flag=True, help="Trap the guest on a denied call (default: error code)."
)
token_argument = click.argument("token")


@click.group("cap")
def cap_group() -> None:
    """Capability tokens: what a step may do (Biscuit, signed by the subnet authority)."""


@cap_group.command("issue")
@repo_option
@authority_option
@op_option
@host_option
@method_option
@prefix_option
@codec_option
@max_bytes_option
@max_response_option
@click.option("--timeout", help="http.fetch timeout, e.g. 5s, 500ms.")
@expires_option
@ttl_option
@click.option("--no-expiry", is_flag=True, help="Issue a token that never expires.")
@trap_option
def issue_command(
    *,
    repo: Path,
    authority: str,
    ops: tuple[str, ...],
    hosts: tuple[str, ...],
    methods: tuple[str, ...],
    key_prefixes: tuple[str, ...],
    codecs: tuple[str, ...],
    max_bytes: int | None,
    max_response_bytes: int | None,
    timeout: str | None,
    expires: str | None,
    ttl: str | None,
    no_expiry: bool,
    trap_on_deny: bool,
) -> None:
    """Issue a token signed by the authority actor; print it.

    Nothing is implied: http.fetch needs --host and --method, state.* needs
    --key-prefix, block.put allows both codecs unless --codec is given.
    """
    if authority.startswith("did:"):
        fail("issuing needs the authority's private key: give its actor name, not a did")
    if not ops:
        fail("give at least one --op")
    if no_expiry and (expires or ttl):
        fail("--no-expiry contradicts --expires/--ttl")
    if not (no_expiry or expires or ttl):
        fail("give --expires or --ttl (or --no-expiry for a token that never expires)")
    _require_bounds(ops, hosts, methods, key_prefixes)
    expiry = _expiry(expires, ttl, _now())
    timeout_ms = None if timeout is None else parse_duration(timeout) // timedelta(milliseconds=1)
    with _usage_errors():
        grants = Grants.build(
            ops,
            hosts=hosts,
            methods=methods,
            key_prefixes=key_prefixes,
            codecs=codecs or None,
            max_bytes=max_bytes,
            max_response_bytes=max_response_bytes,
            timeout_ms=timeout_ms,
            trap_on_deny=trap_on_deny,
        )
        key = _actor_key(authority, repo)
        click.echo(issue(key, grants, expires=expiry))


def _require_bounds(
    ops: tuple[str, ...],
    hosts: tuple[str, ...],
    methods: tuple[str, ...],
    prefixes: tuple[str, ...],
) -> None:
    """Catch grants no call could use, which `Grants` accepts but a person never means."""
    if "http.fetch" in ops and not (hosts and methods):
        fail("--op http.fetch needs at least one --host and one --method")
    if {"state.get", "state.set"} & set(ops) and not prefixes:
        fail("--op state.get/state.set needs --key-prefix ('' allows every key)")


@cap_group.command("attenuate")
@repo_option
@token_argument
@authority_option
@click.option("--exec", "exec_id", help="Only for this execution (its CID).")
@click.option("--flow", help="Only for this flow.")
@click.option("--step", help="Only for this step.")
@op_option
@host_option
@method_option
@prefix_option
@codec_option
@max_bytes_option
@max_response_option
@expires_option
@ttl_option
@trap_option
def attenuate_command(
    *,
    repo: Path,
    token: str,
    authority: str,
    exec_id: str | None,
    flow: str | None,
    step: str | None,
    ops: tuple[str, ...],
    hosts: tuple[str, ...],
    methods: tuple[str, ...],
    key_prefixes: tuple[str, ...],
    codecs: tuple[str, ...],
    max_bytes: int | None,
    max_response_bytes: int | None,
    expires: str | None,
    ttl: str | None,
    trap_on_deny: bool,
) -> None:
    """Narrow TOKEN offline (a new block of checks); print the new token.

    The token is verified against the authority's public key first; narrowing never
    needs its private key.
    """
    text = read_token(token)
    key = resolve_authority(authority, repo)
    expiry = _expiry(expires, ttl, _now())
    with _token_errors():
        click.echo(
            attenuate(
                text,
                key,
                exec=exec_id,
                flow=flow,
                step=step,
                expires=expiry,
                operations=ops or None,
                hosts=hosts or None,
                methods=methods or None,
                key_prefixes=key_prefixes or None,
                codecs=codecs or None,
                max_bytes=max_bytes,
                max_response_bytes=max_response_bytes,
                trap_on_deny=trap_on_deny or None,
            )
        )


@cap_group.command("inspect")
@token_argument
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schemas/capability.v1.json).")
def inspect_command(token: str, as_json: bool) -> None:
    """Show what TOKEN says: its blocks and, if compiled, its effective bounds.

    Signatures are not checked here (use `verify`); the authority shown is the one the
    token claims.
    """
    text = read_token(token)
    with _token_errors():
        info = inspect(text)
    if as_json:
        click.echo(json.dumps(info))
        return
    _print_inspection(info)


def _print_inspection(info: dict[str, Any]) -> None:
    click.echo(f"authority: {info['authority'] or 'not named'} (claimed, not verified)")
    click.echo(f"engine: {info['engine']}")
    for block in info["blocks"]:
        click.echo(f"block {block['index']}:")
        for line in block["source"].splitlines():
            click.echo(f"  {line}")
    scope = info["scope"]
    if scope is None:
        click.echo("scope: outside the Qflow vocabulary (Biscuit decides each call)")
        return
    click.echo("scope:")
    for name in ("granted", "hosts", "methods", "codecs"):
        click.echo(f"  {name}: {', '.join(scope[name]) or '-'}")
    sets = [p for p in scope["key_prefixes"] if p]
    prefixes = " and ".join("(" + " | ".join(map(repr, p)) + ")" for p in sets)
    click.echo(f"  key prefixes: {prefixes or '-'}")
    for name in ("max_bytes", "max_response_bytes", "timeout_ms", "expires"):
        click.echo(f"  {name}: {'-' if scope[name] is None else scope[name]}")
    for name in ("exec", "flow", "step"):
        if scope[name]:
            click.echo(f"  {name}: {', '.join(scope[name])}")
    click.echo(f"  trap_on_deny: {str(scope['trap_on_deny']).lower()}")


@cap_group.command("verify")
@repo_option
@token_argument
@authority_option
@click.option("--exec", "exec_id", help="The execution the token is used in.")
@click.option("--flow", help="The flow the token is used in.")
@click.option("--step", help="The step the token is used in.")
@click.option("--at", "at", help="Check at this time instead of now (ISO 8601 with timezone).")
@click.option("--op", type=click.Choice(OPERATIONS), help="Also authorize one call of this op.")
@click.option("--arg", "call_args", multiple=True, help="A call argument NAME=VALUE (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def verify_command(
    *,
    repo: Path,
    token: str,
    authority: str,
    exec_id: str | None,
    flow: str | None,
    step: str | None,
    at: str | None,
    op: str | None,
    call_args: tuple[str, ...],
    as_json: bool,
) -> None:
    """Check TOKEN: signatures, expiry, context, and optionally one call (--op --arg).

    Exit 0 if valid (and the call allowed), 1 if refused, with the reason.
    """
    if call_args and op is None:
        fail("--arg needs --op")
    text = read_token(token)
    key = resolve_authority(authority, repo)
    now = _now() if at is None else parse_time(at, "--at")
    args = parse_call_args(call_args)
    try:
        parsed = parse_token(text, key)
        with _usage_errors():
            authorizer = StepAuthorizer.for_step(
                parsed, now=now, exec=exec_id, flow=flow, step=step
            )
    except CapabilityError as exc:
        _verdict(as_json, exc.reason.value, exc.message)
        return
    decision = authorizer.context_denial
    if op is not None and decision is None:
        decision = authorizer.authorize(op, args)
    if decision is not None and not decision.allowed:
        code = decision.code.value if decision.code is not None else "denied"
        _verdict(as_json, code, decision.reason)
        return
    summary = f"valid: issued by {parsed.authority}" + (f"; {op} allowed" if op else "")
    if as_json:
        click.echo(json.dumps({"valid": True, "code": None, "reason": summary}))
    else:
        click.echo(summary)


def _verdict(as_json: bool, code: str, reason: str) -> None:
    """Report a refusal and exit 1."""
    if as_json:
        click.echo(json.dumps({"valid": False, "code": code, "reason": reason}))
        raise SystemExit(EXIT_CHECK_FAILED)
    fail(f"{code}: {reason}", EXIT_CHECK_FAILED)
