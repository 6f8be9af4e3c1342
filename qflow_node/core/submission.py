"""Signed submissions, version 1 (docs/submission.md): build one, verify a received one.

A submission is a dag-cbor block; its CID is the execution id, so a resubmitted
(identical) submission names the same execution and is a no-op. It is signed by the
submitter's Ed25519 key (a did:key) over a domain string and the map without `sig`.
Pure: the nonce and timestamp are arguments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from qflow_node.codec import (
    CID,
    DAG_CBOR,
    MAX_BLOCK_SIZE,
    RAW,
    Block,
    CodecError,
    UnencodableError,
    cid_for,
    decode_dag,
    encode_dag,
)
from qflow_node.codec.envelope_bodies import SUBNET_PATTERN
from qflow_node.identity.keys import (
    SIGNATURE_LEN,
    IdentityError,
    SigningKey,
    public_key_from_did,
    verify,
)

FORMAT: Final = "qflow.submission/1"
SIG_DOMAIN: Final = b"qflow/submission/v1\x00"
NONCE_LEN: Final = 16
MAX_INT: Final = (1 << 63) - 1
MAX_CAPS: Final = 16
MAX_CAP_LEN: Final = 64 << 10  # a Biscuit token with a few attenuations is ~1 KiB
PRIORITIES: Final = ("high", "normal", "low")
DEFAULT_SUBNET: Final = "default"
FIELDS: Final = frozenset(
    {
        "format",
        "flow",
        "inputs",
        "submitter",
        "nonce",
        "ts",
        "priority",
        "deadline",
        "subnet",
        "caps",
        "sig",
    }
)
REASONS: Final = frozenset(
    {"not_dag_cbor", "wrong_format", "bad_field", "bad_signature", "hash_mismatch"}
)

Priority = Literal["high", "normal", "low"]

_PRIORITY: Final[dict[str, Priority]] = {"high": "high", "normal": "normal", "low": "low"}
_SUBNET: Final = re.compile(SUBNET_PATTERN)
_LINK_LEN: Final = 36
_DAG_CBOR_PREFIX: Final = bytes([0x01, DAG_CBOR, 0x12, 0x20])
_RAW_PREFIX: Final = bytes([0x01, RAW, 0x12, 0x20])


class SubmissionError(ValueError):
    """A submission refused; `reason` is one of REASONS (stable), `message` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Submission:
    """A verified v1 submission. `cid` is the execution id."""

    cid: CID
    flow: CID  # the compiled flow (dag-cbor)
    inputs: CID  # a raw block of UTF-8 JSON
    submitter: str  # did:key; `sig` verifies under it
    nonce: bytes
    ts: int  # ms, the submitter's clock: informational
    priority: Priority
    deadline: int | None  # ms since the epoch, after `ts`
    subnet: str
    caps: tuple[bytes, ...]  # capability tokens
    sig: bytes


def signing_message(unsigned: Mapping[str, Any]) -> bytes:
    """What the submitter signs: the domain, then dag-cbor of the map without `sig`."""
    return SIG_DOMAIN + encode_dag({k: v for k, v in unsigned.items() if k != "sig"})


def build_submission(
    key: SigningKey,
    *,
    flow: CID,
    inputs: CID,
    nonce: bytes,
    ts: int,
    priority: Priority = "normal",
    deadline: int | None = None,
    subnet: str = DEFAULT_SUBNET,
    caps: Iterable[bytes] = (),
) -> Block:
    """The signed submission block; ValueError for anything a verifier would refuse."""
    unsigned: dict[str, Any] = {
        "format": FORMAT,
        "flow": flow,
        "inputs": inputs,
        "submitter": key.did,
        "nonce": nonce,
        "ts": ts,
        "priority": priority,
        "deadline": deadline,
        "subnet": subnet,
        "caps": list(caps),
    }
    try:
        signed = {**unsigned, "sig": key.sign(signing_message(unsigned))}
        data = encode_dag(signed)
    except UnencodableError as exc:
        raise ValueError(f"cannot build a submission: {exc}") from None
    block = Block(cid_for(data, DAG_CBOR), data)
    # One set of rules: what we build must pass what every peer checks.
    try:
        verify_submission(block.cid, block.data)
    except SubmissionError as exc:
        raise ValueError(f"cannot build a submission: {exc}") from None
    return block


