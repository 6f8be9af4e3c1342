"""Outcomes, decisions, the signed statement and certificates: exact bytes, strict decoding."""

from __future__ import annotations

from typing import Any

import pytest

from qflow_node.codec import DAG_CBOR, RAW, cid_for, decode_dag, encode_dag, raw_block
from qflow_node.core.critical import (
    STATEMENT_TYPE,
    Certificate,
    Decision,
    FormatError,
    Outcome,
    error_object,
    error_text,
    outcome_digest,
    statement_bytes,
    verify_certificate,
)
from qflow_node.core.critical.statement import MAX_ERROR_KIND_LEN, MAX_ERROR_LEN
from qflow_node.core.critical.testing import (
    EXEC,
    POLICY,
    SLOT,
    SUBNET,
    committee,
    outcome,
)
from qflow_node.core.scheduling import Slot
from qflow_node.crypto import SecretKey, sign

X = outcome(b"paid 10")
FAILED = Outcome.failure(SLOT, "step", "insufficient funds")


def certificate(decision: Decision, slot: Slot = SLOT, subnet: str = SUBNET) -> Certificate:
    """A certificate made the direct way: the group secret signs the statement."""
    group = committee(3, 5)
    sig = sign(group.secret, statement_bytes(subnet, POLICY, slot, decision))
    return Certificate(POLICY, decision, sig.to_bytes())


def test_the_statement_is_the_designed_dag_cbor_map() -> None:
    data = statement_bytes(SUBNET, POLICY, SLOT, Decision.commit(X))
    assert decode_dag(data) == {
        "v": 1,
        "type": "qflow/critical-decision",
        "subnet": SUBNET,
        "policy": POLICY,
        "slot": {"exec": EXEC, "step": "pay", "attempt": 0},
        "decision": "commit",
        "outcome": {
            "exec": EXEC,
            "step": "pay",
            "attempt": 0,
            "status": "completed",
            "value": raw_block(b"paid 10").cid,
            "delta": None,
            "error": None,
        },
    }
    assert encode_dag(decode_dag(data)) == data  # canonical
    abort = decode_dag(statement_bytes(SUBNET, POLICY, SLOT, Decision.abort()))
    assert abort["decision"] == "abort"
    assert abort["outcome"] is None
    assert abort["type"] == STATEMENT_TYPE


