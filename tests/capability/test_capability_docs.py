"""docs/capabilities.md is the spec: its Datalog is what the code writes and decides.

The example token is built from the page's text with raw biscuit-python calls, as a
reader with another Biscuit library would, and must compile and decide as the page says.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import biscuit_auth
import pytest

from qflow_node.core.capability import (
    POLICIES,
    AuthDecision,
    Grants,
    Reason,
    StepAuthorizer,
    Token,
    attenuate,
    issue,
    parse_rfc3339,
    parse_token,
)
from qflow_node.core.capability.testing import AUTHORITY

DOC = (Path(__file__).resolve().parents[2] / "docs" / "capabilities.md").read_text("utf-8")
_api: Any = biscuit_auth  # its bundled stubs lack Algorithm.Ed25519
NOW = parse_rfc3339("2026-05-01T12:00:00Z")


def block(marker: str) -> str:
    match = re.search(f"<!-- {marker} -->\n```\n(.*?)```", DOC, re.S)
    assert match is not None, marker
    return match.group(1)


def test_the_policies_on_the_page_are_the_code() -> None:
    assert block("policies") == POLICIES


def _by_hand() -> str:
    root = _api.PrivateKey.from_bytes(AUTHORITY.seed, _api.Algorithm.Ed25519)
    token = _api.BiscuitBuilder(block("example: authority")).build(root)
    return str(token.append(_api.BlockBuilder(block("example: attenuation"))).to_base64())


@pytest.fixture(scope="module")
def example() -> Token:
    return parse_token(_by_hand(), AUTHORITY.public_key)


def test_the_example_is_what_issue_and_attenuate_write(example: Token) -> None:
    grants = Grants.build(
        ["http.fetch", "state.get", "state.set", "log"],
        hosts=["api.example.com"],
        methods=["GET", "POST"],
        key_prefixes=["orders/"],
        max_bytes=65536,
        max_response_bytes=1048576,
        timeout_ms=5000,
    )
    text = issue(AUTHORITY, grants, expires=parse_rfc3339("2026-12-31T00:00:00Z"))
    text = attenuate(
        text,
        AUTHORITY.public_key,
        flow="orders",
        step="fetch-order",
        expires=parse_rfc3339("2026-06-01T00:00:00Z"),
        operations=["http.fetch", "log"],
        methods=["GET"],
        max_bytes=4096,
        trap_on_deny=True,
    )
    assert parse_token(text, AUTHORITY.public_key).sources == example.sources
    assert example.sources == (block("example: authority"), block("example: attenuation"))


def test_the_hand_written_example_compiles(example: Token) -> None:
    assert example.scope is not None


def _call(
    token: Token, operation: str, args: dict[str, str | int], *, step: str, now: int = NOW
) -> AuthDecision:
    decisions = [
        StepAuthorizer.for_step(token, now=now, flow="orders", step=step, engine=engine).authorize(
            operation, args
        )
        for engine in ("auto", "biscuit")
    ]
    fast, slow = decisions
    assert (fast.allowed, fast.trap, fast.code) == (slow.allowed, slow.trap, slow.code)
    return fast


def fetch(method: str = "GET", host: str = "api.example.com") -> dict[str, str | int]:
    return {"host": host, "method": method, "url": f"https://{host}/orders/1", "bytes": 0}


@pytest.mark.parametrize(
    ("operation", "args", "step", "now", "code"),
    [
        ("http.fetch", fetch(), "fetch-order", NOW, None),
        ("http.fetch", fetch("POST"), "fetch-order", NOW, Reason.METHOD_NOT_ALLOWED),
        ("http.fetch", fetch(host="evil.example"), "fetch-order", NOW, Reason.HOST_NOT_ALLOWED),
        ("log", {"level": 1, "bytes": 5000}, "fetch-order", NOW, Reason.LIMIT_EXCEEDED),
        ("state.get", {"key": "orders/1"}, "fetch-order", NOW, Reason.NOT_GRANTED),
        ("http.fetch", fetch(), "store-order", NOW, Reason.NOT_FOR_THIS_STEP),
        (
            "http.fetch",
            fetch(),
            "fetch-order",
            parse_rfc3339("2026-06-01T00:00:00Z"),
            Reason.EXPIRED,
        ),
    ],
)
def test_the_example_decides_as_the_page_says(
    example: Token,
    operation: str,
    args: dict[str, str | int],
    step: str,
    now: int,
    code: Reason | None,
) -> None:
    decision = _call(example, operation, args, step=step, now=now)
    assert decision.code is code
    assert decision.allowed is (code is None)
    assert decision.trap is (code is not None)


def test_every_reason_code_is_documented() -> None:
    for reason in Reason:
        assert f"`{reason.value}`" in DOC, reason
