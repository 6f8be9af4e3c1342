"""The messages of `/qflow/critical/1` (docs/consensus.md, "Messages").

| message  | from → to               | answered by |
| -------- | ----------------------- | ----------- |
| prepare  | coordinator → validator | vote        |
| abort    | coordinator → validator | vote        |
| query    | any node → validator    | answer      |

Each is a dag-cbor map with a `type` and always the same keys (absent values are null),
so a message has one encoding; `from_obj` refuses unknown or missing keys, wrong types
and oversized values with a `FormatError` naming the field. Every message names its
subnet, policy and slot; a vote or answer also names the share index of its signer, so
a pair of them is a self-contained equivocation proof. The Ed25519 envelope around a
message, and checking that its signer is the validator of that index, are the shell's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Final, Literal, TypeAlias, cast

from qflow_node.codec import (
    CID,
    MAX_BLOCK_SIZE,
    Block,
    CodecError,
    decode_dag,
    encode_dag,
    verify_block,
)
from qflow_node.codec.envelope_bodies import PRINTABLE_PATTERN
from qflow_node.core.critical.fields import (
    FormatError,
    blob,
    choice,
    fields,
    integer,
    link,
    listing,
    show,
    text,
)
from qflow_node.core.critical.statement import (
    DECISION_FIELDS,
    Decision,
    Outcome,
    check_subnet,
    slot_from_obj,
    slot_to_obj,
)
from qflow_node.core.scheduling.rank import Slot
from qflow_node.crypto import MAX_PARTICIPANTS, SIGNATURE_LEN

# A prepare carries the proposed record and the blocks a validator may lack to
# re-execute (output, state delta); larger ones it fetches by CID over bitswap.
MAX_BLOCKS: Final = 32
MAX_INLINE_BYTES: Final = 2 * MAX_BLOCK_SIZE
# What the shell passes to `decode_message` / caps a stream read at.
MAX_MESSAGE_SIZE: Final = MAX_INLINE_BYTES + (64 << 10)
MAX_DETAIL_LEN: Final = 256  # a refusal's reason for people, not a dump
PRINTABLE: Final = re.compile(PRINTABLE_PATTERN)

Request = Literal["prepare", "abort"]
REQUESTS: Final = ("prepare", "abort")


class Refusal(StrEnum):
    """Why a validator did not sign what it was asked. The values are on the wire."""

    MISMATCH = "mismatch"  # its own outcome differs (or it could not compute one)
    LOCKED = "locked"  # it signed a commit (of another outcome): the vote carries it
    ABORTED = "aborted"  # it signed abort: the vote carries it
    POLICY = "policy"  # the subnet's policy forbids it (see `detail`)


@dataclass(frozen=True, slots=True)
class SignedDecision:
    """A decision and one share's partial signature of its statement (96 bytes)."""

    decision: Decision
    partial: bytes

    FIELDS: ClassVar[frozenset[str]] = DECISION_FIELDS | {"partial"}

    def to_obj(self) -> dict[str, Any]:
        return {**self.decision.to_obj(), "partial": self.partial}

    @classmethod
    def from_obj(cls, obj: object, path: str) -> SignedDecision:
        f = fields(obj, path, cls.FIELDS)
        decision = Decision.from_fields(f, path)
        # Only the length here: the coordinator decodes the point when it verifies it.
        return cls(decision, blob(f["partial"], f"{path}.partial", size=SIGNATURE_LEN))


HEADER: Final = frozenset({"type", "subnet", "policy", "slot"})


def _header(obj: object, kind: str, keys: frozenset[str]) -> tuple[dict[str, Any], str, CID, Slot]:
    f = fields(obj, kind, HEADER | keys)
    if f["type"] != kind:
        raise FormatError(f"{kind}.type: expected {kind!r}, got {show(f['type'])}")
    subnet = check_subnet(f["subnet"], f"{kind}.subnet")
    policy = link(f["policy"], f"{kind}.policy", dag_cbor_only=True)
    return f, subnet, policy, slot_from_obj(f["slot"], f"{kind}.slot")


def _header_obj(kind: str, subnet: str, policy: CID, slot: Slot) -> dict[str, Any]:
    return {"type": kind, "subnet": subnet, "policy": policy, "slot": slot_to_obj(slot)}


def _check_index(index: int, path: str) -> None:
    integer(index, path, 1, MAX_PARTICIPANTS)


def _check_signed(signed: SignedDecision | None, slot: Slot, path: str) -> None:
    if signed is not None and not signed.decision.applies_to(slot):
        raise FormatError(f"{path}.outcome: is for another slot than the message's")


