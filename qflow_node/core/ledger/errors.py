"""Reason codes for refused records and ledgers, and the error that carries them."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a record or a ledger was refused. The values are part of the protocol (stable)."""

    # A linked (or requested) block is not in the store.
    MISSING_BLOCK = "missing_block"
    # A record link (prev or head) names a block that is not dag-cbor.
    WRONG_CODEC = "wrong_codec"
    # The bytes under a CID do not hash to it.
    HASH_MISMATCH = "hash_mismatch"
    # Not canonical DAG-CBOR: truncated, trailing bytes, non-minimal, unsorted keys, oversize…
    NOT_CANONICAL = "not_canonical"
    # `v` is not a version this implementation knows.
    UNSUPPORTED_VERSION = "unsupported_version"
    # A field is missing, unknown, of the wrong type or out of range, or breaks a kind rule.
    BAD_FIELD = "bad_field"
    # `exec` differs from the execution being verified.
    WRONG_EXEC = "wrong_exec"
    # One `prev` entry is an ancestor of another: prev must be an antichain.
    PREV_NOT_ANTICHAIN = "prev_not_antichain"
    # The clock is not exactly the parents' merged clock with `node`'s entry incremented.
    CLOCK_INCONSISTENT = "clock_inconsistent"
    # `sig` does not verify under the key inside `node`.
    BAD_SIGNATURE = "bad_signature"
    # The links form a cycle (only reachable when block hashes are not checked).
    CYCLE = "cycle"
    # The DAG has more records than the caller allowed.
    TOO_MANY_RECORDS = "too_many_records"


class RecordError(ValueError):
    """A record that breaks a rule of the format; `reason` says which."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
