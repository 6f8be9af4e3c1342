"""The messages of `/qflow/dkg/1.0.0` (docs/protocol.md, "Key setup: the DKG protocol").

Every message is an **envelope**, canonical dag-cbor (`schemas/dkg-message.v1.json`):

    {"payload": {"v": 1, "type": "qflow/dkg-message", "plan": plan CID, "from": i,
                 "msg": msg},
     "sigs": [{"by": j, "sig": 64 bytes}…]}

`msg` is one of `crypto.dkg`'s messages as its dag-cbor map (`{"kind": "dkg/deal", …}`,
`dkg/share`, `dkg/complaint`, `dkg/justification`) or a `Confirm`. Each signature is
party `by`'s Ed25519 node key over `"qflow/dkg/v1" ‖ 0x00 ‖ dag-cbor(payload)`; the
originator `from` always signs, and every party that relays a broadcast adds its own
(`ceremony.py`), sorted by `by`. Because the signed bytes are the payload alone, a
relayed copy is the same message, and two payloads signed by one party for one subject
(two deals) prove equivocation to anyone.

A request is one envelope; the answer is `{"status": "accepted" | "duplicate" |
"dropped" | "refused", "reason": str | null}`. Decoding is strict and each refusal
names the field (`dkg message.sigs[1].sig: expected 64 bytes, got 3`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from qflow_node.codec import CID, CodecError, decode_dag, encode_dag
from qflow_node.core.critical.fields import (
    FormatError,
    blob,
    choice,
    fields,
    integer,
    link,
    listing,
    show,
)
from qflow_node.crypto import (
    MAX_PARTICIPANTS,
    Complaint,
    CryptoError,
    Deal,
    DealtShare,
    Justification,
    Message,
    decode_message,
    encode_message,
)
from qflow_node.crypto.dkg import MAX_MESSAGE_SIZE as MAX_DKG_MESSAGE_SIZE
from qflow_node.identity.keys import SIGNATURE_LEN, SigningKey

VERSION: Final = 1
MESSAGE_TYPE: Final = "qflow/dkg-message"
DOMAIN: Final = b"qflow/dkg/v1\x00"
TRANSCRIPT_LEN: Final = 32
# The largest deal, plus every party's signature and the map around them.
MAX_ENVELOPE_SIZE: Final = MAX_DKG_MESSAGE_SIZE + MAX_PARTICIPANTS * (SIGNATURE_LEN + 16) + 1024
MAX_ANSWER_SIZE: Final = 1024
MAX_REASON_LEN: Final = 300

PAYLOAD_FIELDS: Final = frozenset({"v", "type", "plan", "from", "msg"})
ENVELOPE_FIELDS: Final = frozenset({"payload", "sigs"})
SIG_FIELDS: Final = frozenset({"by", "sig"})
CONFIRM_FIELDS: Final = frozenset({"kind", "policy", "transcript"})
ANSWER_FIELDS: Final = frozenset({"status", "reason"})
STATUSES: Final = ("accepted", "duplicate", "dropped", "refused")


class MessageError(ValueError):
    """An envelope or answer that breaks the format: what, where, why."""


@dataclass(frozen=True, slots=True)
class Confirm:
    """After the last round: the policy this party derived (None: it could not finish)
    and the digest of its broadcast transcript. Sent directly to every party."""

    KIND: ClassVar[str] = "dkg/confirm"
    policy: CID | None
    transcript: bytes

    def to_obj(self) -> dict[str, Any]:
        return {"kind": self.KIND, "policy": self.policy, "transcript": self.transcript}


Body = Deal | DealtShare | Complaint | Justification | Confirm


def body_to_obj(msg: Body) -> dict[str, Any]:
    if isinstance(msg, Confirm):
        return msg.to_obj()
    obj: dict[str, Any] = decode_dag(encode_message(msg))
    return obj


@dataclass(frozen=True, slots=True)
class Payload:
    """What a party says, bound to the ceremony's plan. `sender` is the wire's `from`."""

    plan: CID
    sender: int
    msg: Body
    _encoded: list[bytes] = field(default_factory=list, init=False, repr=False, compare=False)

    def to_obj(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "type": MESSAGE_TYPE,
            "plan": self.plan,
            "from": self.sender,
            "msg": body_to_obj(self.msg),
        }

    def to_bytes(self) -> bytes:
        if not self._encoded:
            self._encoded.append(encode_dag(self.to_obj()))
        return self._encoded[0]

    @property
    def signing_bytes(self) -> bytes:
        return DOMAIN + self.to_bytes()

    @property
    def digest(self) -> bytes:
        """The message's identity: sha-256 of its payload (signatures aside)."""
        return hashlib.sha256(self.to_bytes()).digest()

    def sign(self, key: SigningKey) -> bytes:
        return key.sign(self.signing_bytes)