def test_every_field_changes_the_statement() -> None:
    base = statement_bytes(SUBNET, POLICY, SLOT, Decision.commit(X))
    other_slot = Slot(EXEC, "pay", 1)
    variants = [
        statement_bytes("other", POLICY, SLOT, Decision.commit(X)),
        statement_bytes(SUBNET, cid_for(b"rotated", DAG_CBOR), SLOT, Decision.commit(X)),
        statement_bytes(SUBNET, POLICY, other_slot, Decision.commit(outcome(slot=other_slot))),
        statement_bytes(SUBNET, POLICY, SLOT, Decision.commit(outcome(b"paid 11"))),
        statement_bytes(SUBNET, POLICY, SLOT, Decision.commit(FAILED)),
        statement_bytes(SUBNET, POLICY, SLOT, Decision.abort()),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_a_commit_is_only_stated_for_its_own_slot() -> None:
    with pytest.raises(ValueError, match=r"another slot"):
        statement_bytes(SUBNET, POLICY, Slot(EXEC, "pay", 1), Decision.commit(X))
    with pytest.raises(FormatError, match=r"subnet"):
        statement_bytes("Not A Subnet", POLICY, SLOT, Decision.abort())


def test_outcome_rules() -> None:
    with pytest.raises(FormatError, match=r"outcome.error"):
        Outcome(EXEC, "pay", 0, "failed", None, None, None)
    with pytest.raises(FormatError, match=r"outcome.error"):
        Outcome(EXEC, "pay", 0, "completed", None, None, FAILED.error)
    with pytest.raises(FormatError, match=r"outcome.value"):
        Outcome(EXEC, "pay", 0, "failed", raw_block(b"x").cid, None, FAILED.error)
    with pytest.raises(FormatError, match=r"outcome.status"):
        Outcome(EXEC, "pay", 0, "done", None, None, None)  # type: ignore[arg-type]  # a bad status on purpose
    with pytest.raises(FormatError, match=r"outcome.error"):
        Outcome(EXEC, "pay", 0, "failed", None, None, "")
    assert X.slot == SLOT
    assert Outcome(EXEC, "pay", 0, "failed", None, None, FAILED.error) == FAILED


def test_a_failed_outcomes_error_is_the_canonical_json_of_kind_and_message() -> None:
    assert FAILED.error == '{"kind":"step","message":"insufficient funds"}'
    assert error_object(FAILED.error) == {"kind": "step", "message": "insufficient funds"}
    # Characters as themselves; only quotes, backslashes and control characters escaped.
    text = error_text("trap", 'é "q" \\ \n\x01 ✓')
    assert text == '{"kind":"trap","message":"é \\"q\\" \\\\ \\n\\u0001 ✓"}'
    assert error_object(text) == {"kind": "trap", "message": 'é "q" \\ \n\x01 ✓'}
    assert error_text("step", "") == '{"kind":"step","message":""}'


def test_a_long_message_is_cut_alike_everywhere_to_fit() -> None:
    for message in ("m" * 5000, "\x01" * 5000, "é" * 2000):
        text = error_text("timeout", message)
        assert len(text) <= MAX_ERROR_LEN
        cut = error_object(text)["message"]
        assert message.startswith(cut) and len(cut) < len(message)
        assert error_text("timeout", cut) == text  # the record's message gives the same
    with pytest.raises(ValueError, match=r"error kind"):
        error_text("", "boom")
    with pytest.raises(ValueError, match=r"error kind"):
        error_text("k" * (MAX_ERROR_KIND_LEN + 1), "boom")
    with pytest.raises(ValueError, match=r"lone surrogate"):
        error_text("step", "\ud800")


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("insufficient funds", "not JSON text"),
        ('["step","boom"]', r"not JSON text of \{kind, message\} \(two strings\)"),
        ("[" * 500 + "]" * 500, "two strings"),
        ('{"kind":"step"}', "two strings"),
        ('{"kind":"step","message":"boom","at":1}', "two strings"),
        ('{"kind":"step","message":3}', "two strings"),
        ('{"kind":"","message":"boom"}', "the kind has 1..64"),
        ('{"message":"boom","kind":"step"}', "not canonical JSON"),
        ('{"kind": "step", "message": "boom"}', "not canonical JSON"),
        ('{"kind":"step","message":"\\u00e9"}', "not canonical JSON"),
        ('{"kind":"step","message":"a","message":"a"}', "not canonical JSON"),
        ('{"kind":"step","message":"boom"}\n', "not canonical JSON"),
    ],
)
def test_other_error_texts_are_refused(error: str, message: str) -> None:
    with pytest.raises(FormatError, match=f"^outcome.error: .*{message}"):
        Outcome(EXEC, "pay", 0, "failed", None, None, error)
    with pytest.raises(FormatError, match=f"^vote.error: .*{message}"):
        error_object(error, "vote.error")


@pytest.mark.parametrize("item", [X, FAILED, Outcome(EXEC, "pay", 7, "completed", None, None)])
def test_outcomes_round_trip(item: Outcome) -> None:
    assert Outcome.from_obj(decode_dag(encode_dag(item.to_obj()))) == item
    assert outcome_digest(item) == outcome_digest(Outcome.from_obj(item.to_obj()))


def test_outcome_digests_differ() -> None:
    assert outcome_digest(X) != outcome_digest(outcome(b"paid 11"))


def mutated(obj: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    """A copy of `obj` with the field at `path` set to `value` (deleted if value is DELETE)."""
    copy: dict[str, Any] = dict(obj)
    if len(path) > 1:
        copy[path[0]] = mutated(copy[path[0]], path[1:], value)
    elif value is DELETE:
        del copy[path[0]]
    else:
        copy[path[0]] = value
    return copy


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("exec",), "bafy...", "outcome.exec: expected a CID link"),
        (("exec",), raw_block(b"x").cid, "outcome.exec: .* must be a dag-cbor link"),
        (("step",), "", r"outcome.step: length 0 is outside 1..256"),
        (("step",), "s" * 257, r"outcome.step: length 257"),
        (("step",), "$start", "outcome.step: '\\$start' is not a step instance"),
        (("step",), "a\x00b", "outcome.step: .* is not a step instance"),
        (("step",), 3, "outcome.step: expected a string, got 3"),
        (("attempt",), True, "outcome.attempt: expected an int, got True"),
        (("attempt",), -1, "outcome.attempt: -1 is outside"),
        (("attempt",), 1 << 32, "outcome.attempt: 4294967296 is outside"),
        (("status",), "ok", "outcome.status: expected one of"),
        (("value",), b"\x01\x55", "outcome.value: expected a CID link"),
        (("error",), "e" * 1025, "outcome.error: length 1025"),
        (("delta",), DELETE, r"outcome: missing field\(s\) \['delta'\]"),
        (("extra",), 1, r"outcome: unknown field\(s\) \[\"'extra'\"\]"),
    ],
)
def test_hostile_outcomes_are_refused_by_field(
    path: tuple[str, ...], value: object, message: str
) -> None:
    with pytest.raises(FormatError, match=message):
        Outcome.from_obj(mutated(X.to_obj(), path, value))


