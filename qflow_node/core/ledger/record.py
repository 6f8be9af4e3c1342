"""The execution record (v1): fields, rules, encoding and signing.

A record is a dag-cbor map with exactly these 14 keys (docs/protocol.md is the spec):

    v        1
    exec     CID link (dag-cbor): the execution id, i.e. the CID of the signed submission
    step     str (1 to 256 characters) | null
    attempt  int, 0 ≤ attempt < 2^32 (0 when step is null)
    kind     one of KINDS
    prev     [CID link…] sorted by raw CID bytes, no duplicates, at most 1024;
             empty exactly when kind is exec.started
    payload  CID link (dag-cbor or raw)
    state    CID link | null (CRDT update blob, usually raw)
    actor    did:key str | null
    node     libp2p Ed25519 peer id (12D3KooW…) of the writer; its key verifies `sig`
    ts       int milliseconds since the Unix epoch, 0 ≤ ts < 2^63; informational only
    clock    {peer id: int ≥ 1}, non-empty, contains `node`
    quorum   null, or the validators' certificate {policy, decision, outcome, sig}:
             on step.completed / step.failed of a critical step, or on the record
             that settles a decision (outcome status `decided`: docs/consensus.md)
    sig      64 bytes: Ed25519 by `node` over SIG_DOMAIN + dag-cbor(record without sig)

Everything here is per record; rules that need the parents (clock values, antichain)
live in the verifier.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

# The codec package's `decode_dag` re-walks every decoded value (link and nesting-depth
# checks): 5-7 µs per record against 2 µs for the bare strict decoder. `check_record`
# vets every field by type, which covers every place a link may appear and refuses any
# nested value, so the ledger decodes directly; messages never repr a nested value.
import cbrrr

from qflow_node.codec import CID, DAG_CBOR, MAX_BLOCK_SIZE, Block, cid_for, encode_dag
from qflow_node.core.critical.fields import FormatError
from qflow_node.core.critical.statement import Certificate
from qflow_node.core.ledger.clock import next_clock
from qflow_node.core.ledger.errors import Reason, RecordError
from qflow_node.identity.keys import (
    IdentityError,
    SigningKey,
    peer_id_from_public_key,
    public_key_from_did,
    public_key_from_peer_id,
)

VERSION: Final = 1
SIG_DOMAIN: Final = b"qflow/record/v1\x00"
SIG_LEN: Final = 64
MAX_STEP_LEN: Final = 256
MAX_ATTEMPT: Final = (1 << 32) - 1
MAX_INT: Final = (1 << 63) - 1
# Bounds the k² antichain check of a merge; a writer with more heads merges them over
# several records.
MAX_PREV: Final = 1024

FIELDS: Final = frozenset(
    {
        "v",
        "exec",
        "step",
        "attempt",
        "kind",
        "prev",
        "payload",
        "state",
        "actor",
        "node",
        "ts",
        "clock",
        "quorum",
        "sig",
    }
)

# What each kind says about `step` and `actor`.
_NO_STEP: Final = 0
_STEP: Final = 1
_ANY_STEP: Final = 2
# kind -> (step rule, actor required)
KIND_RULES: Final[Mapping[str, tuple[int, bool]]] = {
    "exec.started": (_NO_STEP, False),
    "exec.paused": (_NO_STEP, True),
    "exec.resumed": (_NO_STEP, True),
    "exec.aborted": (_NO_STEP, True),
    "exec.completed": (_NO_STEP, False),
    "exec.failed": (_NO_STEP, False),
    "step.started": (_STEP, False),
    "step.completed": (_STEP, False),
    "step.failed": (_STEP, False),
    "step.skipped": (_STEP, False),
    "approval.granted": (_STEP, True),
    "approval.denied": (_STEP, True),
    "timer.fired": (_ANY_STEP, False),
    "event.received": (_ANY_STEP, False),
}
KINDS: Final = frozenset(KIND_RULES)
# The kinds that settle a step attempt: only these may carry a critical step's
# certificate; a decision's (outcome status `decided`) may also be on the kinds that
# settle a wait (docs/consensus.md, "Decisions").
QUORUM_KINDS: Final = frozenset({"step.completed", "step.failed"})
DECISION_QUORUM_KINDS: Final = QUORUM_KINDS | {
    "timer.fired",
    "event.received",
    "approval.granted",
    "approval.denied",
}
# DAG-CBOR key order: by encoded length, then bytewise.
CANONICAL_ORDER: Final = tuple(sorted(FIELDS, key=lambda k: (len(k), k.encode())))
GENESIS_KIND: Final = "exec.started"

DAG_CBOR_PREFIX: Final = b"\x01\x71\x12\x20"
_LINK_PREFIXES: Final = frozenset({DAG_CBOR_PREFIX, b"\x01\x55\x12\x20"})
# A valid record's bytes start with: map(14), "v", 1, "ts", <uint ts>, "sig", bytes(64).
_SIG_ENTRY: Final = b"\x63sig\x58\x40"
_SIG_ENTRY_LEN: Final = len(_SIG_ENTRY) + SIG_LEN
_UNSIGNED_HEAD: Final = b"\xad"  # map(13)
_SIGNED_HEAD: Final = b"\xae"  # map(14)


@dataclass(frozen=True, slots=True)
class Record:
    """A decoded, field-checked record. Build with `new_record`, read with `decode_record`."""

    exec: CID
    kind: str
    step: str | None
    attempt: int
    prev: tuple[CID, ...]
    payload: CID
    state: CID | None
    actor: str | None
    node: str
    ts: int
    clock: Mapping[str, int]
    sig: bytes
    # The validators' certificate of a critical step, as recorded: `Certificate.to_obj()`
    # form, shape-checked (`certificate` parses it).
    quorum: dict[str, Any] | None = None
    v: int = VERSION

    @property
    def certificate(self) -> Certificate | None:
        """`quorum` as a `Certificate` (it passed `check_record`, so it parses)."""
        return None if self.quorum is None else Certificate.from_obj(self.quorum, "quorum")

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> Record:
        """From a decoded map; raises RecordError unless it passes `check_record`."""
        check_record(obj)
        return cls._from_checked(obj)

    @classmethod
    def _from_checked(cls, obj: Mapping[str, Any]) -> Record:
        return cls(
            exec=obj["exec"],
            kind=obj["kind"],
            step=obj["step"],
            attempt=obj["attempt"],
            prev=tuple(obj["prev"]),
            payload=obj["payload"],
            state=obj["state"],
            actor=obj["actor"],
            node=obj["node"],
            ts=obj["ts"],
            clock=dict(obj["clock"]),
            sig=obj["sig"],
            quorum=obj["quorum"],
        )

    def to_obj(self) -> dict[str, Any]:
        """The dag-cbor data model map (encode with `encode_dag`)."""
        return {
            "v": self.v,
            "exec": self.exec,
            "step": self.step,
            "attempt": self.attempt,
            "kind": self.kind,
            "prev": list(self.prev),
            "payload": self.payload,
            "state": self.state,
            "actor": self.actor,
            "node": self.node,
            "ts": self.ts,
            "clock": dict(self.clock),
            "quorum": self.quorum,
            "sig": self.sig,
        }


def _bad(message: str) -> RecordError:
    return RecordError(Reason.BAD_FIELD, message)


def _show(value: object) -> str:
    """A short rendering of a hostile value for a message: never a deep or huge repr."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(value).__name__}"