@dataclass(frozen=True, slots=True)
class Envelope:
    payload: Payload
    sigs: tuple[tuple[int, bytes], ...]  # (party, Ed25519 signature), sorted by party

    @classmethod
    def signed(cls, payload: Payload, key: SigningKey) -> Envelope:
        return cls(payload, ((payload.sender, payload.sign(key)),))

    @property
    def signers(self) -> frozenset[int]:
        return frozenset(by for by, _ in self.sigs)

    def with_sig(self, by: int, sig: bytes) -> Envelope:
        """This envelope countersigned by `by` (a relay)."""
        kept = tuple(item for item in self.sigs if item[0] != by)
        return Envelope(self.payload, tuple(sorted((*kept, (by, sig)))))

    def to_obj(self) -> dict[str, Any]:
        return {
            "payload": self.payload.to_obj(),
            "sigs": [{"by": by, "sig": sig} for by, sig in self.sigs],
        }

    def to_bytes(self) -> bytes:
        return encode_dag(self.to_obj())


def decode_envelope(data: bytes) -> Envelope:
    """Parse a request: MessageError naming the field for anything but a well-formed
    envelope. Signatures are checked by the ceremony, which knows the parties' keys."""
    try:
        obj = decode_dag(data, max_size=MAX_ENVELOPE_SIZE)
    except CodecError as exc:
        raise MessageError(f"dkg message: {exc}") from None
    try:
        return _envelope(obj, "dkg message")
    except FormatError as exc:
        raise MessageError(str(exc)) from None


def _envelope(obj: object, path: str) -> Envelope:
    f = fields(obj, path, ENVELOPE_FIELDS)
    payload = _payload(f["payload"], f"{path}.payload")
    sigs: list[tuple[int, bytes]] = []
    items = listing(f["sigs"], f"{path}.sigs", MAX_PARTICIPANTS)
    if not items:
        raise FormatError(f"{path}.sigs: at least the sender's signature is needed")
    for i, item in enumerate(items):
        g = fields(item, f"{path}.sigs[{i}]", SIG_FIELDS)
        by = integer(g["by"], f"{path}.sigs[{i}].by", 1, MAX_PARTICIPANTS)
        if sigs and by <= sigs[-1][0]:
            raise FormatError(f"{path}.sigs[{i}].by: {by} is out of order or repeated")
        sigs.append((by, blob(g["sig"], f"{path}.sigs[{i}].sig", size=SIGNATURE_LEN)))
    if payload.sender not in {by for by, _ in sigs}:
        raise FormatError(f"{path}.sigs: no signature by the sender, party {payload.sender}")
    return Envelope(payload, tuple(sigs))


def _payload(obj: object, path: str) -> Payload:
    f = fields(obj, path, PAYLOAD_FIELDS)
    if type(f["v"]) is not int or f["v"] != VERSION:
        raise FormatError(f"{path}.v: version {show(f['v'])} is not supported (expected 1)")
    choice(f["type"], f"{path}.type", (MESSAGE_TYPE,))
    plan = link(f["plan"], f"{path}.plan", dag_cbor_only=True)
    sender = integer(f["from"], f"{path}.from", 1, MAX_PARTICIPANTS)
    return Payload(plan, sender, _body(f["msg"], f"{path}.msg"))


def _body(obj: object, path: str) -> Body:
    if type(obj) is dict and obj.get("kind") == Confirm.KIND:
        f = fields(obj, path, CONFIRM_FIELDS)
        policy = f["policy"]
        if policy is not None:
            policy = link(policy, f"{path}.policy", dag_cbor_only=True)
        transcript = blob(f["transcript"], f"{path}.transcript", size=TRANSCRIPT_LEN)
        return Confirm(policy, transcript)
    try:
        msg: Message = decode_message(encode_dag(obj))
    except (CryptoError, CodecError) as exc:
        raise FormatError(f"{path}: {exc}") from None
    return msg


@dataclass(frozen=True, slots=True)
class Answer:
    """A party's answer to one request."""

    status: str
    reason: str | None = None

    def to_bytes(self) -> bytes:
        reason = self.reason
        if reason is not None and len(reason) > MAX_REASON_LEN:
            reason = reason[: MAX_REASON_LEN - 3] + "..."
        return encode_dag({"status": self.status, "reason": reason})

    @classmethod
    def from_bytes(cls, data: bytes) -> Answer:
        try:
            obj = decode_dag(data, max_size=MAX_ANSWER_SIZE)
            f = fields(obj, "dkg answer", ANSWER_FIELDS)
            status = choice(f["status"], "dkg answer.status", STATUSES)
        except (CodecError, FormatError) as exc:
            raise MessageError(f"dkg answer: {exc}") from None
        reason = f["reason"]
        if reason is not None and type(reason) is not str:
            raise MessageError(f"dkg answer.reason: expected a string, got {show(reason)}")
        return cls(status, reason)


ACCEPTED: Final = Answer("accepted")
DUPLICATE: Final = Answer("duplicate")


def dropped(reason: str) -> Answer:
    """Well-formed and authentic, but not taken: late, not enough relays, over a cap."""
    return Answer("dropped", reason)


def refused(reason: str) -> Answer:
    """Malformed, forged, or not for this ceremony."""
    return Answer("refused", reason)
