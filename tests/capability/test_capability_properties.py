"""Property tests: the compiled engine agrees with Biscuit; attenuation never widens;
`granted()` means what it says. Random tokens, random extra blocks, random calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qflow_node.core.capability import (
    CODECS,
    OPERATIONS,
    AuthDecision,
    GrantError,
    Grants,
    Restriction,
    StepAuthorizer,
    Token,
    attenuate,
    issue,
    parse_token,
)
from qflow_node.core.capability.datalog import restriction_source
from qflow_node.core.capability.testing import AUTHORITY, JAN_2026, JAN_2027, JAN_2030

KEY = AUTHORITY.public_key
T = TypeVar("T")
HOSTS = ["a.test", "b.test", "c.test"]
METHODS = ["GET", "POST", "PUT"]
PREFIXES = ["", "a", "a/b", "ab", "b"]
KEYS = ["", "a", "a/b/c", "ab", "abc", "b", "c"]
NAMES = ["s1", "s2"]
SIZES = [0, 5, 6, 10, 11, 100, 101]
TIMES = [JAN_2026, JAN_2027, JAN_2030]

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def subset(pool: list[str], min_size: int = 0) -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from(pool), min_size=min_size, max_size=len(pool))


def maybe(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.none() | strategy


grants_strategy = st.builds(
    Grants.build,
    subset(list(OPERATIONS), min_size=1),
    hosts=subset(HOSTS),
    methods=subset(METHODS),
    key_prefixes=subset(PREFIXES),
    codecs=subset(list(CODECS)),
    max_bytes=maybe(st.sampled_from([0, 5, 10, 100])),
    max_response_bytes=maybe(st.sampled_from([0, 10, 100])),
    trap_on_deny=st.booleans(),
)

restriction_strategy = st.builds(
    Restriction,
    expires=maybe(st.sampled_from([JAN_2027, JAN_2030])),
    exec=maybe(st.sampled_from(NAMES)),
    flow=maybe(st.sampled_from(NAMES)),
    step=maybe(st.sampled_from(NAMES)),
    operations=maybe(subset(list(OPERATIONS), min_size=1)),
    hosts=maybe(subset(HOSTS, min_size=1)),
    methods=maybe(subset(METHODS, min_size=1)),
    key_prefixes=maybe(subset(PREFIXES, min_size=1)),
    codecs=maybe(subset(list(CODECS), min_size=1)),
    max_bytes=maybe(st.sampled_from([0, 5, 10, 100])),
    max_response_bytes=maybe(st.sampled_from([0, 10, 100])),
    trap_on_deny=st.booleans(),
).filter(lambda r: not r.is_empty())


@dataclass(frozen=True)
class Call:
    operation: str
    args: dict[str, str | int]
    now: int
    exec: str | None
    flow: str | None
    step: str | None


@st.composite
def calls(draw: st.DrawFn) -> Call:
    operation = draw(st.sampled_from(OPERATIONS))
    size = draw(st.sampled_from(SIZES))
    args: dict[str, str | int]
    if operation == "http.fetch":
        host = draw(st.sampled_from([*HOSTS, "evil.test"]))
        method = draw(st.sampled_from([*METHODS, "DELETE"]))
        args = {"host": host, "method": method, "url": f"https://{host}/x", "bytes": size}
        if draw(st.booleans()):
            args["response_bytes"] = draw(st.sampled_from(SIZES))
            if draw(st.booleans()):
                del args["bytes"]  # the after-response check may leave it out
    elif operation in ("state.get", "state.set"):
        args = {"key": draw(st.sampled_from(KEYS))}
        if operation == "state.set":
            args["bytes"] = size
    elif operation == "block.get":
        args = {"cid": "bafkreitest"}
    elif operation == "block.put":
        args = {"codec": draw(st.sampled_from(CODECS)), "bytes": size}
    else:
        args = {"level": draw(st.integers(0, 3)), "bytes": size}
    names = maybe(st.sampled_from(NAMES))
    return Call(
        operation, args, draw(st.sampled_from(TIMES)), draw(names), draw(names), draw(names)
    )


def build(grants: Grants, expires: int | None, blocks: list[Restriction]) -> Token:
    """A token with `blocks` appended as-is (not through attenuate's widening refusal)."""
    token = parse_token(issue(AUTHORITY, grants, expires=expires), KEY)
    for block in blocks:
        token = parse_token(token.biscuit.append(restriction_source(block)).to_base64(), KEY)
    return token


def decide(token: Token, call: Call, engine: str = "auto") -> AuthDecision:
    authorizer = StepAuthorizer.for_step(
        token,
        now=call.now,
        exec=call.exec,
        flow=call.flow,
        step=call.step,
        engine=engine,  # type: ignore[arg-type]
    )
    return authorizer.authorize(call.operation, call.args)


expiries = maybe(st.sampled_from([JAN_2027, JAN_2030]))


@PROPERTY_SETTINGS
@given(
    grants_strategy,
    expiries,
    st.lists(restriction_strategy, max_size=3),
    st.lists(calls(), min_size=1, max_size=8),
)
def test_the_compiled_engine_agrees_with_biscuit(
    grants: Grants, expires: int | None, blocks: list[Restriction], requests: list[Call]
) -> None:
    token = build(grants, expires, blocks)
    assert token.scope is not None, token.sources  # everything generated compiles
    for call in requests:
        fast, slow = decide(token, call), decide(token, call, "biscuit")
        assert (fast.allowed, fast.trap, fast.code) == (slow.allowed, slow.trap, slow.code), (
            call,
            fast,
            slow,
            token.sources,
        )


@PROPERTY_SETTINGS
@given(
    grants_strategy,
    expiries,
    st.lists(restriction_strategy, max_size=2),
    restriction_strategy,
    st.lists(calls(), min_size=1, max_size=8),
)
def test_an_extra_block_never_allows_more(
    grants: Grants,
    expires: int | None,
    blocks: list[Restriction],
    extra: Restriction,
    requests: list[Call],
) -> None:
    before = build(grants, expires, blocks)
    after = build(grants, expires, [*blocks, extra])
    now = StepAuthorizer.for_step
    assert now(after, now=0).granted() <= now(before, now=0).granted()
    for call in requests:
        for engine in ("auto", "biscuit"):
            if decide(after, call, engine).allowed:
                assert decide(before, call, engine).allowed, (call, engine, extra)


@PROPERTY_SETTINGS
@given(
    grants_strategy,
    expiries,
    st.lists(restriction_strategy, max_size=2),
    st.lists(calls(), min_size=1, max_size=8),
    st.data(),
)
def test_attenuate_never_widens_when_it_accepts(
    grants: Grants,
    expires: int | None,
    blocks: list[Restriction],
    requests: list[Call],
    data: st.DataObject,
) -> None:
    before = build(grants, expires, blocks)
    extra = data.draw(restriction_strategy)
    try:
        text = attenuate(
            before.text,
            KEY,
            expires=extra.expires,
            exec=extra.exec,
            flow=extra.flow,
            step=extra.step,
            operations=extra.operations,
            hosts=extra.hosts,
            methods=extra.methods,
            key_prefixes=extra.key_prefixes,
            codecs=extra.codecs,
            max_bytes=extra.max_bytes,
            max_response_bytes=extra.max_response_bytes,
            trap_on_deny=extra.trap_on_deny,
        )
    except GrantError:
        return  # refused as widening or empty: nothing to check
    after = parse_token(text, KEY)
    for call in requests:
        if decide(after, call).allowed:
            assert decide(before, call).allowed


@PROPERTY_SETTINGS
@given(grants_strategy, expiries, st.lists(restriction_strategy, max_size=3), st.lists(calls()))
def test_granted_means_some_call_can_pass_and_no_other_op_ever_does(
    grants: Grants, expires: int | None, blocks: list[Restriction], requests: list[Call]
) -> None:
    token = build(grants, expires, blocks)
    scope = token.scope
    assert scope is not None
    granted = StepAuthorizer.for_step(token, now=0).granted()
    for call in requests:
        if call.operation not in granted:
            assert not decide(token, call, "biscuit").allowed
    satisfiable = all(len(names) <= 1 for names in (scope.execs, scope.flows, scope.steps))
    if not satisfiable:
        return
    context = {
        "exec": min(scope.execs, default=None),
        "flow": min(scope.flows, default=None),
        "step": min(scope.steps, default=None),
    }
    for operation in granted:
        args: dict[str, str | int]
        if operation == "http.fetch":
            host = min(scope.hosts)
            args = {
                "host": host,
                "method": min(scope.methods),
                "url": f"http://{host}/",
                "bytes": 0,
            }
        elif operation in ("state.get", "state.set"):
            key = min(p for prefixes in scope.prefix_sets for p in prefixes if scope.key_allowed(p))
            args = {"key": key} if operation == "state.get" else {"key": key, "bytes": 0}
        elif operation == "block.put":
            args = {"codec": min(scope.codecs), "bytes": 0}
        elif operation == "block.get":
            args = {"cid": "bafkreitest"}
        else:
            args = {"level": 0, "bytes": 0}
        witness = Call(operation, args, 0, **context)
        assert decide(token, witness, "biscuit").allowed, (witness, token.sources)
