"""Wire envelopes, structure only (docs/protocol.md, "Wire envelopes").

An envelope is a msgpack map `{v, kind, from, seq, body, sig}`; `body` is the canonical
DAG-CBOR of a typed body (`envelope_bodies`), `sig` an Ed25519 signature by `from` over
`signing_message(...)`, which needs no parsing of the body. This module decodes and
encodes bytes; checking signatures needs the identity layer, so it lives in
`qflow_node.core.envelopes` (`open_envelope`), the one entry point for received bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final

import cbrrr
import msgspec

from qflow_node.codec.cid import CID
from qflow_node.codec.dagjson import to_dag_json
from qflow_node.codec.envelope_bodies import (
    BODY_TYPES,
    KIND_OF,
    MAX_U63,
    SUBNET_PATTERN,
    Body,
    cid_hook,
)

VERSION: Final = 1
SIG_DOMAIN: Final = b"qflow/envelope/v1\x00"
MAX_ENVELOPE_SIZE: Final = 1 << 20
# Whole-envelope caps per kind, checked before the signature: a heartbeat never needs
# more than a few hundred bytes, so a big one is refused without costing a verify. A
# heads envelope carries up to 256 executions' heads (~24 KiB with one head each) and
# always fits one execution at its maximum of 1024 heads (~41 KiB).
KIND_MAX_SIZE: Final[Mapping[str, int]] = {
    "heartbeat": 4 << 10,
    "claim": 2 << 10,
    "claims": 32 << 10,  # up to 64 claims with step names of up to 256 bytes
    "control": 4 << 10,
    "rejection": 4 << 10,
    "heads": 256 << 10,
    "submission": MAX_ENVELOPE_SIZE,
    "record": MAX_ENVELOPE_SIZE,
    "records": MAX_ENVELOPE_SIZE,
}
KINDS: Final = frozenset(BODY_TYPES)
# Which topic of a subnet (`/qflow/1/<subnet>/<channel>`) carries each kind.
CHANNEL_OF: Final[Mapping[str, str]] = {
    "heartbeat": "nodes",
    "submission": "flows",
    "claim": "exec",
    "claims": "exec",
    "record": "exec",
    "records": "exec",
    "heads": "exec",
    "control": "exec",
    "rejection": "flows",  # where the submitter published, so it hears the answer there
}
_SUBNET: Final = re.compile(SUBNET_PATTERN)
_MAP6: Final = 0x86  # msgpack fixmap with 6 entries


class Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The outer envelope as decoded; nothing in it is trusted until `sig` verifies."""

    v: int
    kind: Annotated[str, msgspec.Meta(max_length=32)]
    sender: Annotated[str, msgspec.Meta(max_length=64)] = msgspec.field(name="from")
    seq: Annotated[int, msgspec.Meta(ge=0, le=MAX_U63)]
    body: bytes
    sig: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]


class _VersionProbe(msgspec.Struct):
    """Only `v`, anything else ignored: tells a future version from garbage."""

    v: int


_OUTER: Final = msgspec.msgpack.Decoder(Envelope)
_PROBE: Final = msgspec.msgpack.Decoder(_VersionProbe)
_ENCODER: Final = msgspec.msgpack.Encoder()


