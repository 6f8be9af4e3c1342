"""What validators sign: a decision on a slot, the statement bytes, and the certificate.

docs/consensus.md, "Words". An *outcome* is what a step attempt
produced, without who wrote it or when, so two honest executions of a deterministic
step give equal outcomes. A *decision* is `commit(outcome)` or `abort`. The *statement*
is the canonical dag-cbor that a validator's BLS share signs; it names the subnet and
the policy (hence the validator set and group key) so a signature never counts for
another subnet or after a key rotation. A *certificate* is t partials combined: the
plain BLS signature of the statement under the group key, the same 96 bytes whichever
t validators signed.

A failed outcome's `error` is the error object of its `step.failed` record, `{kind,
message}`, as canonical JSON text ("Other points" in the design): `error_text` makes it
(cutting the message so that it fits, the same way everywhere), `error_object` reads it
back, and an outcome holding anything else is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from qflow_node.codec import CID, dag_block, encode_dag
from qflow_node.codec.envelope_bodies import MAX_STEP_LEN, SUBNET_PATTERN
from qflow_node.core.critical.fields import (
    FormatError,
    blob,
    choice,
    fields,
    integer,
    link,
    text,
)
from qflow_node.core.scheduling.rank import MAX_ATTEMPT, RESERVED, Slot
from qflow_node.crypto import SIGNATURE_LEN, DecodeError, KeySet, Signature, verify

VERSION: Final = 1
STATEMENT_TYPE: Final = "qflow/critical-decision"
MAX_ERROR_LEN: Final = 1024  # characters of a failed outcome's error (its JSON text)
MAX_ERROR_KIND_LEN: Final = 64
ERROR_FIELDS: Final = frozenset({"kind", "message"})
COMMIT: Final = "commit"
ABORT: Final = "abort"
STATUSES: Final = ("completed", "failed", "decided")  # decided: docs/consensus.md, "Decisions"
SUBNET: Final = re.compile(SUBNET_PATTERN)

Status = Literal["completed", "failed", "decided"]

SLOT_FIELDS: Final = frozenset({"exec", "step", "attempt"})
OUTCOME_FIELDS: Final = frozenset({"exec", "step", "attempt", "status", "value", "delta", "error"})
DECISION_FIELDS: Final = frozenset({"decision", "outcome"})
CERTIFICATE_FIELDS: Final = DECISION_FIELDS | {"policy", "sig"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What attempt `attempt` of step `step` of `exec` produced (no writer, no time).

    `value` and `delta` are the output and state-delta blocks; `error` is set exactly
    when the step failed, and a failed step has no value.
    """

    exec: CID
    step: str
    attempt: int
    status: Status
    value: CID | None = None
    delta: CID | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        problem = _outcome_problem(self.status, self.value, self.error)
        if problem is not None:
            raise FormatError(f"outcome.{problem}")

    @classmethod
    def failure(cls, slot: Slot, kind: str, message: str, delta: CID | None = None) -> Outcome:
        """The failed outcome of `slot` with the error `{kind, message}` (see `error_text`)."""
        return cls(
            slot.exec, slot.name, slot.attempt, "failed", None, delta, error_text(kind, message)
        )

    @property
    def slot(self) -> Slot:
        return Slot(self.exec, self.step, self.attempt)

    def to_obj(self) -> dict[str, Any]:
        return {
            "exec": self.exec,
            "step": self.step,
            "attempt": self.attempt,
            "status": self.status,
            "value": self.value,
            "delta": self.delta,
            "error": self.error,
        }

    @classmethod
    def from_obj(cls, obj: object, path: str = "outcome") -> Outcome:
        f = fields(obj, path, OUTCOME_FIELDS)
        slot = _slot_fields(f, path)
        status = cast(Status, choice(f["status"], f"{path}.status", STATUSES))
        value = None if f["value"] is None else link(f["value"], f"{path}.value")
        delta = None if f["delta"] is None else link(f["delta"], f"{path}.delta")
        error = f["error"]
        if error is not None:
            error = text(error, f"{path}.error", max_len=MAX_ERROR_LEN)
        problem = _outcome_problem(status, value, error)
        if problem is not None:
            raise FormatError(f"{path}.{problem}")
        return cls(slot.exec, slot.name, slot.attempt, status, value, delta, error)


