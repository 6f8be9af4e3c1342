"""A validator signs at most one decision per slot, persists it before saying so, and
answers every later request from that lock, across restarts."""

from __future__ import annotations

import pytest

from qflow_node.codec import DAG_CBOR, cid_for, decode_dag, encode_dag, raw_block
from qflow_node.core.critical import (
    AbortRequest,
    Answer,
    Decision,
    FormatError,
    Lock,
    Outcome,
    PersistLock,
    Prepare,
    Query,
    Refusal,
    Reply,
    SignedDecision,
    Validator,
    ValidatorAction,
    Vote,
    outcome_digest,
    statement_bytes,
)
from qflow_node.core.critical.testing import (
    EXEC,
    POLICY,
    SLOT,
    SUBNET,
    committee,
    outcome,
)
from qflow_node.core.scheduling import Slot
from qflow_node.crypto import Signature, verify_partial

GROUP = committee(3, 5)
SHARE = GROUP.shares[1]  # index 2
X = outcome(b"paid 10")
Y = outcome(b"paid 11")
PREPARE_X = Prepare(SUBNET, POLICY, SLOT, X)
PREPARE_Y = Prepare(SUBNET, POLICY, SLOT, Y)
ABORT = AbortRequest(SUBNET, POLICY, SLOT)


def validator() -> Validator:
    return Validator(SUBNET, POLICY, SHARE)


def reply(actions: tuple[ValidatorAction, ...]) -> Vote:
    assert isinstance(actions[-1], Reply)
    message = actions[-1].message
    assert isinstance(message, Vote)
    return message


def signed(vote: Vote) -> SignedDecision:
    assert vote.signed is not None
    return vote.signed


def assert_valid_partial(item: SignedDecision) -> None:
    statement = statement_bytes(SUBNET, POLICY, SLOT, item.decision)
    partial = Signature.from_bytes(item.partial)
    assert verify_partial(GROUP.keys.share_key(SHARE.index), statement, partial)


def test_a_yes_vote_persists_its_lock_before_the_reply() -> None:
    v = validator()
    actions = v.on_prepare(PREPARE_X, X)
    assert [type(a) for a in actions] == [PersistLock, Reply]
    lock = actions[0]
    assert isinstance(lock, PersistLock)
    vote = reply(actions)
    assert vote.yes and vote.index == 2 and vote.request == "prepare"
    assert signed(vote).decision == Decision.commit(X)
    assert lock.lock == Lock(SUBNET, POLICY, SLOT, signed(vote))
    assert v.lock(SLOT) == lock.lock
    assert_valid_partial(signed(vote))


def test_repeats_are_idempotent_and_persist_nothing_new() -> None:
    v = validator()
    first = reply(v.on_prepare(PREPARE_X, X))
    again = v.on_prepare(PREPARE_X, X)
    assert [type(a) for a in again] == [Reply]
    assert reply(again) == first  # the same partial bytes
    # Once locked the validator does not need (or look at) its own outcome.
    assert not v.needs_outcome(PREPARE_X)
    assert reply(v.on_prepare(PREPARE_X, None)) == first

    w = validator()
    aborted = reply(w.on_abort(ABORT))
    assert [type(a) for a in w.on_abort(ABORT)] == [Reply]
    assert reply(w.on_abort(ABORT)) == aborted


def test_prepare_x_then_prepare_y_is_refused_locked_with_x() -> None:
    v = validator()
    yes = reply(v.on_prepare(PREPARE_X, X))
    actions = v.on_prepare(PREPARE_Y, Y)
    assert [type(a) for a in actions] == [Reply]
    refusal = reply(actions)
    assert refusal.refusal is Refusal.LOCKED
    assert refusal.signed == yes.signed  # the vote for X, so a coordinator can finish X


def test_prepare_then_abort_is_refused_with_the_commit_vote() -> None:
    v = validator()
    yes = reply(v.on_prepare(PREPARE_X, X))
    refusal = reply(v.on_abort(ABORT))
    assert refusal.refusal is Refusal.LOCKED and refusal.request == "abort"
    assert refusal.signed == yes.signed


