"""CIDv1 with sha2-256, the only content identifiers Qflow produces or accepts.

The CID type is `cbrrr.CID` (raw CID bytes in `.cid_bytes`): it is what the dag-cbor
codec yields for IPLD links, so no conversion happens on the hot path. Building one from
a digest is a byte concatenation — byte-identical to what Kubo computes.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Final

from cbrrr import CID

__all__ = ["CID", "DAG_CBOR", "RAW", "CidError", "check_cid", "cid_codec", "cid_for", "parse_cid"]

DAG_CBOR: Final = 0x71
RAW: Final = 0x55
CODEC_NAMES: Final = {DAG_CBOR: "dag-cbor", RAW: "raw"}

_SHA2_256: Final = 0x12
_DIGEST_LEN: Final = 32
_PREFIX: Final = {codec: bytes([0x01, codec, _SHA2_256, _DIGEST_LEN]) for codec in CODEC_NAMES}
_PREFIXES: Final = frozenset(_PREFIX.values())
_BASE32_LOWER: Final = re.compile(r"[a-z2-7]+")


class CidError(ValueError):
    """A CID that is not a CIDv1 / sha2-256 / dag-cbor-or-raw identifier."""


def cid_for(data: bytes, codec: int) -> CID:
    """The CID of a block with these bytes under this codec (dag-cbor or raw)."""
    prefix = _PREFIX.get(codec)
    if prefix is None:
        raise CidError(f"unsupported codec 0x{codec:02x}: only dag-cbor (0x71) and raw (0x55)")
    return CID(prefix + hashlib.sha256(data).digest())


def cid_codec(cid: CID) -> int:
    """The codec of a CID already validated by `parse_cid`, `check_cid` or the decoder."""
    return int(cid.cid_bytes[1])


def check_cid(cid: CID) -> CID:
    """Return `cid` if it is a CIDv1, sha2-256, dag-cbor or raw; raise CidError otherwise."""
    raw = cid.cid_bytes
    if isinstance(raw, bytes) and len(raw) == 4 + _DIGEST_LEN and raw[:4] in _PREFIXES:
        return cid
    raise CidError(_why_unsupported(raw))


def _why_unsupported(raw: object) -> str:
    """Name the first field that disqualifies a CID, reading it as varints like Kubo does."""
    if not isinstance(raw, bytes):
        return f"CID bytes must be bytes, got {type(raw).__name__}"
    name = _describe(raw)
    if len(name) > 80:  # hostile links can be a megabyte long; keep messages readable
        name = f"{name[:60]}... ({len(raw)} bytes)"
    if len(raw) == 2 + _DIGEST_LEN and raw[:2] == bytes([_SHA2_256, _DIGEST_LEN]):
        return f"unsupported CID {name}: CIDv0; only CIDv1 with sha2-256 is accepted"
    fields: list[int] = []
    pos = 0
    while len(fields) < 4:
        value, pos = _read_varint(raw, pos)
        if value is None:
            return f"unsupported CID {name}: truncated; only CIDv1 with sha2-256 is accepted"
        fields.append(value)
    version, codec, hash_code, digest_len = fields
    if version != 1:
        return f"unsupported CID {name}: version {version}; only CIDv1 with sha2-256 is accepted"
    if codec not in CODEC_NAMES:
        return f"unsupported codec 0x{codec:02x} in CID {name}: only dag-cbor (0x71) and raw (0x55)"
    if hash_code != _SHA2_256 or digest_len != _DIGEST_LEN:
        return (
            f"unsupported multihash in CID {name}: hash 0x{hash_code:02x} with a "
            f"{digest_len}-byte digest; only sha2-256 (0x12, 32 bytes)"
        )
    return (
        f"unsupported CID {name}: {len(raw) - pos}-byte digest where the header says "
        f"{digest_len}; only CIDv1 with sha2-256 is accepted"
    )


def _read_varint(raw: bytes, pos: int) -> tuple[int | None, int]:
    """An unsigned LEB128 varint at `pos` (at most 9 bytes, as multiformats allows)."""
    value = 0
    for shift in range(0, 63, 7):
        if pos >= len(raw):
            return None, pos
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    return None, pos


def parse_cid(text: str) -> CID:
    """Parse a base32 CIDv1 string (`bafy…`/`bafk…`), as printed by Qflow and Kubo.

    Only the canonical spelling is accepted (lowercase, no padding, zero trailing bits),
    so one CID has exactly one string form and strings can be compared as identifiers.
    """
    if not isinstance(text, str) or not text.startswith("b") or len(text) < 2:
        raise CidError(
            f"cannot parse CID {_show(text)}: "
            "expected a base32 CIDv1 starting with 'b' (e.g. bafy…)"
        )
    body = text[1:]
    if not _BASE32_LOWER.fullmatch(body):
        raise CidError(
            f"cannot parse CID {_show(text)}: not lowercase base32 (a-z, 2-7, no padding)"
        )
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except ValueError as exc:
        raise CidError(f"cannot parse CID {_show(text)}: invalid base32 ({exc})") from None
    if _describe(raw) != text:
        # b32decode ignores the unused low bits of the last character.
        raise CidError(
            f"cannot parse CID {_show(text)}: non-canonical base32 (nonzero trailing bits)"
        )
    return check_cid(CID(raw))


def _show(text: object) -> str:
    """A readable repr of untrusted input, cut short: it may be megabytes long."""
    shown = repr(text)
    return shown if len(shown) <= 80 else f"{shown[:60]}... ({len(shown)} chars)"


def _describe(raw: bytes) -> str:
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=") if raw else "<empty>"