def _outcome_problem(status: str, value: CID | None, error: str | None) -> str | None:
    """What breaks the outcome rules, as `field: why`, or None."""
    if status not in STATUSES:
        return f"status: expected one of {list(STATUSES)}"
    if (status == "failed") != (error is not None):
        return "error: set exactly when status is 'failed'"
    if error is not None and not 1 <= len(error) <= MAX_ERROR_LEN:
        return f"error: length must be 1..{MAX_ERROR_LEN}"
    if status == "failed" and value is not None:
        return "value: a failed outcome has no value"
    if status == "decided" and value is None:
        return "value: a decided outcome names its decision's block"
    if error is not None:
        try:
            error_object(error, "error")
        except FormatError as exc:
            return str(exc)
    return None


def _canonical_error(kind: str, message: str) -> str:
    # Canonical JSON (as RFC 8785 for strings): sorted keys, no whitespace, characters
    # as themselves, only '"', '\\' and C0 controls escaped.
    return json.dumps(
        {"kind": kind, "message": message},
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )


def error_text(kind: str, message: str) -> str:
    """A failed outcome's `error`: the canonical JSON text of `{kind, message}`.

    If the text would exceed MAX_ERROR_LEN characters the message is cut (from the end,
    deterministically, so the coordinator and every validator cut it alike); the
    `step.failed` record must carry the cut message too, i.e. `error_object` of the
    outcome's error. ValueError for a kind that is empty, longer than
    MAX_ERROR_KIND_LEN, or either string holding a lone surrogate.
    """
    if not 1 <= len(kind) <= MAX_ERROR_KIND_LEN:
        raise ValueError(f"an error kind has 1..{MAX_ERROR_KIND_LEN} characters")
    for what, value in (("kind", kind), ("message", message)):
        if not _is_unicode(value):
            raise ValueError(f"the error {what} is not valid Unicode (a lone surrogate)")
    result = _canonical_error(kind, message)
    while len(result) > MAX_ERROR_LEN:
        # Every character of the message is at least one of the text's: cutting the
        # excess from the message shortens the text by at least as much.
        message = message[: len(message) - (len(result) - MAX_ERROR_LEN)]
        result = _canonical_error(kind, message)
    return result


def error_object(error: str, path: str = "outcome.error") -> dict[str, str]:
    """`{kind, message}` from a failed outcome's `error`; FormatError unless `error` is
    exactly what `error_text` makes of them."""
    if not _is_unicode(error):
        raise FormatError(f"{path}: not valid Unicode (a lone surrogate)")
    try:
        obj = json.loads(error)
    except (ValueError, RecursionError):
        raise FormatError(f"{path}: not JSON text of {{kind, message}}") from None
    if (
        type(obj) is not dict
        or obj.keys() != ERROR_FIELDS
        or type(obj["kind"]) is not str
        or type(obj["message"]) is not str
    ):
        raise FormatError(f"{path}: not JSON text of {{kind, message}} (two strings)")
    kind, message = obj["kind"], obj["message"]
    if not 1 <= len(kind) <= MAX_ERROR_KIND_LEN:
        raise FormatError(f"{path}: the kind has 1..{MAX_ERROR_KIND_LEN} characters")
    if _canonical_error(kind, message) != error:
        raise FormatError(
            f"{path}: not canonical JSON (sorted keys, no spaces, no needless escapes)"
        )
    return {"kind": kind, "message": message}


def _is_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def outcome_digest(outcome: Outcome) -> CID:
    """The CID of the outcome's dag-cbor: what a `mismatch` refusal shows of its own."""
    return dag_block(outcome.to_obj()).cid