def test_abort_then_prepare_is_refused_aborted_with_the_abort_partial() -> None:
    v = validator()
    actions = v.on_abort(ABORT)
    assert [type(a) for a in actions] == [PersistLock, Reply]
    aborted = reply(actions)
    assert signed(aborted).decision == Decision.abort()
    assert_valid_partial(signed(aborted))
    refusal = reply(v.on_prepare(PREPARE_X, X))
    assert refusal.refusal is Refusal.ABORTED
    assert refusal.signed == aborted.signed


def test_a_mismatch_is_refused_without_a_lock() -> None:
    v = validator()
    actions = v.on_prepare(PREPARE_X, Y)
    assert [type(a) for a in actions] == [Reply]
    refusal = reply(actions)
    assert refusal.refusal is Refusal.MISMATCH
    assert refusal.signed is None and refusal.own == outcome_digest(Y)
    assert v.lock(SLOT) is None
    unknown = reply(v.on_prepare(PREPARE_X, None))
    assert unknown.refusal is Refusal.MISMATCH and unknown.own is None
    # Still free: it signs the outcome it does reproduce.
    assert reply(v.on_prepare(PREPARE_Y, Y)).yes


def test_policy_refusals_lock_nothing_but_a_lock_still_answers() -> None:
    v = validator()
    refusal = reply(v.on_prepare(PREPARE_X, X, "coordinator is not a member"))
    assert refusal.refusal is Refusal.POLICY and refusal.detail == "coordinator is not a member"
    assert reply(v.on_abort(ABORT, "not the lease holder")).refusal is Refusal.POLICY
    assert v.lock(SLOT) is None
    yes = reply(v.on_prepare(PREPARE_X, X))
    assert reply(v.on_prepare(PREPARE_X, X, "policy changed its mind")) == yes


def test_requests_under_another_policy_or_subnet_are_refused() -> None:
    v = validator()
    reply(v.on_prepare(PREPARE_X, X))
    rotated = cid_for(b"the next policy", DAG_CBOR)
    for request in (Prepare(SUBNET, rotated, SLOT, Y), Prepare("other", POLICY, SLOT, Y)):
        assert not v.needs_outcome(request)
        refusal = reply(v.on_prepare(request, Y))
        assert refusal.refusal is Refusal.POLICY and refusal.signed is None
        assert (refusal.subnet, refusal.policy) == (request.subnet, request.policy)
    assert reply(v.on_abort(AbortRequest(SUBNET, rotated, SLOT))).refusal is Refusal.POLICY
    (answer,) = v.on_query(Query(SUBNET, rotated, SLOT))
    assert isinstance(answer, Reply) and isinstance(answer.message, Answer)
    assert answer.message.signed is None


def test_policy_details_are_made_printable_and_short() -> None:
    refusal = reply(validator().on_prepare(PREPARE_X, X, "bad\x1b[31m" + "x" * 500))
    assert refusal.detail is not None
    assert refusal.detail.startswith("bad?[31m") and len(refusal.detail) == 256
    assert reply(validator().on_prepare(PREPARE_X, X, "")).detail == "refused"


def test_query_answers_the_lock_or_none() -> None:
    v = validator()
    query = Query(SUBNET, POLICY, SLOT)
    (none,) = v.on_query(query)
    assert none == Reply(Answer(SUBNET, POLICY, SLOT, 2, None))
    yes = reply(v.on_prepare(PREPARE_X, X))
    (held,) = v.on_query(query)
    assert held == Reply(Answer(SUBNET, POLICY, SLOT, 2, yes.signed))


def test_slots_are_independent() -> None:
    v = validator()
    reply(v.on_prepare(PREPARE_X, X))
    retry = Slot(EXEC, "pay", 1)
    assert reply(v.on_abort(AbortRequest(SUBNET, POLICY, retry))).yes
    other = outcome(b"paid 10", slot=retry)
    assert reply(v.on_prepare(Prepare(SUBNET, POLICY, retry, other), other)).refusal is (
        Refusal.ABORTED
    )
    assert reply(v.on_prepare(PREPARE_X, X)).yes