def test_outcome_links_must_be_cidv1_sha256() -> None:
    cidv0ish = cid_for(b"x", RAW).__class__(b"\x12\x20" + bytes(32))
    with pytest.raises(FormatError, match=r"outcome.value: unsupported CID .*CIDv0"):
        Outcome.from_obj(mutated(X.to_obj(), ("value",), cidv0ish))
    with pytest.raises(FormatError, match=r"outcome: expected a map, got a list"):
        Outcome.from_obj([])


def test_certificates_round_trip_and_verify() -> None:
    group = committee(3, 5)
    for decision in (Decision.commit(X), Decision.commit(FAILED), Decision.abort()):
        cert = certificate(decision)
        again = Certificate.from_obj(decode_dag(encode_dag(cert.to_obj())))
        assert again == cert
        assert set(cert.to_obj()) == {"policy", "decision", "outcome", "sig"}
        assert verify_certificate(again, group.keys, SUBNET, SLOT)


def test_a_certificate_verifies_only_for_its_statement() -> None:
    group = committee(3, 5)
    cert = certificate(Decision.commit(X))
    assert not verify_certificate(cert, group.keys, "other", SLOT)
    assert not verify_certificate(cert, group.keys, SUBNET, Slot(EXEC, "pay", 1))
    assert not verify_certificate(cert, committee(3, 5, secret=SecretKey(7)).keys, SUBNET, SLOT)
    rotated = Certificate(cid_for(b"rotated", DAG_CBOR), cert.decision, cert.sig)
    assert not verify_certificate(rotated, group.keys, SUBNET, SLOT)
    swapped = Certificate(POLICY, Decision.commit(outcome(b"paid 11")), cert.sig)
    assert not verify_certificate(swapped, group.keys, SUBNET, SLOT)
    aborted = Certificate(POLICY, Decision.abort(), cert.sig)
    assert not verify_certificate(aborted, group.keys, SUBNET, SLOT)
    garbage = Certificate(POLICY, cert.decision, b"\x00" * 96)
    assert not verify_certificate(garbage, group.keys, SUBNET, SLOT)
    # An abort certificate holds for its own slot only, though abort names no outcome.
    abort = certificate(Decision.abort())
    assert verify_certificate(abort, group.keys, SUBNET, SLOT)
    assert not verify_certificate(abort, group.keys, SUBNET, Slot(EXEC, "pay", 1))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("sig",), b"\x00" * 95, "certificate.sig: expected 96 bytes, got 95"),
        (("sig",), b"\xc0" + b"\x00" * 94 + b"\x01", "certificate.sig: non-canonical G2"),
        (("sig",), "sig", "certificate.sig: expected bytes"),
        (("policy",), raw_block(b"p").cid, "certificate.policy: .* must be a dag-cbor link"),
        (("decision",), "maybe", "certificate.decision: expected one of"),
        (("outcome",), None, "certificate.outcome: a commit needs its outcome"),
        (("outcome", "status"), "lost", "certificate.outcome.status: expected one of"),
        (("quorum",), 1, r"certificate: unknown field\(s\)"),
    ],
)
def test_hostile_certificates_are_refused_by_field(
    path: tuple[str, ...], value: object, message: str
) -> None:
    obj = certificate(Decision.commit(X)).to_obj()
    with pytest.raises(FormatError, match=message):
        Certificate.from_obj(mutated(obj, path, value))


def test_an_abort_certificate_has_no_outcome() -> None:
    obj = certificate(Decision.abort()).to_obj()
    with pytest.raises(FormatError, match=r"certificate.outcome: must be null for an abort"):
        Certificate.from_obj(mutated(obj, ("outcome",), X.to_obj()))