@dataclass(frozen=True, slots=True)
class Decision:
    """`commit(outcome)`, or `abort` when `outcome` is None. Hashable: partials are kept per
    decision."""

    outcome: Outcome | None = None

    @classmethod
    def commit(cls, outcome: Outcome) -> Decision:
        return cls(outcome)

    @classmethod
    def abort(cls) -> Decision:
        return cls(None)

    @property
    def kind(self) -> Literal["commit", "abort"]:
        return "abort" if self.outcome is None else "commit"

    def applies_to(self, slot: Slot) -> bool:
        """Abort applies to any slot; a commit only to its outcome's own slot."""
        return self.outcome is None or self.outcome.slot == slot

    def to_obj(self) -> dict[str, Any]:
        """The `decision` and `outcome` entries of the map that holds it."""
        outcome = None if self.outcome is None else self.outcome.to_obj()
        return {"decision": self.kind, "outcome": outcome}

    @classmethod
    def from_fields(cls, f: Mapping[str, Any], path: str) -> Decision:
        """From the `decision` and `outcome` entries of an already key-checked map."""
        kind = choice(f["decision"], f"{path}.decision", (COMMIT, ABORT))
        if kind == ABORT:
            if f["outcome"] is not None:
                raise FormatError(f"{path}.outcome: must be null for an abort")
            return cls.abort()
        if f["outcome"] is None:
            raise FormatError(f"{path}.outcome: a commit needs its outcome")
        return cls.commit(Outcome.from_obj(f["outcome"], f"{path}.outcome"))


def slot_to_obj(slot: Slot) -> dict[str, Any]:
    return {"exec": slot.exec, "step": slot.name, "attempt": slot.attempt}


def slot_from_obj(obj: object, path: str = "slot") -> Slot:
    return _slot_fields(fields(obj, path, SLOT_FIELDS), path)


def _slot_fields(f: Mapping[str, Any], path: str) -> Slot:
    exec_ = link(f["exec"], f"{path}.exec", dag_cbor_only=True)
    step = text(f["step"], f"{path}.step", max_len=MAX_STEP_LEN)
    # Only step instances are critical: the reserved names are execution-level writes.
    if "\x00" in step or step in RESERVED:
        raise FormatError(f"{path}.step: {step!r} is not a step instance name")
    attempt = integer(f["attempt"], f"{path}.attempt", 0, MAX_ATTEMPT)
    return Slot(exec_, step, attempt)


def check_subnet(subnet: object, path: str = "subnet") -> str:
    return text(subnet, path, max_len=64, pattern=SUBNET)


def statement_bytes(subnet: str, policy: CID, slot: Slot, decision: Decision) -> bytes:
    """The bytes a validator's share signs for `decision` on `slot` (canonical dag-cbor)."""
    check_subnet(subnet)
    if not decision.applies_to(slot):
        raise ValueError(f"the outcome is for another slot than {slot}")
    return encode_dag(
        {
            "v": VERSION,
            "type": STATEMENT_TYPE,
            "subnet": subnet,
            "policy": policy,
            "slot": slot_to_obj(slot),
            **decision.to_obj(),
        }
    )


def decode_signature(data: bytes, path: str) -> Signature:
    """A checked G2 point (length, encoding, subgroup, not identity) or FormatError."""
    try:
        return Signature.from_bytes(blob(data, path, size=SIGNATURE_LEN), path)
    except DecodeError as exc:
        raise FormatError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Certificate:
    """The group's signature on `decision` under `policy`: what a record's `quorum` holds.

    Its map is `{policy, decision, outcome, sig}`: with the record's subnet and slot it is
    all a replica needs to recompute the statement and check `sig` under the group key.
    """

    policy: CID
    decision: Decision
    sig: bytes

    def to_obj(self) -> dict[str, Any]:
        return {"policy": self.policy, **self.decision.to_obj(), "sig": self.sig}

    @classmethod
    def from_obj(cls, obj: object, path: str = "certificate") -> Certificate:
        f = fields(obj, path, CERTIFICATE_FIELDS)
        policy = link(f["policy"], f"{path}.policy", dag_cbor_only=True)
        decision = Decision.from_fields(f, path)
        sig = decode_signature(f["sig"], f"{path}.sig").to_bytes()
        return cls(policy, decision, sig)


def verify_certificate(cert: Certificate, keys: KeySet, subnet: str, slot: Slot) -> bool:
    """Whether `cert` certifies its decision on `slot` of `subnet` under `keys`.

    `keys` must be the group key of `cert.policy`: that binding is the caller's (the
    policy block names its key set).
    """
    if not cert.decision.applies_to(slot):
        return False
    try:
        sig = Signature.from_bytes(cert.sig)
    except DecodeError:
        return False
    return verify(keys.public_key, statement_bytes(subnet, cert.policy, slot, cert.decision), sig)