def _is_link(value: object) -> bool:
    return (
        type(value) is CID and len(value.cid_bytes) == 36 and value.cid_bytes[:4] in _LINK_PREFIXES
    )


def check_record(obj: object) -> Certificate | None:  # noqa: PLR0915 - one flat pass
    """Raise RecordError unless `obj` is a well-formed v1 record map (per-record rules);
    return its quorum certificate, parsed, if it has one.

    This runs once per record on the verification hot path, so it is one flat function
    of cheap type tests (split into helpers it cost 30% more). Only a record with a
    certificate pays for more (`_check_quorum`: about 0.25 ms, the signature's subgroup
    check); whether the certificate's signature verifies is the replica's check, which
    knows the subnet's policy (`qflow_node.core.critical.quorum_problem`).
    """
    if type(obj) is not dict:
        raise _bad(f"a record is a map, got {type(obj).__name__}")
    version = obj.get("v")
    if version != VERSION or type(version) is not int:
        if "v" not in obj:
            raise _bad("missing field 'v'")
        raise RecordError(
            Reason.UNSUPPORTED_VERSION,
            f"unsupported record version v={_show(version)} (expected 1)",
        )
    # Decoded records list their keys in canonical order: a tuple compare is the cheap
    # test; anything else (built maps) falls back to comparing sets.
    if tuple(obj) != CANONICAL_ORDER and obj.keys() != FIELDS:
        missing = sorted(FIELDS - obj.keys())
        unknown = sorted(obj.keys() - FIELDS)
        parts = [f"missing field(s) {missing}"] if missing else []
        parts += [f"unknown field(s) {unknown}"] if unknown else []
        raise _bad("; ".join(parts))

    kind = obj["kind"]
    rule = KIND_RULES.get(kind) if type(kind) is str else None
    if rule is None:
        raise _bad(f"'kind' {_show(kind)} is not one of {sorted(KINDS)}")
    step_rule, actor_required = rule
    step = obj["step"]
    attempt = obj["attempt"]
    if type(attempt) is not int or not 0 <= attempt <= MAX_ATTEMPT:
        raise _bad(f"'attempt' must be an int in [0, {MAX_ATTEMPT}], got {_show(attempt)}")
    if step is None:
        if step_rule == _STEP:
            raise _bad(f"kind {kind} needs a 'step'")
        if attempt != 0:
            raise _bad("'attempt' must be 0 when 'step' is null")
    elif type(step) is not str or not 1 <= len(step) <= MAX_STEP_LEN:
        raise _bad(f"'step' must be null or a string of 1 to {MAX_STEP_LEN} characters")
    elif step_rule == _NO_STEP:
        raise _bad(f"kind {kind} must have 'step' null")

    exec_ = obj["exec"]
    if (
        type(exec_) is not CID
        or exec_.cid_bytes[:4] != DAG_CBOR_PREFIX
        or len(exec_.cid_bytes) != 36
    ):
        raise _bad("'exec' must be a dag-cbor CIDv1 sha2-256 link (the submission)")
    prev = obj["prev"]
    if type(prev) is not list or len(prev) > MAX_PREV:
        raise _bad(f"'prev' must be a list of at most {MAX_PREV} links")
    last = b""
    for link in prev:
        if type(link) is not CID:
            raise _bad("'prev' entries must be links")
        raw = link.cid_bytes
        if len(raw) != 36 or raw[:4] not in _LINK_PREFIXES:
            raise _bad(f"prev link {link.encode()} is not a CIDv1 sha2-256")
        if raw <= last:
            raise _bad("'prev' must be sorted by raw CID bytes with no duplicates")
        last = raw
    if (kind == GENESIS_KIND) == bool(prev):
        raise _bad(
            "an exec.started record has empty 'prev'"
            if prev
            else f"only exec.started may have empty 'prev', not {kind}"
        )
    if not _is_link(obj["payload"]):
        raise _bad("'payload' must be a CIDv1 sha2-256 link")
    state = obj["state"]
    if state is not None and not _is_link(state):
        raise _bad("'state' must be null or a CIDv1 sha2-256 link")

    actor = obj["actor"]
    if actor is None:
        if actor_required:
            raise _bad(f"kind {kind} needs an 'actor'")
    else:
        try:
            public_key_from_did(actor if type(actor) is str else "")
        except IdentityError as exc:
            raise _bad(f"'actor' must be null or an Ed25519 did:key: {exc}") from None
    node = obj["node"]
    try:
        public_key_from_peer_id(node if type(node) is str else "")
    except IdentityError as exc:
        raise _bad(f"'node' must be an Ed25519 libp2p peer id: {exc}") from None
    clock = obj["clock"]
    if type(clock) is not dict or node not in clock:
        raise _bad("'clock' must be a map of peer id to count that includes 'node'")
    for peer, n in clock.items():
        if type(n) is not int or not 1 <= n <= MAX_INT:
            raise _bad(f"clock[{_show(peer)}] must be an int in [1, 2^63), got {_show(n)}")

    ts = obj["ts"]
    if type(ts) is not int or not 0 <= ts <= MAX_INT:
        raise _bad(f"'ts' must be an int of milliseconds in [0, 2^63), got {_show(ts)}")
    sig = obj["sig"]
    if type(sig) is not bytes or len(sig) != SIG_LEN:
        raise _bad(f"'sig' must be {SIG_LEN} bytes")
    if obj["quorum"] is None:
        return None
    return _check_quorum(obj, kind)