def test_restored_locks_keep_refusing() -> None:
    v = validator()
    journal = [a.lock for a in v.on_prepare(PREPARE_X, X) if isinstance(a, PersistLock)]
    retry = Slot(EXEC, "pay", 1)
    journal += [
        a.lock
        for a in v.on_abort(AbortRequest(SUBNET, POLICY, retry))
        if isinstance(a, PersistLock)
    ]
    # Through the disk: dag-cbor and back.
    stored = [Lock.from_obj(decode_dag(encode_dag(lock.to_obj()))) for lock in journal]
    assert stored == journal
    restarted = validator()
    restarted.restore(stored)
    restarted.restore(stored)  # the same again is harmless
    assert reply(restarted.on_prepare(PREPARE_Y, Y)).refusal is Refusal.LOCKED
    other = outcome(b"paid 10", slot=retry)
    assert reply(restarted.on_prepare(Prepare(SUBNET, POLICY, retry, other), other)).refusal is (
        Refusal.ABORTED
    )
    assert reply(restarted.on_prepare(PREPARE_X, X)) == reply(v.on_prepare(PREPARE_X, X))


def test_restore_refuses_state_that_is_not_this_validators() -> None:
    v = validator()
    (persist, _) = v.on_prepare(PREPARE_X, X)
    assert isinstance(persist, PersistLock)
    lock = persist.lock
    conflicting = Lock(SUBNET, POLICY, SLOT, SignedDecision(Decision.abort(), lock.signed.partial))
    with pytest.raises(ValueError, match=r"two different locks"):
        validator().restore([lock, conflicting])
    foreign = Lock(SUBNET, cid_for(b"old policy", DAG_CBOR), SLOT, lock.signed)
    with pytest.raises(ValueError, match=r"another subnet or policy"):
        validator().restore([foreign])


def test_hostile_persisted_locks_are_refused_by_field() -> None:
    v = validator()
    (persist, _) = v.on_prepare(PREPARE_X, X)
    assert isinstance(persist, PersistLock)
    obj = persist.lock.to_obj()
    obj["slot"] = {"exec": EXEC, "step": "pay", "attempt": 3}
    with pytest.raises(FormatError, match=r"lock.signed.outcome: is for another slot"):
        Lock.from_obj(obj)
    with pytest.raises(FormatError, match=r"lock: missing field\(s\) \['signed'\]"):
        Lock.from_obj({k: val for k, val in obj.items() if k != "signed"})


def test_forget_drops_the_locks_of_an_ended_execution() -> None:
    v = validator()
    reply(v.on_prepare(PREPARE_X, X))
    other_exec = Slot(cid_for(b"another execution", DAG_CBOR), "pay", 0)
    reply(v.on_abort(AbortRequest(SUBNET, POLICY, other_exec)))
    v.forget(EXEC)
    assert v.lock(SLOT) is None
    assert v.locks() == (v.lock(other_exec),)
    v.forget(EXEC)  # nothing left: no error


def test_the_blocks_of_locked_commits_stay_pinned_until_forgotten() -> None:
    v = validator()
    assert v.pinned() == frozenset()
    delta = raw_block(b"state delta").cid
    with_delta = Outcome(EXEC, "pay", 0, "completed", X.value, delta)
    reply(v.on_prepare(Prepare(SUBNET, POLICY, SLOT, with_delta), with_delta))
    retry = Slot(EXEC, "pay", 1)
    reply(v.on_abort(AbortRequest(SUBNET, POLICY, retry)))  # an abort pins nothing
    other = Slot(cid_for(b"another execution", DAG_CBOR), "pay", 0)
    failed = Outcome.failure(other, "trap", "unreachable")
    reply(v.on_prepare(Prepare(SUBNET, POLICY, other, failed), failed))  # nor a failure
    assert X.value is not None
    assert v.pinned() == {X.value, delta}
    v.forget(EXEC)
    assert v.pinned() == frozenset()
