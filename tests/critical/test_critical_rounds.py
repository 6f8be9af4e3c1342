"""Coordinator rounds against real validators and real threshold BLS, over an in-test pump."""

from __future__ import annotations

from typing import TypeVar

import pytest

from qflow_node.core.critical import (
    AbortRequest,
    Answer,
    Coordinator,
    CoordinatorAction,
    Decided,
    Decision,
    Equivocation,
    InvalidPartial,
    Outcome,
    Phase,
    Prepare,
    Query,
    Refusal,
    Rejected,
    RoundFailed,
    Send,
    Settings,
    SignedDecision,
    Vote,
    statement_bytes,
    verify_certificate,
)
from qflow_node.core.critical.testing import (
    POLICY,
    SLOT,
    SUBNET,
    Byzantine,
    Committee,
    Member,
    committee,
    honest_members,
    outcome,
    run_round,
)
from qflow_node.core.scheduling import Slot
from qflow_node.crypto import Signature, sign, verify_partial

X = outcome(b"paid 10")
Y = outcome(b"paid 11")
T = TypeVar("T")
SETTINGS = Settings(query_ms=1_000, commit_ms=4_000, abort_ms=3_000, resend_ms=500)


def coordinator(
    group: Committee,
    proposal: Outcome | None = X,
    *,
    query_first: bool = False,
    slot: Slot = SLOT,
) -> Coordinator:
    return Coordinator(
        subnet=SUBNET,
        policy=POLICY,
        keys=group.keys,
        slot=slot,
        proposal=proposal,
        query_first=query_first,
        settings=SETTINGS,
    )


def decided(log: list[CoordinatorAction]) -> Decided:
    (decision,) = [a for a in log if isinstance(a, Decided)]
    assert not [a for a in log if isinstance(a, RoundFailed)]
    return decision


def of_type(log: list[CoordinatorAction], kind: type[T]) -> list[T]:
    return [a for a in log if isinstance(a, kind)]


class ReplyLost:
    """A member whose requests arrive and are acted on, but whose replies are lost."""

    def __init__(self, member: Member) -> None:
        self.member = member

    def handle(self, message: Prepare | AbortRequest | Query) -> Vote | Answer | None:
        self.member.handle(message)
        return None


def test_happy_path_certificate_is_the_group_secrets_signature() -> None:
    group = committee(3, 5)
    members = honest_members(group, X)
    c = coordinator(group)
    log = run_round(c, members)
    sends = of_type(log, Send)
    assert [s.to for s in sends] == [1, 2, 3, 4, 5]
    assert all(s.message == Prepare(SUBNET, POLICY, SLOT, X) for s in sends)
    result = decided(log)
    assert result.decision == Decision.commit(X) and c.phase is Phase.DECIDED
    assert result.certificate == c.certificate
    assert verify_certificate(result.certificate, group.keys, SUBNET, SLOT)
    statement = statement_bytes(SUBNET, POLICY, SLOT, Decision.commit(X))
    assert result.certificate.sig == sign(group.secret, statement).to_bytes()
    # The round ended at the third vote; the pump still delivered the other prepares.
    # Every validator persisted its lock before replying (Honest asserts the order).
    assert [len(m.journal) for m in members.values()] == [1, 1, 1, 1, 1]
    assert c.next_timer_ms is None


def test_mismatching_validators_refuse_and_the_round_aborts() -> None:
    group = committee(3, 5)
    members = honest_members(group, X)
    for index in (3, 4, 5):
        members[index].own = Y  # they reproduce another outcome
    c = coordinator(group)
    log = run_round(c, members)
    result = decided(log)
    assert result.decision == Decision.abort()
    assert verify_certificate(result.certificate, group.keys, SUBNET, SLOT)
    # Three mismatch refusals (n - t + 1) are the proof that commit(X) can never reach
    # t: the abort phase began at the third. 1 and 2 hold commit(X), so only 3, 4 and 5
    # were asked to abort.
    assert c.held() == {
        1: Decision.commit(X),
        2: Decision.commit(X),
        3: Decision.abort(),
        4: Decision.abort(),
        5: Decision.abort(),
    }
    aborts = [s.to for s in of_type(log, Send) if isinstance(s.message, AbortRequest)]
    assert aborts == [3, 4, 5]
    statement = statement_bytes(SUBNET, POLICY, SLOT, Decision.abort())
    assert result.certificate.sig == sign(group.secret, statement).to_bytes()