@dataclass(frozen=True, slots=True)
class Prepare:
    """Sign `commit(outcome)` for `slot` if you reproduce `outcome` (and hold no other)."""

    subnet: str
    policy: CID
    slot: Slot
    outcome: Outcome
    blocks: tuple[Block, ...] = ()

    TYPE: ClassVar[str] = "prepare"

    def __post_init__(self) -> None:
        if self.outcome.slot != self.slot:
            raise FormatError("prepare.outcome: is for another slot than the message's")
        if len(self.blocks) > MAX_BLOCKS:
            raise FormatError(f"prepare.blocks: more than {MAX_BLOCKS} blocks")
        if len({block.cid for block in self.blocks}) != len(self.blocks):
            raise FormatError("prepare.blocks: a block appears twice")
        size = sum(len(block.data) for block in self.blocks)
        if size > MAX_INLINE_BYTES:
            raise FormatError(f"prepare.blocks: {size} bytes exceeds {MAX_INLINE_BYTES}")

    @property
    def decision(self) -> Decision:
        return Decision.commit(self.outcome)

    def to_obj(self) -> dict[str, Any]:
        return {
            **_header_obj(self.TYPE, self.subnet, self.policy, self.slot),
            "outcome": self.outcome.to_obj(),
            "blocks": [{"cid": block.cid, "data": block.data} for block in self.blocks],
        }

    @classmethod
    def from_obj(cls, obj: object) -> Prepare:
        f, subnet, policy, slot = _header(obj, cls.TYPE, frozenset({"outcome", "blocks"}))
        outcome = Outcome.from_obj(f["outcome"], "prepare.outcome")
        blocks = []
        for i, item in enumerate(listing(f["blocks"], "prepare.blocks", MAX_BLOCKS)):
            path = f"prepare.blocks[{i}]"
            b = fields(item, path, frozenset({"cid", "data"}))
            cid = link(b["cid"], f"{path}.cid")
            data = blob(b["data"], f"{path}.data", max_len=MAX_BLOCK_SIZE)
            try:
                verify_block(cid, data)
            except CodecError as exc:
                raise FormatError(f"{path}: {exc}") from None
            blocks.append(Block(cid, data))
        return cls(subnet, policy, slot, outcome, tuple(blocks))


@dataclass(frozen=True, slots=True)
class AbortRequest:
    """Sign abort for `slot` unless you signed a commit."""

    subnet: str
    policy: CID
    slot: Slot

    TYPE: ClassVar[str] = "abort"

    def to_obj(self) -> dict[str, Any]:
        return _header_obj(self.TYPE, self.subnet, self.policy, self.slot)

    @classmethod
    def from_obj(cls, obj: object) -> AbortRequest:
        _, subnet, policy, slot = _header(obj, cls.TYPE, frozenset())
        return cls(subnet, policy, slot)


@dataclass(frozen=True, slots=True)
class Query:
    """What have you signed for `slot`? (a coordinator taking over asks first)"""

    subnet: str
    policy: CID
    slot: Slot

    TYPE: ClassVar[str] = "query"

    def to_obj(self) -> dict[str, Any]:
        return _header_obj(self.TYPE, self.subnet, self.policy, self.slot)

    @classmethod
    def from_obj(cls, obj: object) -> Query:
        _, subnet, policy, slot = _header(obj, cls.TYPE, frozenset())
        return cls(subnet, policy, slot)