class EnvelopeError(ValueError):
    """Bytes refused by the codec; `reason` is a stable code (see docs/protocol.md)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def check_subnet(subnet: str) -> str:
    if not isinstance(subnet, str) or not _SUBNET.fullmatch(subnet):
        raise ValueError(f"subnet {subnet!r} must match {SUBNET_PATTERN}")
    return subnet


def signing_message(subnet: str, kind: str, seq: int, body: bytes) -> bytes:
    """What `from` signs: domain, subnet, kind, seq (8 bytes big-endian), body bytes.

    The subnet and kind contain no NUL, so the fields cannot run into each other; binding
    the subnet stops a message from being replayed into another subnet.
    """
    return b"".join(
        (SIG_DOMAIN, subnet.encode(), b"\x00", kind.encode(), b"\x00", seq.to_bytes(8), body)
    )


def decode_envelope(data: bytes, *, max_size: int = MAX_ENVELOPE_SIZE) -> Envelope:
    """The outer envelope (size, msgpack shape, version, kind, per-kind cap); not the body.

    The size caps are checked on `len(data)` alone, before any byte is parsed.
    """
    if type(data) is not bytes:
        raise EnvelopeError("malformed", f"an envelope is bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise EnvelopeError("oversize", f"{len(data)} bytes exceeds the {max_size}-byte cap")
    try:
        env = _OUTER.decode(data)
    except (ValueError, RecursionError) as exc:
        # msgspec.DecodeError is a ValueError, and so is the UnicodeDecodeError of a key.
        raise _outer_error(data, exc) from None
    if env.v != VERSION:
        raise EnvelopeError("unsupported_version", f"envelope v={env.v} (this node speaks v=1)")
    if data[0] != _MAP6:
        # Six required keys and no unknown ones decoded, so any other count means a
        # duplicate key, which other decoders might resolve differently.
        raise EnvelopeError("malformed", "an envelope is a msgpack fixmap of exactly 6 keys")
    cap = KIND_MAX_SIZE.get(env.kind)
    if cap is None:
        raise EnvelopeError("unknown_kind", f"unknown envelope kind {env.kind!r}")
    if len(data) > cap:
        raise EnvelopeError("oversize", f"{env.kind} of {len(data)} bytes exceeds {cap}")
    return env


def _outer_error(data: bytes, exc: Exception) -> EnvelopeError:
    # A later version may change the fields: report its version rather than its shape.
    try:
        version = _PROBE.decode(data).v
    except (ValueError, RecursionError):
        version = VERSION
    if version != VERSION:
        return EnvelopeError("unsupported_version", f"envelope v={version} (this node speaks v=1)")
    return EnvelopeError("malformed", f"not a v1 envelope: {exc}")


def decode_body(kind: str, body: bytes) -> Body:
    """The typed body of an envelope of `kind` (a known kind); EnvelopeError otherwise."""
    try:
        obj = cbrrr.decode_dag_cbor(body)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # CbrrrDecodeError and UnicodeDecodeError are ValueErrors.
        raise EnvelopeError("malformed", f"{kind} body is not canonical dag-cbor: {exc}") from None
    if type(obj) is not dict:
        raise EnvelopeError("bad_field", f"{kind} body must be a map, got {type(obj).__name__}")
    try:
        return msgspec.convert(obj, BODY_TYPES[kind], strict=True, dec_hook=cid_hook)
    except (msgspec.ValidationError, RecursionError) as exc:
        raise EnvelopeError("bad_field", f"{kind} body: {exc}") from None


def body_obj(value: Any) -> Any:
    """The dag-cbor data model form of a body (Structs as maps, CIDs kept as links)."""
    if isinstance(value, msgspec.Struct):
        return {f: body_obj(getattr(value, f)) for f in value.__struct_fields__}
    if isinstance(value, list | tuple):
        return [body_obj(item) for item in value]
    return value


def encode_body(body: Body) -> bytes:
    """Canonical dag-cbor bytes of a body; refuses a body peers would refuse."""
    kind = KIND_OF[type(body)]
    data = bytes(cbrrr.encode_dag_cbor(body_obj(body)))
    decode_body(kind, data)  # the bounds of Meta are only checked when decoding
    return data


def json_form(env: Envelope, body: Body) -> dict[str, Any]:
    """The form `schemas/envelope.v1.json` describes: the body decoded, as DAG-JSON."""
    return {
        "v": env.v,
        "kind": env.kind,
        "from": env.sender,
        "seq": env.seq,
        "body": to_dag_json(body_obj(body)),
        "sig": to_dag_json(env.sig),
    }


def encode_envelope(kind: str, sender: str, seq: int, body: bytes, sig: bytes) -> bytes:
    if kind not in KINDS:
        raise ValueError(f"unknown envelope kind {kind!r}")
    return _ENCODER.encode(
        {"v": VERSION, "kind": kind, "from": sender, "seq": seq, "body": body, "sig": sig}
    )


__all__ = [
    "CHANNEL_OF",
    "CID",
    "KINDS",
    "KIND_MAX_SIZE",
    "MAX_ENVELOPE_SIZE",
    "SIG_DOMAIN",
    "VERSION",
    "Envelope",
    "EnvelopeError",
    "body_obj",
    "check_subnet",
    "decode_body",
    "decode_envelope",
    "encode_body",
    "encode_envelope",
    "json_form",
    "signing_message",
]
