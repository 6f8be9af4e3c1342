"""Typed bodies of the wire envelopes (docs/protocol.md, "Wire envelopes").

Each body is a msgspec Struct: unknown fields, wrong types (strict: no bool for int, no
str for bytes) and every bound are refused by `msgspec.convert`; cross-field rules live
in `__post_init__`, so a body built locally obeys them too. On the wire a body is
canonical DAG-CBOR (links are tag-42 CIDs), so its bytes are a function of its value.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Annotated, Final, Literal

import msgspec

from qflow_node.codec.cid import CID, DAG_CBOR, check_cid

MAX_U32: Final = (1 << 32) - 1
MAX_U63: Final = (1 << 63) - 1
MAX_STEP_LEN: Final = 256
MAX_SUBNETS: Final = 16
MAX_ADDRS: Final = 8
MAX_ADDR_LEN: Final = 256
MAX_HEADS: Final = 1024
MAX_HEADS_ENTRIES: Final = 256  # executions in one heads envelope
MAX_INLINE_BLOCKS: Final = 8
MAX_BATCH: Final = 64  # claims, or record announcements, in one envelope
MAX_LEASE_MS: Final = 600_000
MAX_RANK: Final = 1023
MAX_REJECTION_MESSAGE: Final = 512  # characters: a reason for people, not a dump
LOAD_SCALE: Final = 1000  # load is in permille: 0 idle … 1000 saturated
# As net/topics.py: no `/` (topic names) and no NUL (signing message). `\Z`, not `$`:
# Python's `$` also matches before a trailing newline.
SUBNET_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}\Z"
CONTROL_SIG_DOMAIN: Final = b"qflow/control/v1\x00"
CONTROL_ACTIONS: Final = ("pause", "resume", "abort", "approve", "deny")
STEP_ACTIONS: Final = frozenset({"approve", "deny"})
# No C0/C1 control characters: a rejection's message ends up on other people's
# terminals (`qflow watch`), where escape sequences must not get through.
PRINTABLE_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]*\Z"

# A peer id is 52 characters and a did:key 56; the identity layer checks the key itself.
PeerId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
DidKey = Annotated[str, msgspec.Meta(min_length=9, max_length=64, pattern="^did:key:z")]
Subnet = Annotated[str, msgspec.Meta(pattern=SUBNET_PATTERN)]
Step = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STEP_LEN)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# A listen multiaddr without the /p2p/ part (the heartbeat's node is the peer id).
ListenAddr = Annotated[
    str, msgspec.Meta(min_length=3, max_length=MAX_ADDR_LEN, pattern=r"^(/[A-Za-z0-9.:_-]+)+\Z")
]
U32 = Annotated[int, msgspec.Meta(ge=0, le=MAX_U32)]
U63 = Annotated[int, msgspec.Meta(ge=0, le=MAX_U63)]
Signature = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
Nonce = Annotated[bytes, msgspec.Meta(min_length=8, max_length=32)]
ReasonCode = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}\Z")]
RejectionMessage = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=MAX_REJECTION_MESSAGE, pattern=PRINTABLE_PATTERN),
]


def _dag_cbor_link(cid: CID, what: str) -> None:
    if cid.cid_bytes[1] != DAG_CBOR:
        raise ValueError(f"{what} must be a dag-cbor CID")


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a node can run: the claim ranking filters on it."""

    wasm_engine: Label  # e.g. "wasmtime/50.0.1"
    memory_bytes: U63  # memory a step may use on this node
    load: Annotated[int, msgspec.Meta(ge=0, le=LOAD_SCALE)]
    free_work_tokens: U32
    version: Label  # qflow version, e.g. "0.1.0"