def _check_quorum(obj: dict[str, Any], kind: str) -> Certificate:
    """The record's certificate: its shape (`Certificate.from_obj`: fields, links, a
    96-byte G2 point in the subgroup) and its agreement with the record's own fields."""
    if kind not in DECISION_QUORUM_KINDS:
        raise _bad(f"'quorum' must be null for kind {kind} (it settles no step)")
    try:
        cert = Certificate.from_obj(obj["quorum"], "quorum")
    except FormatError as exc:
        raise _bad(f"'quorum' is not a certificate: {exc}") from None
    outcome = cert.decision.outcome
    if outcome is None:
        if kind != "step.failed":
            raise _bad("quorum.decision: an abort certificate only settles a step.failed")
        return cert
    if outcome.status == "decided":
        status = "decided"  # any kind that settles a wait: the decision's block says which
    elif kind in QUORUM_KINDS:
        status = "completed" if kind == "step.completed" else "failed"
    else:
        raise _bad(
            f"quorum.outcome.status: {_show(outcome.status)} certifies a step's result, "
            f"not kind {kind} (a decision's status is 'decided')"
        )
    for name, certified, own, field in (
        ("exec", outcome.exec, obj["exec"], "'exec'"),
        ("step", outcome.step, obj["step"], "'step'"),
        ("attempt", outcome.attempt, obj["attempt"], "'attempt'"),
        ("status", outcome.status, status, f"kind {kind}, i.e."),
        ("delta", outcome.delta, obj["state"], "'state'"),
    ):
        if certified != own:
            raise _bad(
                f"quorum.outcome.{name}: {_show_value(certified)} is not the record's "
                f"{field} {_show_value(own)}: the certificate is for another record"
            )
    return cert


