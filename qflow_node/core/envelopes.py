"""Opening and sealing wire envelopes: the one gate every received message goes through.

`open_envelope` never raises on hostile bytes: it returns `Verified` or `Rejected` with a
stable reason code for the caller's counters. Order (docs/protocol.md, "Wire envelopes"):
size caps on the length alone, outer msgpack shape, version, kind, per-kind cap, topic,
sender key, **signature**, and only then the body is decoded and type-checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import msgspec

from qflow_node.codec import encode_dag
from qflow_node.codec.envelope import (
    CHANNEL_OF,
    MAX_ENVELOPE_SIZE,
    EnvelopeError,
    body_obj,
    check_subnet,
    decode_body,
    decode_envelope,
    encode_body,
    encode_envelope,
    signing_message,
)
from qflow_node.codec.envelope_bodies import (
    CONTROL_SIG_DOMAIN,
    KIND_OF,
    MAX_U63,
    Body,
    Control,
    Heartbeat,
)
from qflow_node.identity.keys import (
    IdentityError,
    SigningKey,
    peer_id_from_public_key,
    public_key_from_did,
    public_key_from_peer_id,
    verify,
)

B_co = TypeVar("B_co", bound=Body, covariant=True)

CHANNELS: Final = frozenset(CHANNEL_OF.values())
REASONS: Final = frozenset(
    {
        "oversize",
        "malformed",
        "unsupported_version",
        "unknown_kind",
        "wrong_topic",
        "bad_sender",
        "bad_signature",
        "bad_field",
        "wrong_sender",
    }
)


@dataclass(frozen=True, slots=True)
class Verified(Generic[B_co]):
    """An envelope whose signature verified and whose body passed every check."""

    kind: str
    sender: str  # peer id that signed it
    seq: int
    body: B_co


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str  # one of REASONS
    message: str


def open_envelope(
    data: bytes,
    *,
    subnet: str,
    channel: str | None = None,
    max_size: int = MAX_ENVELOPE_SIZE,
) -> Verified[Body] | Rejected:
    """Check `data` received on subnet `subnet` (and topic `channel`, if given)."""
    # The caller's own values: a bad one is a bug, so it raises.
    check_subnet(subnet)
    if channel is not None and channel not in CHANNELS:
        raise ValueError(f"unknown topic channel {channel!r}")
    try:
        env = decode_envelope(data, max_size=max_size)
        if channel is not None and CHANNEL_OF[env.kind] != channel:
            return Rejected("wrong_topic", f"{env.kind} does not travel on the {channel} topic")
        try:
            public_key = public_key_from_peer_id(env.sender)
        except IdentityError as exc:
            return Rejected("bad_sender", f"'from' is not an Ed25519 peer id: {exc}")
        try:
            verify(public_key, signing_message(subnet, env.kind, env.seq, env.body), env.sig)
        except IdentityError:
            return Rejected("bad_signature", f"{env.kind} signature does not verify for {subnet}")
        body = decode_body(env.kind, env.body)
    except EnvelopeError as exc:
        return Rejected(exc.reason, exc.message)
    problem = _check_signed(env.sender, body)
    if problem is not None:
        return problem
    return Verified(env.kind, env.sender, env.seq, body)


def _check_signed(sender: str, body: Body) -> Rejected | None:
    """Rules that need the identity layer, on a body that already passed its type checks."""
    if isinstance(body, Heartbeat) and body.node != sender:
        return Rejected("wrong_sender", "a heartbeat's node must be the envelope's sender")
    if isinstance(body, Control):
        try:
            actor_key = public_key_from_did(body.actor)
        except IdentityError as exc:
            return Rejected("bad_field", f"control body: 'actor' is not an Ed25519 did:key: {exc}")
        try:
            verify(actor_key, control_message(body), body.sig)
        except IdentityError:
            return Rejected("bad_signature", "control: the actor's signature does not verify")
    return None


def check_control(control: Control) -> Rejected | None:
    """Whether a control's actor signature verifies (as `open_envelope` checks it)."""
    return _check_signed("", control)


def control_message(control: Control) -> bytes:
    """What the actor signs: domain + dag-cbor of the control body without `sig`."""
    unsigned = body_obj(control)
    del unsigned["sig"]
    return CONTROL_SIG_DOMAIN + encode_dag(unsigned)


def sign_control(actor: SigningKey, unsigned: Control) -> Control:
    """`unsigned` (any `sig`) signed by `actor`, whose did:key must be its `actor`."""
    if actor.did != unsigned.actor:
        raise ValueError("the control's actor is not this key's did:key")
    return msgspec.structs.replace(unsigned, sig=actor.sign(control_message(unsigned)))


def seal_envelope(key: SigningKey, *, subnet: str, seq: int, body: Body) -> bytes:
    """Encode and sign `body` from this node for `subnet`; refuses what peers would refuse."""
    check_subnet(subnet)
    kind = KIND_OF[type(body)]
    if not 0 <= seq <= MAX_U63:
        raise ValueError(f"seq must be in [0, 2^63), got {seq}")
    try:
        data = encode_body(body)
    except EnvelopeError as exc:
        raise ValueError(f"cannot seal a {kind}: {exc}") from None
    sender = peer_id_from_public_key(key.public_key)
    problem = _check_signed(sender, body)
    if problem is not None:
        raise ValueError(f"cannot seal a {kind}: {problem.reason}: {problem.message}")
    sig = key.sign(signing_message(subnet, kind, seq, data))
    return encode_envelope(kind, sender, seq, data, sig)