@dataclass(frozen=True, slots=True)
class Vote:
    """Validator `index`'s answer to a prepare or an abort (`request`).

    A yes carries `signed`: the decision asked for and its partial. A refusal carries a
    reason; `locked` and `aborted` also carry the decision the validator holds, signed
    (the coordinator counts it for that decision); `mismatch` may carry the digest of
    the validator's own outcome (`own`, None when it could not compute one). Every
    refusal counts towards the coordinator's proof to abort; a `mismatch` or `policy`
    one has no partial, so only its envelope's signature makes it attributable, and it
    does not name the outcome refused (it answers the prepare on its own stream).
    """

    subnet: str
    policy: CID
    slot: Slot
    index: int
    request: Request
    signed: SignedDecision | None
    refusal: Refusal | None = None
    detail: str | None = None
    own: CID | None = None

    TYPE: ClassVar[str] = "vote"
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"index", "request", "signed", "refusal", "detail", "own"}
    )

    def __post_init__(self) -> None:
        _check_index(self.index, "vote.index")
        _check_signed(self.signed, self.slot, "vote.signed")
        held = None if self.signed is None else self.signed.decision.kind
        asked = "commit" if self.request == "prepare" else "abort"
        expected = {
            None: asked,
            Refusal.LOCKED: "commit",
            Refusal.ABORTED: "abort",
            Refusal.MISMATCH: None,
            Refusal.POLICY: None,
        }[self.refusal]
        if held != expected:
            what = "no signed decision" if expected is None else f"a signed {expected}"
            label = "a yes vote" if self.refusal is None else f"a {self.refusal.value!r} refusal"
            raise FormatError(f"vote.signed: {label} carries {what}")
        if self.refusal == Refusal.ABORTED and self.request != "prepare":
            raise FormatError("vote.refusal: an abort request is not refused as 'aborted'")
        if self.refusal == Refusal.MISMATCH and self.request != "prepare":
            raise FormatError("vote.refusal: only a prepare is refused as 'mismatch'")
        if self.own is not None and self.refusal != Refusal.MISMATCH:
            raise FormatError("vote.own: only a 'mismatch' refusal carries it")
        if self.detail is not None:
            if self.refusal is None:
                raise FormatError("vote.detail: only a refusal carries it")
            text(self.detail, "vote.detail", max_len=MAX_DETAIL_LEN, pattern=PRINTABLE)

    @property
    def yes(self) -> bool:
        return self.refusal is None

    def to_obj(self) -> dict[str, Any]:
        return {
            **_header_obj(self.TYPE, self.subnet, self.policy, self.slot),
            "index": self.index,
            "request": self.request,
            "signed": None if self.signed is None else self.signed.to_obj(),
            "refusal": None if self.refusal is None else self.refusal.value,
            "detail": self.detail,
            "own": self.own,
        }

    @classmethod
    def from_obj(cls, obj: object) -> Vote:
        f, subnet, policy, slot = _header(obj, cls.TYPE, cls.FIELDS)
        index = integer(f["index"], "vote.index", 1, MAX_PARTICIPANTS)
        request = cast(Request, choice(f["request"], "vote.request", REQUESTS))
        signed = f["signed"]
        if signed is not None:
            signed = SignedDecision.from_obj(signed, "vote.signed")
        refusal = f["refusal"]
        if refusal is not None:
            refusal = Refusal(choice(refusal, "vote.refusal", [r.value for r in Refusal]))
        detail = f["detail"]
        if detail is not None:
            detail = text(detail, "vote.detail", max_len=MAX_DETAIL_LEN, pattern=PRINTABLE)
        own = None if f["own"] is None else link(f["own"], "vote.own", dag_cbor_only=True)
        return cls(subnet, policy, slot, index, request, signed, refusal, detail, own)


@dataclass(frozen=True, slots=True)
class Answer:
    """Validator `index`'s answer to a query: the decision it signed for `slot`, or None."""

    subnet: str
    policy: CID
    slot: Slot
    index: int
    signed: SignedDecision | None

    TYPE: ClassVar[str] = "answer"

    def __post_init__(self) -> None:
        _check_index(self.index, "answer.index")
        _check_signed(self.signed, self.slot, "answer.signed")

    def to_obj(self) -> dict[str, Any]:
        return {
            **_header_obj(self.TYPE, self.subnet, self.policy, self.slot),
            "index": self.index,
            "signed": None if self.signed is None else self.signed.to_obj(),
        }

    @classmethod
    def from_obj(cls, obj: object) -> Answer:
        f, subnet, policy, slot = _header(obj, cls.TYPE, frozenset({"index", "signed"}))
        index = integer(f["index"], "answer.index", 1, MAX_PARTICIPANTS)
        signed = f["signed"]
        if signed is not None:
            signed = SignedDecision.from_obj(signed, "answer.signed")
        return cls(subnet, policy, slot, index, signed)


Message: TypeAlias = Prepare | AbortRequest | Query | Vote | Answer
TYPES: Final[dict[str, type[Message]]] = {
    cls.TYPE: cls for cls in (Prepare, AbortRequest, Query, Vote, Answer)
}


def message_from_obj(obj: object) -> Message:
    """The message a decoded map holds, by its `type`; FormatError if it is not one."""
    if type(obj) is not dict:
        raise FormatError(f"message: expected a map, got {show(obj)}")
    kind = choice(obj.get("type"), "message.type", TYPES)
    return TYPES[kind].from_obj(obj)


def encode_message(message: Message) -> bytes:
    return encode_dag(message.to_obj())


def decode_message(data: bytes) -> Message:
    """Strict canonical dag-cbor of at most MAX_MESSAGE_SIZE bytes, then `message_from_obj`."""
    try:
        obj = decode_dag(data, max_size=MAX_MESSAGE_SIZE)
    except CodecError as exc:
        raise FormatError(f"message: {exc}") from None
    return message_from_obj(obj)