def _show_value(value: object) -> str:
    return value.encode() if type(value) is CID else _show(value)


def decode_obj(data: bytes) -> Any:
    """Strict canonical DAG-CBOR decode; RecordError(NOT_CANONICAL) on anything else."""
    if len(data) > MAX_BLOCK_SIZE:
        raise RecordError(
            Reason.NOT_CANONICAL, f"block of {len(data)} bytes exceeds {MAX_BLOCK_SIZE}"
        )
    try:
        return cbrrr.decode_dag_cbor(data)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # CbrrrDecodeError and UnicodeDecodeError are ValueErrors.
        raise RecordError(Reason.NOT_CANONICAL, f"not canonical dag-cbor: {exc}") from None


def decode_record(cid: CID, data: bytes) -> Record:
    """Check `data` against `cid` and decode it as a record (no parent or signature checks)."""
    raw = cid.cid_bytes
    if raw[:4] != DAG_CBOR_PREFIX or len(raw) != 36:
        raise RecordError(Reason.WRONG_CODEC, "a record is a dag-cbor sha2-256 block")
    if hashlib.sha256(data).digest() != raw[4:]:
        raise RecordError(Reason.HASH_MISMATCH, f"block bytes do not hash to {cid.encode()}")
    return Record.from_obj(decode_obj(data))


def _sig_offset(ts: int) -> int:
    """Where the `sig` entry starts in a record's bytes: after map(14), "v", 1, "ts", ts."""
    if ts < 24:
        return 8
    if ts < 0x100:
        return 9
    if ts < 0x10000:
        return 10
    if ts < 0x100000000:
        return 12
    return 16


def signing_message(data: bytes, ts: int) -> bytes:
    """SIG_DOMAIN + dag-cbor(record without sig), cut out of a checked record's bytes.

    Canonical order puts `sig` third (keys sort by length, then bytes: v, ts, sig, …), so
    the unsigned encoding is the same bytes minus that entry with the map header 14 → 13.
    Exact for any record that passed `check_record` after a strict decode; saves a
    re-encode per record. A wrong cut could only make a valid signature fail, never the
    reverse.
    """
    cut = _sig_offset(ts)
    return b"".join((SIG_DOMAIN, _UNSIGNED_HEAD, data[1:cut], data[cut + _SIG_ENTRY_LEN :]))


def unsigned_bytes(obj: Mapping[str, Any]) -> bytes:
    """dag-cbor of the record map without `sig` (the slow, obviously-correct way)."""
    return encode_dag({k: v for k, v in obj.items() if k != "sig"})


_peer_id = lru_cache(maxsize=256)(peer_id_from_public_key)


def new_record(
    exec: CID,
    kind: str,
    *,
    parents: Mapping[CID, Mapping[str, int]],
    payload: CID,
    key: SigningKey,
    ts: int,
    step: str | None = None,
    attempt: int = 0,
    state: CID | None = None,
    actor: str | None = None,
    quorum: Certificate | Mapping[str, Any] | None = None,
) -> tuple[Block, Record]:
    """Build and sign the next record of an execution.

    `parents` maps each current head to its clock; they must be the writer's whole head
    set (an antichain), so the record links everything the writer has seen. `quorum` is
    the validators' certificate of a critical step's step.completed / step.failed (a
    `Certificate` or its map); the signature covers it like every other field.
    """
    node = _peer_id(key.public_key)
    obj: dict[str, Any] = {
        "v": VERSION,
        "exec": exec,
        "step": step,
        "attempt": attempt,
        "kind": kind,
        "prev": sorted(parents, key=lambda cid: cid.cid_bytes),
        "payload": payload,
        "state": state,
        "actor": actor,
        "node": node,
        "ts": ts,
        "clock": next_clock(parents.values(), node),
        "quorum": quorum.to_obj() if isinstance(quorum, Certificate) else quorum,
        "sig": bytes(SIG_LEN),  # placeholder so the field check sees a complete record
    }
    check_record(obj)
    del obj["sig"]
    # Checked above, so the codec's own walk over the value is not needed.
    unsigned = bytes(cbrrr.encode_dag_cbor(obj))
    obj["sig"] = sig = key.sign(SIG_DOMAIN + unsigned)
    # The signed encoding is the unsigned one with the sig entry put back (see
    # signing_message), the inverse cut: one encode per record instead of two.
    cut = _sig_offset(ts)
    data = b"".join((_SIGNED_HEAD, unsigned[1:cut], _SIG_ENTRY, sig, unsigned[cut:]))
    return Block(cid_for(data, DAG_CBOR), data), Record._from_checked(obj)
