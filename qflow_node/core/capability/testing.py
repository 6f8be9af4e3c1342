"""Fixed keys and helpers for capability tests (like `trio.testing`; not used at run time)."""

from __future__ import annotations

from collections.abc import Mapping

from qflow_node.core.capability import biscuit
from qflow_node.core.capability.authorizer import AuthDecision, StepAuthorizer
from qflow_node.core.capability.instants import Instant
from qflow_node.core.capability.token import Token
from qflow_node.identity.keys import SigningKey

# Fixed seeds: reproducible dids across runs.
AUTHORITY = SigningKey(bytes([0xA1]) * 32)
OTHER_AUTHORITY = SigningKey(bytes([0xB2]) * 32)

# 2026-01-01T00:00:00Z and friends, as seconds.
JAN_2026 = 1_767_225_600
JAN_2027 = 1_798_761_600
JAN_2030 = 1_893_456_000


def http_args(
    host: str = "api.example.com", method: str = "GET", size: int = 0
) -> dict[str, str | int]:
    return {"host": host, "method": method, "url": f"https://{host}/v1", "bytes": size}


def both_engines(
    token: Token,
    operation: str,
    args: Mapping[str, str | int],
    *,
    now: Instant = JAN_2026,
    exec: str | None = None,
    flow: str | None = None,
    step: str | None = None,
) -> tuple[AuthDecision, AuthDecision]:
    """The compiled engine's and Biscuit's decisions on one call (the token must compile)."""
    fast, slow = (
        StepAuthorizer.for_step(token, now=now, exec=exec, flow=flow, step=step, engine=engine)
        for engine in ("auto", "biscuit")
    )
    assert fast.compiled, "both_engines needs a token in the compiled vocabulary"
    return fast.authorize(operation, args), slow.authorize(operation, args)


def hand_written(
    authority: str,
    *blocks: str,
    seed: bytes = AUTHORITY.seed,
    parameters: Mapping[str, object] | None = None,
) -> str:
    """A token written in raw Datalog, as another Biscuit library would make it.

    `parameters` fill `{name}` holes in the last block (e.g. a set of strings).
    """
    token = biscuit.build(authority, seed, None if blocks else parameters)
    for i, block in enumerate(blocks):
        token = token.append(block, parameters if i == len(blocks) - 1 else None)
    return token.to_base64()
