"""Validator key shares sealed to a node's key (libsodium sealed boxes).

A trusted dealer (`qflow subnet create`) gives each validator its secret share of the
subnet's threshold key by encrypting it to the validator's node key: the Ed25519 public
key inside its peer id, converted to X25519, with a sealed box (an ephemeral X25519 key,
XSalsa20-Poly1305; only the recipient can open it, the sender stays anonymous). The node
opens it with its Ed25519 signing key converted to X25519.

The sealed plaintext binds its context, canonical dag-cbor of

    {"v": 1, "type": "qflow/share", "subnet": s, "policy": policy CID, "index": i,
     "share": 32 bytes}

so a box made for one subnet, policy or share index cannot be passed off as another:
`open_share` compares it with the context the caller expects, and with the clear header
of the share file. A share file is dag-cbor too:

    {"v": 1, "type": "qflow/sealed-share", "peer": recipient peer id, "subnet": s,
     "policy": CID, "index": i, "box": sealed bytes}

Sealing says nothing about who made the share (anyone can seal to a public key): the
holder checks the opened share against the policy's Feldman commitments (the CLI does;
this module knows nothing of threshold crypto). The share bytes are a scalar, checked by
the crypto package when they become a `Share`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from qflow_node.codec import (
    CID,
    DAG_CBOR,
    CidError,
    CodecError,
    check_cid,
    decode_dag,
    encode_dag,
)
from qflow_node.codec.envelope_bodies import SUBNET_PATTERN
from qflow_node.identity.keys import IdentityError, SigningKey, public_key_from_peer_id

VERSION: Final = 1
SHARE_TYPE: Final = "qflow/share"
SEALED_SHARE_TYPE: Final = "qflow/sealed-share"
SHARE_LEN: Final = 32
MAX_INDEX: Final = 1024
# The plaintext is under 200 bytes; a sealed box adds 48 (ephemeral key + MAC).
MAX_BOX_LEN: Final = 512
MAX_FILE_LEN: Final = 1024

_SUBNET: Final = re.compile(SUBNET_PATTERN)
_PAYLOAD_FIELDS: Final = frozenset({"v", "type", "subnet", "policy", "index", "share"})
_FILE_FIELDS: Final = frozenset({"v", "type", "peer", "subnet", "policy", "index", "box"})


class SealedShareError(IdentityError):
    """A share file or sealed share that is malformed, not ours, or for another context."""


@dataclass(frozen=True, slots=True)
class SealedShare:
    """A share sealed to the node `peer`, with its context in the clear (for routing and
    display: the sealed payload repeats it, and that copy is the one that counts)."""

    peer: str
    subnet: str
    policy: CID
    index: int
    box: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_context(self.subnet, self.policy, self.index, "sealed share")
        try:
            public_key_from_peer_id(self.peer)
        except IdentityError as exc:
            raise SealedShareError(f"sealed share: peer: {exc}") from None
        if type(self.box) is not bytes or not 48 < len(self.box) <= MAX_BOX_LEN:
            raise SealedShareError(
                f"sealed share: box: expected 49..{MAX_BOX_LEN} bytes, got {_describe(self.box)}"
            )

    def to_obj(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "type": SEALED_SHARE_TYPE,
            "peer": self.peer,
            "subnet": self.subnet,
            "policy": self.policy,
            "index": self.index,
            "box": self.box,
        }

    def to_bytes(self) -> bytes:
        return encode_dag(self.to_obj())

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "share file") -> SealedShare:
        if type(data) is not bytes or len(data) > MAX_FILE_LEN:
            raise SealedShareError(f"{what}: expected at most {MAX_FILE_LEN} bytes")
        try:
            obj = decode_dag(data)
        except CodecError as exc:
            raise SealedShareError(f"{what}: not a dag-cbor block: {exc}") from None
        f = _fields(obj, what, _FILE_FIELDS, SEALED_SHARE_TYPE)
        peer = f["peer"]
        if type(peer) is not str:
            raise SealedShareError(f"{what}.peer: expected a peer id string")
        box = f["box"]
        if type(box) is not bytes:
            raise SealedShareError(f"{what}.box: expected bytes")
        try:
            return cls(peer, f["subnet"], f["policy"], f["index"], box)
        except SealedShareError as exc:
            raise SealedShareError(str(exc).replace("sealed share", what, 1)) from None


def seal_share(peer: str, subnet: str, policy: CID, index: int, share: bytes) -> SealedShare:
    """Encrypt `share` (32 bytes) for the node `peer`, bound to subnet, policy and index."""
    _check_context(subnet, policy, index, "share")
    if type(share) is not bytes or len(share) != SHARE_LEN:
        raise SealedShareError(f"share: expected {SHARE_LEN} bytes, got {_describe(share)}")
    try:
        recipient = _x25519_public(public_key_from_peer_id(peer))
    except IdentityError as exc:
        raise SealedShareError(f"cannot seal to {peer!r}: {exc}") from None
    payload = encode_dag(
        {
            "v": VERSION,
            "type": SHARE_TYPE,
            "subnet": subnet,
            "policy": policy,
            "index": index,
            "share": share,
        }
    )
    box = bytes(nacl.public.SealedBox(recipient).encrypt(payload))
    return SealedShare(peer, subnet, policy, index, box)


def open_share(
    sealed: SealedShare,
    key: SigningKey,
    *,
    subnet: str | None = None,
    policy: CID | None = None,
    index: int | None = None,
) -> bytes:
    """The 32 share bytes, after checking the sealed context.

    The sealed payload must match the file's clear header and, where given, the context
    the caller expects (`subnet`, `policy`, `index`: pass what the policy in force says,
    not what the file says). SealedShareError names the mismatch.
    """
    if sealed.peer != key.peer_id:
        raise SealedShareError(
            f"the share is sealed to peer {sealed.peer}; this node is {key.peer_id}"
        )
    private = nacl.signing.SigningKey(key.seed).to_curve25519_private_key()
    try:
        payload = nacl.public.SealedBox(private).decrypt(sealed.box)
    except nacl.exceptions.CryptoError:
        raise SealedShareError(
            "cannot open the sealed share: it was not sealed to this node's key, or it was altered"
        ) from None
    try:
        obj = decode_dag(payload)
    except CodecError as exc:
        raise SealedShareError(f"sealed payload: not a dag-cbor block: {exc}") from None
    f = _fields(obj, "sealed payload", _PAYLOAD_FIELDS, SHARE_TYPE)
    _check_context(f["subnet"], f["policy"], f["index"], "sealed payload")
    for name, expected in (
        ("subnet", subnet),
        ("policy", policy),
        ("index", index),
    ):
        got = f[name]
        for source, want in (
            ("the share file says", getattr(sealed, name)),
            ("expected", expected),
        ):
            if want is not None and got != want:
                raise SealedShareError(
                    f"sealed payload: {name} is {_show(got)}, but {source} {_show(want)}:"
                    " the share was sealed for another context"
                )
    share = f["share"]
    if type(share) is not bytes or len(share) != SHARE_LEN:
        raise SealedShareError(
            f"sealed payload.share: expected {SHARE_LEN} bytes, got {_describe(share)}"
        )
    return share


def _x25519_public(ed25519_public: bytes) -> nacl.public.PublicKey:
    return nacl.public.PublicKey(nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_public))


def _fields(obj: object, what: str, keys: frozenset[str], kind: str) -> dict[str, Any]:
    if type(obj) is not dict:
        raise SealedShareError(f"{what}: expected a map")
    if obj.keys() != keys:
        missing = sorted(keys - obj.keys())
        unknown = sorted(repr(k)[:40] for k in obj.keys() - keys)
        parts = [f"missing field(s) {missing}"] if missing else []
        parts += [f"unknown field(s) {unknown}"] if unknown else []
        raise SealedShareError(f"{what}: {'; '.join(parts)}")
    if type(obj["v"]) is not int or obj["v"] != VERSION:
        raise SealedShareError(f"{what}.v: version {_show(obj['v'])} is not supported (expected 1)")
    if obj["type"] != kind:
        raise SealedShareError(f"{what}.type: expected {kind!r}, got {_show(obj['type'])}")
    return obj


def _check_context(subnet: object, policy: object, index: object, what: str) -> None:
    if type(subnet) is not str or not _SUBNET.match(subnet):
        raise SealedShareError(f"{what}.subnet: {_show(subnet)} is not a subnet name")
    if type(policy) is not CID:
        raise SealedShareError(f"{what}.policy: expected a CID link, got {_show(policy)}")
    try:
        check_cid(policy)
    except CidError as exc:
        raise SealedShareError(f"{what}.policy: {exc}") from None
    if policy.cid_bytes[1] != DAG_CBOR:
        raise SealedShareError(f"{what}.policy: {policy.encode()} must be a dag-cbor link")
    if type(index) is not int or not 1 <= index <= MAX_INDEX:
        raise SealedShareError(f"{what}.index: {_show(index)} is outside 1..{MAX_INDEX}")


def _show(value: object) -> str:
    if isinstance(value, CID):
        return str(value.encode())
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(value: object) -> str:
    return str(len(value)) if isinstance(value, bytes) else type(value).__name__
