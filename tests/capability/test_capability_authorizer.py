"""StepAuthorizer: every bound, every context, both engines, by exact reason code."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from qflow_node.core.capability import (
    AuthDecision,
    CapabilityError,
    Engine,
    Grants,
    Reason,
    StepAuthorizer,
    Token,
    attenuate,
    issue,
    parse_token,
    verify,
)
from qflow_node.core.capability.testing import (
    AUTHORITY,
    JAN_2026,
    JAN_2027,
    JAN_2030,
    both_engines,
    hand_written,
    http_args,
)

KEY = AUTHORITY.public_key
ALL_GRANTS = Grants.build(
    ["http.fetch", "state.get", "state.set", "block.get", "block.put", "log"],
    hosts=["api.example.com", "cdn.example.com"],
    methods=["GET", "POST"],
    key_prefixes=["orders/", "carts/"],
    codecs=["raw"],
    max_bytes=1000,
    max_response_bytes=5000,
    timeout_ms=2500,
)


def parsed(
    grants: Grants = ALL_GRANTS, *, expires: int | None = JAN_2030, **narrow: object
) -> Token:
    text = issue(AUTHORITY, grants, expires=expires)
    if narrow:
        text = attenuate(text, KEY, **narrow)  # type: ignore[arg-type]
    return parse_token(text, KEY)


def decide(
    token: Token, operation: str, args: dict[str, str | int], **context: object
) -> AuthDecision:
    """Both engines must agree on allowed/trap and on the reason code; return the fast one."""
    fast, slow = both_engines(token, operation, args, **context)  # type: ignore[arg-type]
    assert (fast.allowed, fast.trap, fast.code) == (slow.allowed, slow.trap, slow.code), (
        fast,
        slow,
    )
    return fast


def code(
    token: Token, operation: str, args: dict[str, str | int], **context: object
) -> Reason | None:
    return decide(token, operation, args, **context).code


# -- no token, expiry, context ---------------------------------------------------------------


def test_without_a_token_nothing_is_granted_and_every_call_is_denied() -> None:
    authorizer = StepAuthorizer.without_token()
    assert authorizer.granted() == frozenset()
    decision = authorizer.authorize("log", {"level": 1, "bytes": 3})
    assert decision == AuthDecision(
        False, "the step has no capability token", False, Reason.NO_TOKEN
    )
    assert authorizer.authorize("bogus", {}).code is Reason.NO_TOKEN


def test_a_token_is_valid_until_the_second_it_expires() -> None:
    token = parsed(expires=JAN_2027)
    assert code(token, "log", {"level": 1, "bytes": 1}, now=JAN_2027 - 1) is None
    assert code(token, "log", {"level": 1, "bytes": 1}, now=JAN_2027) is Reason.EXPIRED
    late = datetime(2027, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC)
    assert code(token, "log", {"level": 1, "bytes": 1}, now=late) is Reason.EXPIRED


def test_an_attenuation_can_expire_earlier_than_the_authority() -> None:
    token = parsed(expires=JAN_2030)
    narrowed = parse_token(attenuate(token.text, KEY, expires=JAN_2027), KEY)
    assert code(narrowed, "log", {"level": 0, "bytes": 0}, now=JAN_2026) is None
    assert code(narrowed, "log", {"level": 0, "bytes": 0}, now=JAN_2027) is Reason.EXPIRED
    assert code(token, "log", {"level": 0, "bytes": 0}, now=JAN_2027) is None


def test_an_expired_token_still_lists_its_operations_but_denies_every_call() -> None:
    authorizer = StepAuthorizer.for_step(parsed(expires=JAN_2026), now=JAN_2027)
    assert "log" in authorizer.granted()
    assert authorizer.context_denial is not None
    assert authorizer.context_denial.code is Reason.EXPIRED
    assert authorizer.authorize("log", {"level": 0, "bytes": 0}).code is Reason.EXPIRED


@pytest.mark.parametrize(
    ("bound", "context", "reason"),
    [
        ({"step": "fetch"}, {"step": "store"}, Reason.NOT_FOR_THIS_STEP),
        ({"step": "fetch"}, {}, Reason.NOT_FOR_THIS_STEP),
        ({"flow": "orders"}, {"flow": "refunds", "step": "fetch"}, Reason.NOT_FOR_THIS_FLOW),
        ({"exec": "bafyexec1"}, {"exec": "bafyexec2"}, Reason.NOT_FOR_THIS_EXEC),
        ({"exec": "bafyexec1", "step": "fetch"}, {"exec": "bafyexec1"}, Reason.NOT_FOR_THIS_STEP),
    ],
)
def test_a_token_for_another_step_flow_or_exec_is_denied(
    bound: dict[str, Any], context: dict[str, object], reason: Reason
) -> None:
    token = parsed(ALL_GRANTS, **bound)
    assert code(token, "http.fetch", http_args(), **context) is reason
    assert code(token, "http.fetch", http_args(), **bound) is None


def test_two_attenuations_for_different_steps_allow_no_step() -> None:
    first = attenuate(issue(AUTHORITY, ALL_GRANTS, expires=None), KEY, step="a")
    # attenuate() refuses to rebind; a hand-appended block can still say it.
    token = parse_token(first, KEY)
    both = token.biscuit.append('check if step("b");\n').to_base64()
    twice = parse_token(both, KEY)
    assert twice.scope is not None
    for step in ("a", "b"):
        assert code(twice, "log", {"level": 0, "bytes": 0}, step=step) is Reason.NOT_FOR_THIS_STEP


# -- argument bounds -------------------------------------------------------------------------


def test_http_fetch_host_method_and_byte_bounds() -> None:
    token = parsed()
    assert code(token, "http.fetch", http_args()) is None
    assert code(token, "http.fetch", http_args("cdn.example.com", "POST", 1000)) is None
    assert code(token, "http.fetch", http_args("evil.example")) is Reason.HOST_NOT_ALLOWED
    assert code(token, "http.fetch", http_args(method="DELETE")) is Reason.METHOD_NOT_ALLOWED
    assert code(token, "http.fetch", http_args(size=1001)) is Reason.LIMIT_EXCEEDED
    response = {**http_args(), "response_bytes": 5000}
    assert code(token, "http.fetch", response) is None
    response["response_bytes"] = 5001
    assert code(token, "http.fetch", response) is Reason.LIMIT_EXCEEDED
    # The after-response check may leave the request's size out.
    del response["bytes"]
    assert code(token, "http.fetch", response) is Reason.LIMIT_EXCEEDED
    response["response_bytes"] = 10
    assert code(token, "http.fetch", response) is None


def test_hosts_and_methods_are_compared_case_insensitively_in_ascii() -> None:
    token = parsed()
    args: dict[str, str | int] = {
        "host": "API.Example.COM",
        "method": "get",
        "url": "https://API.example.com/",
        "bytes": 0,
    }
    assert code(token, "http.fetch", args) is None


def test_attenuated_hosts_methods_and_bytes_narrow() -> None:
    token = parsed(hosts=["cdn.example.com"], methods=["GET"], max_bytes=10, max_response_bytes=20)
    assert code(token, "http.fetch", http_args("cdn.example.com", size=10)) is None
    assert code(token, "http.fetch", http_args()) is Reason.HOST_NOT_ALLOWED
    assert (
        code(token, "http.fetch", http_args("cdn.example.com", "POST")) is Reason.METHOD_NOT_ALLOWED
    )
    assert code(token, "http.fetch", http_args("cdn.example.com", size=11)) is Reason.LIMIT_EXCEEDED
    over = {**http_args("cdn.example.com"), "response_bytes": 21}
    assert code(token, "http.fetch", over) is Reason.LIMIT_EXCEEDED
    # Other operations are untouched by http-only restrictions.
    assert code(token, "state.get", {"key": "orders/1"}) is None


def test_state_keys_must_start_with_an_allowed_prefix() -> None:
    token = parsed()
    assert code(token, "state.get", {"key": "orders/42"}) is None
    assert code(token, "state.set", {"key": "carts/7", "bytes": 10}) is None
    assert code(token, "state.get", {"key": "orders"}) is Reason.KEY_NOT_ALLOWED
    assert code(token, "state.set", {"key": "users/1", "bytes": 1}) is Reason.KEY_NOT_ALLOWED
    assert code(token, "state.set", {"key": "orders/1", "bytes": 1001}) is Reason.LIMIT_EXCEEDED


def test_attenuated_prefixes_must_all_be_met() -> None:
    token = parsed(key_prefixes=["orders/2026/", "carts/eu/"])
    assert code(token, "state.get", {"key": "orders/2026/1"}) is None
    assert code(token, "state.get", {"key": "carts/eu/9"}) is None
    assert code(token, "state.get", {"key": "orders/2025/1"}) is Reason.KEY_NOT_ALLOWED
    assert code(token, "state.get", {"key": "carts/us/1"}) is Reason.KEY_NOT_ALLOWED


def test_an_empty_prefix_allows_every_key() -> None:
    token = parsed(Grants.build(["state.get"], key_prefixes=[""]))
    assert code(token, "state.get", {"key": ""}) is None
    assert code(token, "state.get", {"key": "anything/at/all"}) is None


def test_block_put_codec_and_size_bounds() -> None:
    token = parsed()
    assert code(token, "block.put", {"codec": "raw", "bytes": 1000}) is None
    assert code(token, "block.put", {"codec": "dag-cbor", "bytes": 1}) is Reason.CODEC_NOT_ALLOWED
    assert code(token, "block.put", {"codec": "raw", "bytes": 1001}) is Reason.LIMIT_EXCEEDED
    assert code(token, "block.get", {"cid": "bafkreigh2akiscaildc"}) is None
    both = parsed(Grants.build(["block.put"]))  # both codecs by default
    assert code(both, "block.put", {"codec": "dag-cbor", "bytes": 1}) is None
    narrowed = parsed(Grants.build(["block.put"]), codecs=["dag-cbor"])
    assert code(narrowed, "block.put", {"codec": "raw", "bytes": 1}) is Reason.CODEC_NOT_ALLOWED


def test_log_is_bounded_by_max_bytes() -> None:
    token = parsed()
    assert code(token, "log", {"level": 3, "bytes": 1000}) is None
    assert code(token, "log", {"level": "info", "bytes": 1000}) is None
    assert code(token, "log", {"level": 3, "bytes": 1001}) is Reason.LIMIT_EXCEEDED


def test_without_byte_bounds_sizes_are_not_limited_by_the_token() -> None:
    token = parsed(Grants.build(["log"]))
    assert code(token, "log", {"level": 0, "bytes": (1 << 63) - 1}) is None


# -- operations, granted() -------------------------------------------------------------------


def test_an_operation_not_granted_is_denied() -> None:
    token = parsed(Grants.build(["log"]))
    assert code(token, "state.get", {"key": "x"}) is Reason.NOT_GRANTED
    assert code(token, "http.fetch", http_args()) is Reason.NOT_GRANTED


def test_granted_is_what_the_token_grants_after_attenuation() -> None:
    every = {"http.fetch", "state.get", "state.set", "block.get", "block.put", "log"}
    assert StepAuthorizer.for_step(parsed(), now=JAN_2026).granted() == every
    narrowed = parsed(operations=["log", "state.get"])
    assert StepAuthorizer.for_step(narrowed, now=JAN_2026).granted() == {"log", "state.get"}
    assert code(narrowed, "state.set", {"key": "orders/1", "bytes": 1}) is Reason.NOT_GRANTED
    further = parse_token(attenuate(narrowed.text, KEY, operations=["log"]), KEY)
    assert StepAuthorizer.for_step(further, now=JAN_2026).granted() == {"log"}


def test_granted_leaves_out_operations_no_call_can_use() -> None:
    # http.fetch without hosts, state.* without prefixes, block.put without codecs.
    grants = Grants.build(["http.fetch", "state.get", "block.put", "log"], codecs=[])
    authorizer = StepAuthorizer.for_step(parsed(grants), now=JAN_2026)
    assert authorizer.granted() == {"log"}
    assert code(parsed(grants), "http.fetch", http_args()) is Reason.HOST_NOT_ALLOWED


# -- trap_on_deny ----------------------------------------------------------------------------


def test_trap_on_deny_from_the_authority() -> None:
    token = parsed(Grants.build(["log"], max_bytes=5, trap_on_deny=True))
    assert decide(token, "log", {"level": 0, "bytes": 5}).trap is False  # allowed: no trap
    denied = decide(token, "log", {"level": 0, "bytes": 6})
    assert (denied.allowed, denied.trap, denied.code) == (False, True, Reason.LIMIT_EXCEEDED)
    assert decide(token, "state.get", {"key": "k"}).trap is True


def test_trap_on_deny_from_an_attenuation_and_never_removed() -> None:
    plain = parsed(Grants.build(["log"]))
    assert decide(plain, "state.get", {"key": "k"}).trap is False
    trapping = parse_token(attenuate(plain.text, KEY, trap_on_deny=True), KEY)
    assert decide(trapping, "state.get", {"key": "k"}).trap is True
    # trap_on_deny=False adds nothing; a later block cannot switch trapping off.
    later = parse_token(attenuate(trapping.text, KEY, step="s"), KEY)
    assert decide(later, "state.get", {"key": "k"}, step="s").trap is True


def test_a_context_denial_traps_when_the_token_says_so() -> None:
    token = parsed(Grants.build(["log"], trap_on_deny=True), step="a")
    decision = decide(token, "log", {"level": 0, "bytes": 0}, step="b")
    assert (decision.code, decision.trap) == (Reason.NOT_FOR_THIS_STEP, True)


# -- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "args", "fragment"),
    [
        ("http.post", {}, "unknown operation"),
        ("log", {"level": 0}, "needs bytes"),
        ("http.fetch", {"host": "a.b", "method": "GET", "url": "http://a.b/"}, "needs bytes"),
        ("log", {"level": 0, "bytes": 1, "extra": 1}, "takes no extra"),
        ("log", {"level": 0, "bytes": -1}, "0..2^63-1"),
        ("log", {"level": 0, "bytes": True}, "0..2^63-1"),
        ("log", {"level": 0, "bytes": "12"}, "0..2^63-1"),
        ("log", {"level": 0, "bytes": 1 << 63}, "0..2^63-1"),
        ("state.get", {"key": 7}, "must be a string"),
        ("state.get", {"key": "\ud800"}, "not valid Unicode"),
        ("state.get", {"key": "k" * 9000}, "longer than"),
        ("http.fetch", {**http_args(), "host": "api.example.\u212a"}, "not ASCII"),
        ("http.fetch", {**http_args(), "url": "https://evil.example/"}, "not the host of url"),
        ("http.fetch", {**http_args(), "url": "http://[::1/"}, "not a URL"),
        ("http.fetch", {**http_args(), "method": "GET /x"}, "not an HTTP method"),
    ],
)
def test_bad_arguments_are_denied(
    operation: str, args: dict[str, str | int], fragment: str
) -> None:
    engines: tuple[Engine, ...] = ("auto", "biscuit")
    for engine in engines:
        authorizer = StepAuthorizer.for_step(parsed(), now=JAN_2026, engine=engine)
        decision = authorizer.authorize(operation, args)
        assert decision.code is Reason.BAD_ARGUMENT
        assert fragment in decision.reason


def test_unicode_lowercasing_cannot_smuggle_a_host() -> None:
    # U+212A KELVIN SIGN lowercases to "k": never normalised, so never "api.example.k".
    token = parsed(Grants.build(["http.fetch"], hosts=["a.k"], methods=["GET"]))
    args: dict[str, str | int] = {
        "host": "a.\u212a",
        "method": "GET",
        "url": "https://a.\u212a/",
        "bytes": 0,
    }
    assert decide(token, "http.fetch", args).code is Reason.BAD_ARGUMENT


# -- tokens outside the vocabulary: Biscuit decides every call --------------------------------


def _hand_written(authority: str, *blocks: str) -> Token:
    return parse_token(hand_written(authority, *blocks), KEY)


def test_a_custom_check_runs_on_biscuit_exactly() -> None:
    token = _hand_written(
        'right("http.fetch"); host_allowed("a.example.com"); host_allowed("b.example.org");'
        'method_allowed("GET");',
        'check if host($h), $h.ends_with(".example.com");',
    )
    assert token.scope is None
    authorizer = StepAuthorizer.for_step(token, now=JAN_2026)
    assert not authorizer.compiled
    assert authorizer.granted() == {"http.fetch"}
    assert authorizer.authorize("http.fetch", http_args("a.example.com")).allowed
    denied = authorizer.authorize("http.fetch", http_args("b.example.org"))
    assert (denied.allowed, denied.code) == (False, Reason.HOST_NOT_ALLOWED)


def test_rights_derived_by_rules_are_honoured() -> None:
    token = _hand_written('role("logger"); right("log") <- role("logger");')
    assert token.scope is None
    authorizer = StepAuthorizer.for_step(token, now=JAN_2026)
    assert authorizer.authorize("log", {"level": 0, "bytes": 1}).allowed
    assert authorizer.authorize("block.get", {"cid": "x"}).code is Reason.NOT_GRANTED


def test_a_string_that_prints_like_a_set_is_not_misread() -> None:
    # One string `log", "state.get` prints exactly like the set {"log", "state.get"}.
    text = hand_written(
        'right("log");\nright("state.get");\nkey_prefix("");\n',
        "check if operation($op), {ops}.contains($op);",
        parameters={"ops": {'log", "state.get'}},
    )
    token = parse_token(text, KEY)
    assert 'check if operation($op), {"log", "state.get"}.contains($op);' in token.sources[1]
    assert token.scope is None  # the regenerated block differs: not compiled
    authorizer = StepAuthorizer.for_step(token, now=JAN_2026)
    assert authorizer.authorize("log", {"level": 0, "bytes": 0}).code is Reason.NOT_GRANTED


def test_a_hand_written_trap_fact_in_an_attenuation_is_seen() -> None:
    token = _hand_written('right("log");', "trap_on_deny(true);\ncheck if true;")
    assert token.scope is None and token.trap_on_deny
    decision = StepAuthorizer.for_step(token, now=JAN_2026).authorize("state.get", {"key": "k"})
    assert (decision.allowed, decision.trap) == (False, True)


def test_biscuit_context_denial_is_diagnosed_for_custom_tokens() -> None:
    token = _hand_written(
        'right("log");', 'check if step("x"), time($t), $t < 2026-06-01T00:00:00Z;'
    )
    assert token.scope is None
    authorizer = StepAuthorizer.for_step(token, now=JAN_2027, step="x")
    assert authorizer.context_denial is not None
    assert authorizer.authorize("log", {"level": 0, "bytes": 0}).allowed is False


# -- verify, timeout -------------------------------------------------------------------------


def test_verify_accepts_a_valid_token_and_names_the_failure_otherwise() -> None:
    text = attenuate(issue(AUTHORITY, ALL_GRANTS, expires=JAN_2027), KEY, step="s", flow="f")
    verify(text, KEY, now=JAN_2026, step="s", flow="f")
    for context, reason in (
        ({"now": JAN_2027, "step": "s", "flow": "f"}, Reason.EXPIRED),
        ({"now": JAN_2026, "step": "t", "flow": "f"}, Reason.NOT_FOR_THIS_STEP),
        ({"now": JAN_2026, "step": "s", "flow": "g"}, Reason.NOT_FOR_THIS_FLOW),
    ):
        with pytest.raises(CapabilityError) as caught:
            verify(text, KEY, **context)  # type: ignore[arg-type]
        assert caught.value.reason is reason


def test_http_timeout_comes_from_the_token() -> None:
    assert StepAuthorizer.for_step(parsed(), now=JAN_2026).http_timeout_ms == 2500
    assert StepAuthorizer.for_step(parsed(), now=JAN_2026, engine="biscuit").http_timeout_ms == 2500
    assert StepAuthorizer.for_step(parsed(Grants.build(["log"])), now=0).http_timeout_ms is None
    assert StepAuthorizer.without_token().http_timeout_ms is None