def verify_submission(cid: CID, data: bytes) -> Submission:
    """Check `data` (received as `cid`) is a valid, correctly signed v1 submission."""
    raw = cid.cid_bytes
    if len(raw) != _LINK_LEN or raw[:4] != _DAG_CBOR_PREFIX:
        raise SubmissionError("not_dag_cbor", "a submission's CID must be a dag-cbor sha2-256 CID")
    if len(data) > MAX_BLOCK_SIZE:  # before hashing: refuse a huge input cheaply
        raise SubmissionError(
            "not_dag_cbor", f"block of {len(data)} bytes exceeds the {MAX_BLOCK_SIZE}-byte cap"
        )
    if cid_for(data, DAG_CBOR) != cid:
        raise SubmissionError("hash_mismatch", f"block bytes do not hash to {cid.encode()}")
    try:
        obj = decode_dag(data)
    except CodecError as exc:
        raise SubmissionError("not_dag_cbor", str(exc)) from None
    if type(obj) is not dict:
        raise SubmissionError("wrong_format", f"a submission is a map, got {type(obj).__name__}")
    fmt = obj.get("format")
    if fmt != FORMAT:
        raise SubmissionError("wrong_format", f"'format' is {_show(fmt)}, expected {FORMAT!r}")
    submission = _fields(cid, obj)
    try:
        verify(public_key_from_did(submission.submitter), signing_message(obj), submission.sig)
    except IdentityError:
        raise SubmissionError(
            "bad_signature", "the signature does not verify under the submitter's key"
        ) from None
    return submission


def _fields(cid: CID, obj: dict[str, Any]) -> Submission:
    if obj.keys() != FIELDS:
        missing, unknown = sorted(FIELDS - obj.keys()), sorted(obj.keys() - FIELDS)
        parts = [f"missing field(s) {missing}"] if missing else []
        parts += [f"unknown field(s) {unknown}"] if unknown else []
        raise _bad("; ".join(parts))
    flow, inputs = obj["flow"], obj["inputs"]
    if not _is_link(flow, _DAG_CBOR_PREFIX):
        raise _bad("'flow' must be a link to a dag-cbor block (the compiled flow)")
    if not _is_link(inputs, _RAW_PREFIX):
        raise _bad("'inputs' must be a link to a raw block (the inputs as JSON)")
    submitter = obj["submitter"]
    try:
        public_key_from_did(submitter if type(submitter) is str else "")
    except IdentityError as exc:
        raise _bad(f"'submitter' must be an Ed25519 did:key: {exc}") from None
    nonce = obj["nonce"]
    if type(nonce) is not bytes or len(nonce) != NONCE_LEN:
        raise _bad(f"'nonce' must be {NONCE_LEN} bytes")
    ts = obj["ts"]
    if not _is_ms(ts):
        raise _bad(f"'ts' must be an int of milliseconds in [0, 2^63), got {_show(ts)}")
    priority = _PRIORITY.get(obj["priority"]) if type(obj["priority"]) is str else None
    if priority is None:
        raise _bad(f"'priority' must be one of {list(PRIORITIES)}, got {_show(obj['priority'])}")
    deadline = obj["deadline"]
    if deadline is not None and (not _is_ms(deadline) or deadline <= ts):
        raise _bad(f"'deadline' must be null or an int of ms after 'ts', got {_show(deadline)}")
    subnet = obj["subnet"]
    if type(subnet) is not str or not _SUBNET.match(subnet):
        raise _bad(f"'subnet' must match {SUBNET_PATTERN}, got {_show(subnet)}")
    caps = obj["caps"]
    if type(caps) is not list or len(caps) > MAX_CAPS:
        raise _bad(f"'caps' must be a list of at most {MAX_CAPS} tokens")
    for i, token in enumerate(caps):
        if type(token) is not bytes or not 1 <= len(token) <= MAX_CAP_LEN:
            raise _bad(f"caps[{i}] must be a token of 1 to {MAX_CAP_LEN} bytes")
    sig = obj["sig"]
    if type(sig) is not bytes or len(sig) != SIGNATURE_LEN:
        raise _bad(f"'sig' must be {SIGNATURE_LEN} bytes")
    return Submission(
        cid=cid,
        flow=flow,
        inputs=inputs,
        submitter=submitter,
        nonce=nonce,
        ts=ts,
        priority=priority,
        deadline=deadline,
        subnet=subnet,
        caps=tuple(caps),
        sig=sig,
    )


def _bad(message: str) -> SubmissionError:
    return SubmissionError("bad_field", message)


def _is_link(value: object, prefix: bytes) -> bool:
    return type(value) is CID and len(raw := value.cid_bytes) == _LINK_LEN and raw[:4] == prefix


def _is_ms(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_INT


def _show(value: object) -> str:
    """A short rendering of a hostile value for a message."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(value).__name__}"