class Heartbeat(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    node: PeerId  # must equal the envelope's `from`
    subnets: Annotated[tuple[Subnet, ...], msgspec.Meta(min_length=1, max_length=MAX_SUBNETS)]
    manifest: Manifest
    # Where the node listens, so peers that only hear of it over gossip can dial it
    # (bitswap asks connected peers only). Optional: a node may keep them private.
    addrs: Annotated[tuple[ListenAddr, ...], msgspec.Meta(max_length=MAX_ADDRS)] = ()

    def __post_init__(self) -> None:
        if any(a >= b for a, b in itertools.pairwise(self.subnets)):
            raise ValueError("subnets must be sorted with no duplicates")
        if any("/p2p/" in addr for addr in self.addrs):
            raise ValueError("addrs must not contain /p2p/ (the node id is `node`)")


class InlineBlock(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A block carried inside an envelope to save a bitswap round trip."""

    cid: CID
    data: bytes

    def __post_init__(self) -> None:
        if hashlib.sha256(self.data).digest() != self.cid.cid_bytes[4:]:
            raise ValueError(f"inline block bytes do not hash to {self.cid.encode()}")


InlineBlocks = Annotated[tuple[InlineBlock, ...], msgspec.Meta(max_length=MAX_INLINE_BLOCKS)]


def _unique_blocks(blocks: tuple[InlineBlock, ...]) -> None:
    if len({b.cid.cid_bytes for b in blocks}) != len(blocks):
        raise ValueError("inline blocks must be distinct")


class Submission(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    exec: CID  # the submission block's CID, i.e. the execution id
    blocks: InlineBlocks  # the submission block and what it links to, when small

    def __post_init__(self) -> None:
        _dag_cbor_link(self.exec, "exec")
        _unique_blocks(self.blocks)


class Claim(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The sender claims step attempt (exec, step, attempt) for lease_ms."""

    exec: CID
    step: Step
    attempt: U32
    lease_ms: Annotated[int, msgspec.Meta(ge=1, le=MAX_LEASE_MS)]
    rank: Annotated[int, msgspec.Meta(ge=0, le=MAX_RANK)]

    def __post_init__(self) -> None:
        _dag_cbor_link(self.exec, "exec")


class RecordAnnouncement(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    record: CID
    blocks: InlineBlocks  # the record block and its payload/state blocks, when small

    def __post_init__(self) -> None:
        _dag_cbor_link(self.record, "record")
        _unique_blocks(self.blocks)


class Claims(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Several claims in one envelope: the slots one scheduling pass of the sender
    claimed (or renewed) together. Each means exactly what a `claim` body would."""

    claims: Annotated[tuple[Claim, ...], msgspec.Meta(min_length=2, max_length=MAX_BATCH)]

    def __post_init__(self) -> None:
        slots = {(c.exec.cid_bytes, c.step, c.attempt) for c in self.claims}
        if len(slots) != len(self.claims):
            raise ValueError("claims must not name a slot (exec, step, attempt) twice")


class Records(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Several record announcements in one envelope: records the sender wrote at about
    the same time. Each means exactly what a `record` body would."""

    records: Annotated[
        tuple[RecordAnnouncement, ...], msgspec.Meta(min_length=2, max_length=MAX_BATCH)
    ]

    def __post_init__(self) -> None:
        if len({r.record.cid_bytes for r in self.records}) != len(self.records):
            raise ValueError("records must not announce a record twice")


class HeadsEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The sender's current heads of one execution."""

    exec: CID
    heads: Annotated[tuple[CID, ...], msgspec.Meta(min_length=1, max_length=MAX_HEADS)]

    def __post_init__(self) -> None:
        _dag_cbor_link(self.exec, "exec")
        for head in self.heads:
            _dag_cbor_link(head, "every head")
        raw = [h.cid_bytes for h in self.heads]
        if any(a >= b for a, b in itertools.pairwise(raw)):
            raise ValueError("heads must be sorted by raw CID bytes with no duplicates")


class Heads(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Heads of many executions in one envelope: one signature and one gossip message
    per round instead of one per execution (anti-entropy was a third of all gossip)."""

    entries: Annotated[
        tuple[HeadsEntry, ...], msgspec.Meta(min_length=1, max_length=MAX_HEADS_ENTRIES)
    ]

    def __post_init__(self) -> None:
        # Canonical order, as for heads: one value, one encoding; and no execution twice.
        for i, (a, b) in enumerate(itertools.pairwise(self.entries), start=1):
            if a.exec.cid_bytes == b.exec.cid_bytes:
                raise ValueError(f"entries[{i}] repeats the exec of entries[{i - 1}]")
            if a.exec.cid_bytes > b.exec.cid_bytes:
                raise ValueError(
                    f"entries must be sorted by raw exec CID bytes: entries[{i}] sorts "
                    f"before entries[{i - 1}]"
                )


class Control(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An actor's command, signed by the actor (`sig`) and relayed by any node."""

    exec: CID
    action: Literal["pause", "resume", "abort", "approve", "deny"]
    step: Step | None  # required by approve/deny, null otherwise
    actor: DidKey
    ts: U63  # actor's clock, ms; informational, makes repeated commands distinct
    nonce: Nonce
    sig: Signature  # Ed25519 by `actor` over CONTROL_SIG_DOMAIN + dag-cbor(body without sig)

    def __post_init__(self) -> None:
        _dag_cbor_link(self.exec, "exec")
        if (self.action in STEP_ACTIONS) != (self.step is not None):
            raise ValueError(
                f"action {self.action} {'needs' if self.step is None else 'takes no'} step"
            )


class Rejection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Why a node refused submission `exec` (advisory: tells the submitter, changes
    nothing for the nodes; docs/protocol.md, "Rejections")."""

    exec: CID  # the submission's CID, as the refused `submission` envelope named it
    reason: ReasonCode  # stable code, e.g. bad_inputs (docs/submission.md)
    message: RejectionMessage  # for people; may change between versions

    def __post_init__(self) -> None:
        _dag_cbor_link(self.exec, "exec")


Body = (
    Heartbeat
    | Submission
    | Claim
    | Claims
    | RecordAnnouncement
    | Records
    | Heads
    | Control
    | Rejection
)

BODY_TYPES: Final[dict[str, type[Body]]] = {
    "heartbeat": Heartbeat,
    "submission": Submission,
    "claim": Claim,
    "claims": Claims,
    "record": RecordAnnouncement,
    "records": Records,
    "heads": Heads,
    "control": Control,
    "rejection": Rejection,
}
KIND_OF: Final[dict[type[Body], str]] = {t: k for k, t in BODY_TYPES.items()}


def cid_hook(type_: type, obj: object) -> object:
    """msgspec dec_hook: only links Qflow accepts (CIDv1, sha2-256, dag-cbor or raw)."""
    if type_ is CID and type(obj) is CID:
        return check_cid(obj)  # CidError is a ValueError: msgspec reports it with the path
    raise TypeError(f"expected a link, got {type(obj).__name__}")