def test_up_to_n_minus_t_silent_validators_do_not_stop_a_commit() -> None:
    group = committee(3, 5)
    members = honest_members(group, X)
    del members[1], members[4]
    log = run_round(coordinator(group), members)
    assert decided(log).decision == Decision.commit(X)


def test_one_more_silent_validator_fails_the_round_at_the_commit_timeout() -> None:
    group = committee(3, 5)
    members = honest_members(group, X)
    for index in (1, 2, 4):
        del members[index]
    c = coordinator(group)
    log = run_round(c, members)
    assert not of_type(log, Decided) and c.certificate is None
    (failed,) = of_type(log, RoundFailed)
    assert failed.slot == SLOT and "the commit phase timed out" in failed.reason
    assert c.phase is Phase.FAILED and c.next_timer_ms is None
    # Re-sent to the silent ones every resend_ms, then failure: a timeout is no reason
    # to abort, so no abort request was ever sent.
    assert all(isinstance(s.message, Prepare) for s in of_type(log, Send))
    prepares = [s.to for s in of_type(log, Send)]
    assert prepares[:5] == [1, 2, 3, 4, 5] and set(prepares[5:]) == {1, 2, 4}
    assert len(prepares[5:]) == 3 * (SETTINGS.commit_ms // SETTINGS.resend_ms - 1)
    # Validators 3 and 5 locked commit(X): the locks stay for the next round, which
    # commits once one more validator is back.
    assert c.held() == {3: Decision.commit(X), 5: Decision.commit(X)}
    assert members[3].validator.lock(SLOT) is not None
    members = honest_members(group, X) | {i: members[i] for i in (3, 5)}
    del members[1], members[2]
    log = run_round(coordinator(group, X, query_first=True), members, now_ms=60_000)
    assert decided(log).decision == Decision.commit(X)


def test_a_lost_prepare_is_sent_again() -> None:
    group = committee(3, 3)
    members = honest_members(group, X)
    lost: list[int] = []

    def drop_first_to_3(send: Send) -> bool:
        if send.to == 3 and not lost:
            lost.append(3)
            return True
        return False

    c = coordinator(group)
    log = run_round(c, members, drop=drop_first_to_3)
    assert decided(log).decision == Decision.commit(X)
    assert [s.to for s in of_type(log, Send)] == [1, 2, 3, 3]


def test_takeover_finishes_the_decision_the_first_coordinator_started() -> None:
    group = committee(3, 5)
    members = honest_members(group, X)
    # A reaches validators 1 and 2 only, then dies (its round is simply abandoned).
    a = coordinator(group)
    actions = a.start(0)
    for send in of_type(list(actions), Send)[:2]:
        reply = members[send.to].handle(send.message)
        assert isinstance(reply, Vote)
        assert not a.on_vote(send.to, reply, 1)
    assert a.phase is Phase.COMMIT
    # B took the lease over. It could not compute an outcome (say, its inputs were not
    # there yet): it queries, finds commit(X) signed twice and pursues it.
    b = coordinator(group, None, query_first=True)
    log = run_round(b, members, now_ms=60_000)
    queries = [s.to for s in of_type(log, Send) if isinstance(s.message, Query)]
    prepares = [s.to for s in of_type(log, Send) if isinstance(s.message, Prepare)]
    assert queries == [1, 2, 3, 4, 5] and prepares == [3, 4, 5]
    result = decided(log)
    assert result.decision == Decision.commit(X)
    assert verify_certificate(result.certificate, group.keys, SUBNET, SLOT)


def test_takeover_with_another_outcome_still_finishes_the_started_one() -> None:
    group = committee(3, 5)
    members = honest_members(group, X)
    a = coordinator(group)
    for send in of_type(list(a.start(0)), Send)[:2]:
        members[send.to].handle(send.message)
    # B's own execution gave Y (a nondeterministic step); two validators hold commit(X),
    # none holds anything else, so B pursues X and never proposes Y.
    b = coordinator(group, Y, query_first=True)
    log = run_round(b, members)
    assert decided(log).decision == Decision.commit(X)
    assert not [s for s in of_type(log, Send) if s.message == Prepare(SUBNET, POLICY, SLOT, Y)]


def test_a_recovered_certificate_is_byte_identical() -> None:
    group = committee(3, 5)
    members = honest_members(group, X)
    a = coordinator(group)
    first = decided(run_round(a, members))
    # A dies before publishing. B, with the same outcome, queries first: three
    # validators already signed, so B recovers the certificate without a prepare.
    b = coordinator(group, X, query_first=True)
    log = run_round(b, members)
    assert not [s for s in of_type(log, Send) if isinstance(s.message, Prepare)]
    again = decided(log)
    assert again.certificate == first.certificate
    assert again.certificate.to_obj() == first.certificate.to_obj()


def test_an_equivocating_validator_is_reported_with_both_partials() -> None:
    group = committee(3, 5)
    honest = honest_members(group, X)
    liar = Byzantine(group.shares[4])
    c = coordinator(group)
    c.start(0)
    # 5 votes commit(X), then tells the coordinator (say, answering another node's
    # query, forwarded) that it signed abort.
    commit = liar.sign(SLOT, Decision.commit(X))
    abort = liar.sign(SLOT, Decision.abort())
    assert c.on_vote(5, Vote(SUBNET, POLICY, SLOT, 5, "prepare", commit), 1) == ()
    assert c.held() == {5: Decision.commit(X)}
    (proof,) = c.on_answer(5, Answer(SUBNET, POLICY, SLOT, 5, abort), 2)
    assert proof == Equivocation(SLOT, 5, commit, abort)
    for item in (proof.first, proof.second):
        statement = statement_bytes(SUBNET, POLICY, SLOT, item.decision)
        partial = Signature.from_bytes(item.partial)
        assert verify_partial(group.keys.share_key(5), statement, partial)
    # Neither counts: two honest votes are not enough, the third one decides.
    log: list[CoordinatorAction] = []
    for index in (1, 2, 3):
        vote = honest[index].handle(Prepare(SUBNET, POLICY, SLOT, X))
        assert isinstance(vote, Vote)
        log += c.on_vote(index, vote, 3)
        assert (c.phase is Phase.DECIDED) == (index == 3)
    assert decided(log).decision == Decision.commit(X)
    assert set(c.held()) == {1, 2, 3}


def test_equivocation_within_one_phase_counts_neither() -> None:
    group = committee(3, 4)
    liar = Byzantine(group.shares[3])
    c = coordinator(group)
    c.start(0)
    commit = liar.sign(SLOT, Decision.commit(X))
    abort = liar.sign(SLOT, Decision.abort())
    assert c.on_vote(4, Vote(SUBNET, POLICY, SLOT, 4, "prepare", commit), 1) == ()
    (report,) = c.on_vote(4, Vote(SUBNET, POLICY, SLOT, 4, "abort", abort), 2)
    assert report == Equivocation(SLOT, 4, commit, abort)
    assert c.held() == {}
    # Later messages from it count for nothing, whatever they carry.
    assert c.on_vote(4, Vote(SUBNET, POLICY, SLOT, 4, "prepare", commit), 3) == ()
    assert c.held() == {}


def test_a_round_with_nobody_left_to_answer_ends_before_its_timeout() -> None:
    """n = 4, t = 3: 4 equivocates (it counts for nothing, not even as a refuser), 1 and
    2 sign commit(X), 3 refuses. One refusal is no proof, and nobody is left to answer:
    the round fails at once rather than at the commit timeout, without an abort."""
    group = committee(3, 4)
    members = honest_members(group, X)
    members[3].own = Y
    liar = Byzantine(group.shares[3])
    c = coordinator(group)
    c.start(0)
    commit = liar.sign(SLOT, Decision.commit(X))
    assert c.on_vote(4, Vote(SUBNET, POLICY, SLOT, 4, "prepare", commit), 1) == ()
    abort = liar.sign(SLOT, Decision.abort())
    (proof,) = c.on_answer(4, Answer(SUBNET, POLICY, SLOT, 4, abort), 1)
    assert isinstance(proof, Equivocation)
    log: list[CoordinatorAction] = []
    for index in (1, 2, 3):
        vote = members[index].handle(Prepare(SUBNET, POLICY, SLOT, X))
        assert isinstance(vote, Vote)
        log += c.on_vote(index, vote, 2)
    (failed,) = of_type(log, RoundFailed)
    assert "every validator answered" in failed.reason and "1 refusal(s) of 2" in failed.reason
    assert c.phase is Phase.FAILED and c.refused_by() == {3}


def test_bad_partials_are_reported_and_not_counted() -> None:
    group = committee(3, 5)
    honest = honest_members(group, X)
    c = coordinator(group)
    c.start(0)
    good = honest[2].handle(Prepare(SUBNET, POLICY, SLOT, X))
    assert isinstance(good, Vote) and good.signed is not None
    # Validator 1 sends validator 2's partial: valid, but not under share 1's key.
    stolen = Vote(SUBNET, POLICY, SLOT, 1, "prepare", good.signed)
    (report,) = c.on_vote(1, stolen, 1)
    assert isinstance(report, InvalidPartial) and report.index == 1
    assert "does not verify" in report.reason
    # Tampered bytes: no longer a valid point.
    flipped = bytes([good.signed.partial[0] ^ 0x01]) + good.signed.partial[1:]
    tampered = Vote(
        SUBNET, POLICY, SLOT, 3, "prepare", SignedDecision(good.signed.decision, flipped)
    )
    (report,) = c.on_vote(3, tampered, 2)
    assert isinstance(report, InvalidPartial) and "partial from share 3" in report.reason
    # A valid point signing another statement (commit(Y) presented as commit(X)).
    other = Byzantine(group.shares[3]).sign(SLOT, Decision.commit(Y))
    lying = Vote(
        SUBNET, POLICY, SLOT, 4, "prepare", SignedDecision(Decision.commit(X), other.partial)
    )
    (report,) = c.on_vote(4, lying, 3)
    assert isinstance(report, InvalidPartial) and report.index == 4
    assert c.held() == {}
    # The honest ones still make the certificate.
    assert c.on_vote(2, good, 4) == ()
    for index in (3, 5):
        vote = honest[index].handle(Prepare(SUBNET, POLICY, SLOT, X))
        assert isinstance(vote, Vote)
        log = list(c.on_vote(index, vote, 5))
    assert decided(log).decision == Decision.commit(X)
    assert set(c.held()) == {2, 3, 5}


def test_votes_about_another_round_are_rejected() -> None:
    group = committee(3, 5)
    honest = honest_members(group, X)
    c = coordinator(group)
    c.start(0)
    vote = honest[2].handle(Prepare(SUBNET, POLICY, SLOT, X))
    assert isinstance(vote, Vote)
    (rejected,) = c.on_vote(3, vote, 1)
    assert rejected == Rejected(3, "vote names share 2 but came from share 3")
    (rejected,) = c.on_vote(9, vote, 1)
    assert isinstance(rejected, Rejected) and "not a validator" in rejected.reason
    retry = Slot(SLOT.exec, SLOT.name, 1)
    elsewhere = Answer(SUBNET, POLICY, retry, 2, None)
    (rejected,) = c.on_answer(2, elsewhere, 1)
    assert isinstance(rejected, Rejected) and "another subnet, policy or slot" in rejected.reason
    assert c.held() == {}


def test_a_lock_on_another_outcome_counts_for_that_outcome() -> None:
    group = committee(3, 5)
    members = honest_members(group, X)
    # An earlier coordinator got commit(Y) from 1, 2 and 3 (they computed Y then), and
    # died before combining. A new coordinator that does not query proposes X: the
    # refusals carry Y's votes, which make Y's certificate (design, step 2).
    for index in (1, 2, 3):
        members[index].validator.on_prepare(Prepare(SUBNET, POLICY, SLOT, Y), Y)
    log = run_round(coordinator(group, X), members)
    result = decided(log)
    assert result.decision == Decision.commit(Y)
    assert verify_certificate(result.certificate, group.keys, SUBNET, SLOT)


def test_lost_votes_and_timeouts_no_longer_split_the_locks() -> None:
    """The schedule that used to block a slot for good (n = 4, t = 3, every validator
    honest): 1 and 2 sign commit(X) but their votes are lost, 3 and 4 are unreachable,
    the commit phase times out. The round now fails without a single abort request, so
    nothing can arrive late and split the locks; once the messages get through, a new
    round (a takeover, starting with a query) commits X."""
    group = committee(3, 4)
    honest = honest_members(group, X)
    first = coordinator(group)
    log = run_round(first, {1: ReplyLost(honest[1]), 2: ReplyLost(honest[2])})
    (failed,) = of_type(log, RoundFailed)
    assert "the commit phase timed out" in failed.reason
    assert not of_type(log, Decided) and first.certificate is None
    assert not [s for s in of_type(log, Send) if isinstance(s.message, AbortRequest)]
    assert first.held() == {} and first.refused_by() == frozenset()
    # Whatever of that round arrives late is a prepare of X: 3 and 4 sign commit(X).
    for send in of_type(log, Send):
        if send.to in (3, 4):
            honest[send.to].handle(send.message)
    locks = {i: m.validator.lock(SLOT) for i, m in honest.items()}
    assert {i: lock and lock.decision for i, lock in locks.items()} == dict.fromkeys(
        (1, 2, 3, 4), Decision.commit(X)
    )
    second = coordinator(group, X, query_first=True)
    log = run_round(second, honest, now_ms=10**6)
    result = decided(log)
    assert result.decision == Decision.commit(X)
    assert verify_certificate(result.certificate, group.keys, SUBNET, SLOT)
    # Every validator already held commit(X): the query recovered it, no prepare needed.
    assert not [s for s in of_type(log, Send) if isinstance(s.message, Prepare)]


def test_a_failed_round_is_finished_by_the_next_one_when_late_messages_are_lost() -> None:
    """The same schedule, but the late prepares are lost too: 3 and 4 still hold
    nothing. The next round queries, pursues commit(X) that 1 and 2 hold, and commits."""
    group = committee(3, 4)
    honest = honest_members(group, X)
    run_round(coordinator(group), {1: ReplyLost(honest[1]), 2: ReplyLost(honest[2])})
    assert [m.validator.lock(SLOT) is not None for m in honest.values()] == [
        True,
        True,
        False,
        False,
    ]
    log = run_round(coordinator(group, None, query_first=True), honest, now_ms=10**6)
    prepares = [s.to for s in of_type(log, Send) if isinstance(s.message, Prepare)]
    assert prepares == [3, 4]
    assert decided(log).decision == Decision.commit(X)


def test_abort_needs_refusals_from_n_minus_t_plus_1_distinct_validators() -> None:
    group = committee(3, 4)  # the proof: 2 refusals
    c = coordinator(group)
    c.start(0)
    mismatch = Vote(SUBNET, POLICY, SLOT, 3, "prepare", None, Refusal.MISMATCH)
    assert c.on_vote(3, mismatch, 1) == ()
    assert c.on_vote(3, mismatch, 2) == ()  # the same validator again: still one
    assert c.refused_by() == {3}  # and no abort request went out
    # A refusal that is not about this round, or names another share, counts for nothing.
    elsewhere = Vote(
        SUBNET, POLICY, Slot(SLOT.exec, SLOT.name, 1), 4, "prepare", None, Refusal.MISMATCH
    )
    assert isinstance(c.on_vote(4, elsewhere, 3)[0], Rejected)
    assert isinstance(c.on_vote(4, mismatch, 3)[0], Rejected)  # names share 3
    assert c.refused_by() == {3}
    # A second distinct refuser (a policy refusal counts too) is the proof.
    policy = Vote(SUBNET, POLICY, SLOT, 4, "prepare", None, Refusal.POLICY, "not a member")
    actions = c.on_vote(4, policy, 4)
    assert c.phase is Phase.ABORT and c.refused_by() == {3, 4}
    assert [s.to for s in of_type(list(actions), Send)] == [1, 2, 3, 4]
    assert all(isinstance(s.message, AbortRequest) for s in of_type(list(actions), Send))


def test_the_abort_phase_timing_out_ends_the_round() -> None:
    group = committee(3, 4)
    members = honest_members(group, Y)  # they reproduce another outcome than X
    # The proof arrives, but every abort request is lost.
    c = coordinator(group)
    log = run_round(c, members, drop=lambda send: isinstance(send.message, AbortRequest))
    (failed,) = of_type(log, RoundFailed)
    assert "the abort phase timed out" in failed.reason
    assert not of_type(log, Decided) and c.phase is Phase.FAILED
    # The next round proposes X again, gets the proof again and finishes the abort.
    log = run_round(coordinator(group, X, query_first=True), members, now_ms=10**6)
    assert decided(log).decision == Decision.abort()


def test_held_aborts_count_towards_the_proof_so_a_started_abort_is_finished() -> None:
    """An abort half done (only 3 signed it before its coordinator died) is finished by
    the next coordinator: 3's `aborted` refusal and the mismatches of 4 and 5 are three
    validators that will never sign commit(X), the proof for n = 5, t = 3."""
    group = committee(3, 5)
    members = honest_members(group, X)
    for index in (3, 4, 5):
        members[index].own = Y
    a = coordinator(group)
    a.start(0)
    for index in (1, 2, 3, 4, 5):
        vote = members[index].handle(Prepare(SUBNET, POLICY, SLOT, X))
        assert isinstance(vote, Vote)
        actions = a.on_vote(index, vote, 1)
    aborts = [s for s in of_type(list(actions), Send) if isinstance(s.message, AbortRequest)]
    assert [s.to for s in aborts] == [3, 4, 5]
    members[3].handle(aborts[0].message)  # then a dies
    b = coordinator(group, X, query_first=True)
    log = run_round(b, members, now_ms=60_000)
    assert decided(log).decision == Decision.abort()
    assert b.refused_by() == {3, 4, 5}
    assert b.held() == {
        1: Decision.commit(X),
        2: Decision.commit(X),
        3: Decision.abort(),
        4: Decision.abort(),
        5: Decision.abort(),
    }


def test_a_proof_in_the_query_answers_skips_the_prepares() -> None:
    """n = 7, t = 5 (the proof: 3). The query shows 3 aborts and 2 commits of X: commit(X)
    can never reach 5, so the round asks the two free validators to abort at once rather
    than have them lock a commit that cannot win."""
    group = committee(5, 7)
    members = honest_members(group, X)
    for index in (1, 2):
        members[index].handle(Prepare(SUBNET, POLICY, SLOT, X))
    for index in (3, 4, 5):
        members[index].handle(AbortRequest(SUBNET, POLICY, SLOT))
    c = coordinator(group, X, query_first=True)
    log = run_round(c, members)
    assert not [s for s in of_type(log, Send) if isinstance(s.message, Prepare)]
    aborts = [s.to for s in of_type(log, Send) if isinstance(s.message, AbortRequest)]
    assert aborts == [6, 7]
    assert decided(log).decision == Decision.abort()


def test_byzantine_refusals_and_silence_are_no_proof() -> None:
    """n = 4, t = 3, f = 1: the Byzantine validator refuses, honest 3 is unreachable. One
    refusal is not the proof (2): the round times out, nobody signed abort, and once 3
    is back the next round commits."""
    group = committee(3, 4)
    honest = honest_members(group, X)
    refuser = honest_members(group, X)[4]
    refuser.policy_error = "I say the module is not whitelisted"
    log = run_round(coordinator(group), {1: honest[1], 2: honest[2], 4: refuser})
    (failed,) = of_type(log, RoundFailed)
    assert "the commit phase timed out" in failed.reason
    assert not [s for s in of_type(log, Send) if isinstance(s.message, AbortRequest)]
    log = run_round(
        coordinator(group, X, query_first=True),
        {1: honest[1], 2: honest[2], 3: honest[3], 4: refuser},
        now_ms=10**6,
    )
    assert decided(log).decision == Decision.commit(X)


def test_a_lying_coordinators_wrong_proposal_ends_in_abort() -> None:
    """A lease holder proposes Y, which no honest validator reproduces (the step is
    deterministic; they all compute X), and skips the query. Even with the Byzantine
    validator signing commit(Y), the three honest mismatches are the proof: abort."""
    group = committee(3, 4)
    members: dict[int, Member] = dict(honest_members(group, X))
    members[4] = Byzantine(group.shares[3])
    c = coordinator(group, Y)
    log = run_round(c, members)
    result = decided(log)
    assert result.decision == Decision.abort()
    assert verify_certificate(result.certificate, group.keys, SUBNET, SLOT)
    assert c.held() == {i: Decision.abort() for i in (1, 2, 3)} | {4: Decision.commit(Y)}


def test_a_planted_partial_does_not_divert_a_coordinator() -> None:
    """n = 4, t = 3: a commit found by a query is pursued only if 2t - n = 2 validators
    signed it, so at least one is honest. The Byzantine validator's lone commit(Z)
    outnumbers X's (none) but is ignored: the coordinator proposes its own X. Without an
    outcome of its own, a coordinator finds nothing to pursue and fails the round."""
    group = committee(3, 4)
    z = outcome(b"paid 12")
    members: dict[int, Member] = dict(honest_members(group, X))
    members[4] = Byzantine(group.shares[3], lie=Decision.commit(z))
    c = coordinator(group, None, query_first=True)
    log = run_round(c, members)
    (failed,) = of_type(log, RoundFailed)
    assert "no outcome of its own to propose" in failed.reason
    assert [type(s.message) for s in of_type(log, Send)] == [Query] * 4
    assert c.held() == {4: Decision.commit(z)} and c.target is None
    log = run_round(coordinator(group, X, query_first=True), members)
    assert decided(log).decision == Decision.commit(X)
    assert not [s for s in of_type(log, Send) if s.message == Prepare(SUBNET, POLICY, SLOT, z)]


def test_a_lease_holder_that_skips_the_query_can_still_split_the_locks() -> None:
    """The limit of "abort only on proof": validators cannot check the proof, they trust
    the lease holder. n = 4, t = 3, every validator honest: A gets commit(X) from 1 and
    2 (the votes are lost) and dies; B takes the lease, skips the query and proposes Y,
    which nobody reproduces. 3 and 4 refuse: the proof against Y, so B asks them to
    abort. Commit(X) and abort now hold 2 locks each, for good. An honest lease holder
    queries first and would have pursued X (2 = 2t - n signers), so this takes a lying
    or faulty one; safety is untouched (nothing is certified twice)."""
    group = committee(3, 4)
    honest = honest_members(group, X)
    run_round(coordinator(group), {1: ReplyLost(honest[1]), 2: ReplyLost(honest[2])})
    log = run_round(coordinator(group, Y), honest, now_ms=10**6)
    assert not of_type(log, Decided)
    held = {i: m.validator.lock(SLOT) for i, m in honest.items()}
    assert {i: lock and lock.decision for i, lock in held.items()} == {
        1: Decision.commit(X),
        2: Decision.commit(X),
        3: Decision.abort(),
        4: Decision.abort(),
    }
    (failed,) = of_type(
        run_round(coordinator(group, X, query_first=True), honest, now_ms=2 * 10**6),
        RoundFailed,
    )
    assert "neither commit nor abort can reach t" in failed.reason


def test_the_safety_bound_is_tight() -> None:
    """f < 2t - n is needed: with n = 5, t = 3 (2t - n = 1) a single validator that signs
    whatever it is asked lets two coordinators on the two sides of a partition certify
    two decisions (here commit(X) and commit(Y), a step that is not deterministic). With
    n = 4, t = 3 the same attack fails for every partition."""
    group = committee(3, 5)
    honest = honest_members(group, X)
    for index in (3, 4):
        honest[index].own = Y
    liar = Byzantine(group.shares[4])
    a = run_round(coordinator(group), {1: honest[1], 2: honest[2], 5: liar})
    b = run_round(coordinator(group, Y, query_first=True), {3: honest[3], 4: honest[4], 5: liar})
    certified = {decided(log).decision for log in (a, b)}
    assert certified == {Decision.commit(X), Decision.commit(Y)}

    group = committee(3, 4)
    for side in ({1}, {1, 2}, {1, 3}, {2, 3}, {1, 2, 3}):
        honest = honest_members(group, X)
        for index in {1, 2, 3} - side:
            honest[index].own = Y
        liar = Byzantine(group.shares[3])
        reach_a: dict[int, Member] = {i: honest[i] for i in side} | {4: liar}
        reach_b: dict[int, Member] = {i: honest[i] for i in {1, 2, 3} - side} | {4: liar}
        logs = [
            run_round(coordinator(group), reach_a),
            run_round(coordinator(group, Y, query_first=True), reach_b),
            run_round(coordinator(group, Y), reach_b),  # and a lying one: abort
        ]
        certified = {a.decision for log in logs for a in of_type(log, Decided)}
        assert len(certified) <= 1


@pytest.mark.parametrize("query_first", [False, True])
def test_a_round_starts_once_and_ignores_input_after_it_ends(query_first: bool) -> None:
    group = committee(3, 5)
    c = coordinator(group, query_first=query_first)
    members = honest_members(group, X)
    decided(run_round(c, members))
    with pytest.raises(RuntimeError, match=r"starts once"):
        c.start(0)
    vote = members[1].handle(Prepare(SUBNET, POLICY, SLOT, X))
    assert isinstance(vote, Vote)
    assert c.on_vote(1, vote, 10) == () and c.on_timer(10**9) == ()


def test_settings_and_arguments_are_checked() -> None:
    group = committee(3, 5)
    with pytest.raises(ValueError, match=r"positive"):
        Settings(commit_ms=0)
    with pytest.raises(ValueError, match=r"must query first"):
        coordinator(group, None)
    with pytest.raises(ValueError, match=r"another slot"):
        coordinator(group, X, slot=Slot(SLOT.exec, SLOT.name, 1))


def test_a_coordinator_without_an_outcome_and_no_locks_fails_the_round() -> None:
    """It has no target, so no proof against one: it never aborts, and nobody signs."""
    group = committee(3, 5)
    members = honest_members(group, X)
    c = coordinator(group, None, query_first=True)
    log = run_round(c, members)
    (failed,) = of_type(log, RoundFailed)
    assert "no outcome of its own to propose" in failed.reason
    assert [type(s.message) for s in of_type(log, Send)] == [Query] * 5
    assert all(m.validator.lock(SLOT) is None for m in members.values())
