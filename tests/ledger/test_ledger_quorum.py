"""The `quorum` field: a critical step's certificate on its step.completed / step.failed
record. Its shape and its agreement with the record are per-record rules; the signature
covers it; records without one are unchanged (the golden vectors are in
test_ledger_vectors.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from qflow_node.codec import CID, DAG_CBOR, cid_for, dag_block, raw_block
from qflow_node.core.critical import Certificate, Decision, FormatError, Outcome, error_text
from qflow_node.core.critical.testing import certify, committee
from qflow_node.core.ledger import (
    SIG_DOMAIN,
    Reason,
    RecordError,
    check_record,
    decode_record,
    new_record,
    signing_message,
    unsigned_bytes,
    verify_execution,
)
from qflow_node.core.ledger.testing import KEYS, PAYLOAD, SUBMISSION, Replica, World, sign_obj
from qflow_node.core.scheduling import Slot
from qflow_node.identity.keys import verify

GROUP = committee(3, 4)
DELTA = raw_block(b"a crdt update")
SLOT = Slot(SUBMISSION.cid, "pay", 2)
COMPLETED = Outcome(SUBMISSION.cid, "pay", 2, "completed", dag_block({"paid": 10}).cid, DELTA.cid)
FAILED = Outcome(SUBMISSION.cid, "pay", 2, "failed", None, None, error_text("trap", "boom"))
COMMIT = certify(GROUP, SLOT, Decision.commit(COMPLETED))
ABORT = certify(GROUP, SLOT, Decision.abort())


def world_with(kind: str, quorum: Certificate | None, **fields: Any) -> tuple[World, CID]:
    world = World()
    world.put(DELTA)
    replica = Replica(KEYS[0])
    world.append(replica)
    fields.setdefault("step", "pay")
    fields.setdefault("attempt", 2)
    head = world.append(replica, kind, quorum=quorum, **fields)
    return world, head


def completed_obj(**changes: Any) -> dict[str, Any]:
    world, head = world_with("step.completed", COMMIT, state=DELTA.cid)
    obj = world.records[head].to_obj()
    obj.update(changes)
    return obj


@pytest.mark.parametrize(
    ("kind", "cert", "state"),
    [
        ("step.completed", COMMIT, DELTA.cid),
        ("step.failed", certify(GROUP, SLOT, Decision.commit(FAILED)), None),
        ("step.failed", ABORT, None),
    ],
)
def test_a_record_with_a_certificate_round_trips(
    kind: str, cert: Certificate, state: CID | None
) -> None:
    world, head = world_with(kind, cert, state=state)
    record = world.records[head]
    assert record.quorum == cert.to_obj() and record.certificate == cert
    data = world.lookup(head)
    assert data is not None
    assert decode_record(head, data) == record
    assert record.to_obj()["quorum"] == cert.to_obj()
    assert dag_block(record.to_obj()).cid == head
    # The signature covers the certificate, and the fast cut of the signed bytes holds.
    assert signing_message(data, record.ts) == SIG_DOMAIN + unsigned_bytes(record.to_obj())
    verify(KEYS[0].public_key, SIG_DOMAIN + unsigned_bytes(record.to_obj()), record.sig)
    report = verify_execution([head], world.lookup, resolve_links=True)
    assert report.ok and report.records == 2


def test_the_signature_covers_the_certificate() -> None:
    world, head = world_with("step.completed", COMMIT, state=DELTA.cid)
    obj = world.records[head].to_obj()
    other = certify(GROUP, SLOT, Decision.commit(COMPLETED), signers=(2, 3, 4))
    assert other == COMMIT  # BLS is unique: any t signers make the same certificate
    forged = Certificate(COMMIT.policy, COMMIT.decision, ABORT.sig)  # a valid G2 point
    obj["quorum"] = forged.to_obj()
    tampered = dag_block(obj)  # the old signature, over the other certificate
    world.put(tampered)
    report = verify_execution([tampered.cid], world.lookup)
    assert not report.ok and report.failure is not None
    assert report.failure.reason is Reason.BAD_SIGNATURE


def test_records_without_a_certificate_are_as_before() -> None:
    world, head = world_with("step.completed", None)
    record = world.records[head]
    assert record.quorum is None and record.certificate is None
    assert record.to_obj()["quorum"] is None
    assert check_record(record.to_obj()) is None


def refused(obj: dict[str, Any]) -> str:
    with pytest.raises(RecordError) as info:
        check_record(obj)
    assert info.value.reason is Reason.BAD_FIELD
    return str(info.value)


def with_quorum(change: Any) -> dict[str, Any]:
    obj = completed_obj()
    quorum = copy.deepcopy(obj["quorum"])
    change(quorum)
    obj["quorum"] = quorum
    return obj


def test_check_record_returns_the_parsed_certificate() -> None:
    assert check_record(completed_obj()) == COMMIT


RAW_POLICY = cid_for(b"policy", 0x55)
HOSTILE: dict[str, tuple[Any, str]] = {
    "other fields": (
        lambda q: q.clear() or q.update(x=1),
        "'quorum' is not a certificate: quorum: missing field(s) ['decision', 'outcome', "
        """'policy', 'sig']; unknown field(s) ["'x'"]""",
    ),
    "missing sig": (lambda q: q.pop("sig"), "quorum: missing field(s) ['sig']"),
    "extra field": (lambda q: q.update(t=3), """quorum: unknown field(s) ["'t'"]"""),
    "raw policy": (
        lambda q: q.update(policy=RAW_POLICY),
        f"quorum.policy: {RAW_POLICY.encode()} must be a dag-cbor link",
    ),
    "policy as text": (
        lambda q: q.update(policy="bafy"),
        "quorum.policy: expected a CID link, got 'bafy'",
    ),
    "unknown decision": (
        lambda q: q.update(decision="maybe"),
        "quorum.decision: expected one of ['abort', 'commit'], got 'maybe'",
    ),
    "commit without outcome": (
        lambda q: q.update(outcome=None),
        "quorum.outcome: a commit needs its outcome",
    ),
    "abort with outcome": (
        lambda q: q.update(decision="abort"),
        "quorum.outcome: must be null for an abort",
    ),
    "short sig": (lambda q: q.update(sig=b"\x01" * 95), "quorum.sig: expected 96 bytes, got 95"),
    "sig not bytes": (lambda q: q.update(sig="00" * 96), "quorum.sig: expected bytes, got"),
    "sig not a point": (lambda q: q.update(sig=b"\xff" * 96), "quorum.sig: non-canonical G2 point"),
    "sig the identity": (
        lambda q: q.update(sig=b"\xc0" + bytes(95)),
        "quorum.sig: the identity point is not allowed",
    ),
    "outcome with a stray field": (
        lambda q: q["outcome"].update(x=1),
        """quorum.outcome: unknown field(s) ["'x'"]""",
    ),
    "completed with an error": (
        lambda q: q["outcome"].update(error=error_text("trap", "x")),
        "quorum.outcome.error: set exactly when status is 'failed'",
    ),
    "attempt as float": (
        lambda q: q["outcome"].update(attempt=2.0),
        "quorum.outcome.attempt: expected an int, got a float",
    ),
    "another exec": (
        lambda q: q["outcome"].update(exec=cid_for(b"x", DAG_CBOR)),
        f"is not the record's 'exec' {SUBMISSION.cid.encode()}: the certificate is for another",
    ),
    "another step": (
        lambda q: q["outcome"].update(step="refund"),
        "quorum.outcome.step: 'refund' is not the record's 'step' 'pay': the certificate "
        "is for another record",
    ),
    "another attempt": (
        lambda q: q["outcome"].update(attempt=1),
        "quorum.outcome.attempt: 1 is not the record's 'attempt' 2",
    ),
    "another status": (
        lambda q: q["outcome"].update(status="failed", value=None, error=error_text("t", "m")),
        "quorum.outcome.status: 'failed' is not the record's kind step.completed, i.e. 'completed'",
    ),
    "another delta": (
        lambda q: q["outcome"].update(delta=None),
        f"quorum.outcome.delta: None is not the record's 'state' {DELTA.cid.encode()}",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_certificates_are_refused_naming_the_field(case: str) -> None:
    change, message = HOSTILE[case]
    assert message in refused(with_quorum(change))


@pytest.mark.parametrize("quorum", [b"", "cert", 1, [], True])
def test_a_quorum_that_is_not_a_map_is_refused(quorum: Any) -> None:
    assert "'quorum' is not a certificate: quorum: expected a map, got" in refused(
        completed_obj(quorum=quorum)
    )


def test_a_certificate_only_on_records_that_settle_a_step() -> None:
    for kind in ("step.started", "step.skipped"):
        assert f"'quorum' must be null for kind {kind} (it settles no step)" in refused(
            completed_obj(kind=kind)
        )
    for kind in ("timer.fired", "event.received"):
        assert (  # a wait's record carries a decision's certificate, not a result's
            f"quorum.outcome.status: 'completed' certifies a step's result, not kind {kind} "
            "(a decision's status is 'decided')"
        ) in refused(completed_obj(kind=kind))
    assert "'quorum' must be null for kind exec.completed" in refused(
        completed_obj(kind="exec.completed", step=None, attempt=0, state=None)
    )
    abort_completes = completed_obj(quorum=ABORT.to_obj())
    assert "quorum.decision: an abort certificate only settles a step.failed" in refused(
        abort_completes
    )


DECIDED = Outcome(SUBMISSION.cid, "pay", 2, "decided", dag_block({"kind": "timer.fired"}).cid)


@pytest.mark.parametrize(
    "kind", ["timer.fired", "approval.granted", "event.received", "step.failed"]
)
def test_a_decisions_certificate_goes_on_any_record_that_settles_a_wait(kind: str) -> None:
    cert = certify(GROUP, SLOT, Decision.commit(DECIDED))
    actor = "did:key:z6MkjEvoemobV2cbn4c6ha61qSckQMjefQKuoRBnNCRakjpR"
    world, head = world_with(kind, cert, state=None, actor=actor)
    assert world.records[head].certificate == cert
    assert verify_execution([head], world.lookup, resolve_links=True).ok
    with_state = completed_obj(kind=kind, quorum=cert.to_obj(), actor=actor)  # state: DELTA
    assert "quorum.outcome.delta: None is not the record's 'state'" in refused(with_state)


def test_a_decided_outcome_names_its_decision() -> None:
    with pytest.raises(FormatError, match="value: a decided outcome names its decision's block"):
        Outcome(SUBMISSION.cid, "pay", 2, "decided")


def test_new_record_refuses_a_certificate_for_another_slot() -> None:
    world, head = world_with("step.completed", None)
    parents = {head: world.records[head].clock}
    with pytest.raises(RecordError) as info:
        new_record(
            SUBMISSION.cid,
            "step.completed",
            parents=parents,
            payload=PAYLOAD.cid,
            key=KEYS[0],
            ts=1,
            step="ship",
            attempt=2,
            state=DELTA.cid,
            quorum=COMMIT,
        )
    assert "quorum.outcome.step: 'pay' is not the record's 'step' 'ship'" in str(info.value)


def test_a_signed_record_with_a_hostile_certificate_fails_verification_as_bad_field() -> None:
    world, head = world_with("step.completed", COMMIT, state=DELTA.cid)
    obj = with_quorum(lambda q: q.update(sig=b"\x01" * 95))
    obj["prev"] = [head]
    block = sign_obj(obj, KEYS[0])
    world.put(block)
    report = verify_execution([block.cid], world.lookup)
    assert report.failure is not None and report.failure.reason is Reason.BAD_FIELD
    assert "quorum.sig: expected 96 bytes, got 95" in report.failure.message
