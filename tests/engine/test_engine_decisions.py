"""Decisions in the engine (docs/consensus.md, "Decisions"): in a replica that knows its
subnet's policy, the record that settles a decision step — an approval or denial, an
event, a timeout, the end of a control step with a deadline — applies only with the
validators' certificate of exactly that decision, so two sides of a partition cannot
both take one. Without a policy, decisions apply as they come."""

from __future__ import annotations

from dataclasses import replace

import pytest

from qflow_node.codec import dag_block
from qflow_node.core.critical import (
    CriticalKeys,
    Decision,
    decision_block,
    decision_event_fields,
    decision_outcome,
)
from qflow_node.core.critical.fields import FormatError
from qflow_node.core.critical.testing import POLICY, SUBNET, certify, committee
from qflow_node.core.engine import (
    CompleteStep,
    Event,
    ExecState,
    Rejection,
    apply,
    decision_refusal,
    fold,
    initial,
    next_actions,
    settles_decision,
)
from qflow_node.core.engine.testing import completed, flow, started
from qflow_node.core.scheduling import Slot

EXEC = dag_block({"submission": "an expense", "nonce": 3}).cid
GROUP = committee(3, 4)
KEYS = CriticalKeys(SUBNET, POLICY, GROUP.keys)
ALICE = "did:key:z6MkjEvoemobV2cbn4c6ha61qSckQMjefQKuoRBnNCRakjpR"
BOB = "did:key:z6MkkBPYdMyzcYZ82316KGBobVXJL619wybD692WpZaPQSBg"
CAROL = "did:key:z6MkkSy1H4RDT9HPXZmPBrX9tC76uVYzQQoaKW2ryuPJksqa"
FLOW = flow(f"""
name: expense
steps:
  - id: sign_off
    approval:
      approvers: [{ALICE}, {BOB}, {CAROL}]
      quorum: 2
      timeout: 10s
  - id: note
    transform: '"done"'
""")
DUE = 1000 + 10_000  # step.started at 1000, a 10 s timeout


def ok(state: ExecState | Rejection) -> ExecState:
    assert isinstance(state, ExecState), str(state)
    return state


def refused(result: ExecState | Rejection) -> str:
    assert isinstance(result, Rejection), "applied"
    return result.reason


def waiting(keys: CriticalKeys | None = KEYS) -> ExecState:
    state = ok(apply(initial(FLOW, EXEC.encode(), keys), started({})))
    return ok(apply(state, Event("step.started", "sign_off", 1, 1000)))


def grant(actor: str, ts: int = 2000) -> Event:
    return Event("approval.granted", "sign_off", 1, ts, None, actor=actor)


TIMEOUT = Event("timer.fired", "sign_off", 1, DUE, {"due": DUE})


def certified(event: Event, decision: Decision | None = None) -> Event:
    slot = Slot(EXEC, event.step or "", event.attempt)
    chosen = decision or Decision.commit(decision_outcome(EXEC, event))
    return replace(event, quorum=certify(GROUP, slot, chosen))


def test_a_partial_approval_decides_nothing_and_needs_no_certificate() -> None:
    state = ok(apply(waiting(), grant(ALICE)))
    assert state.instances["sign_off"].granted == (ALICE,)
    assert not settles_decision(waiting(), grant(ALICE))
    assert refused(apply(waiting(), certified(grant(ALICE)))) == (
        "approval.granted on sign_off does not settle it (only the record that does "
        "carries a certificate)"
    )


def test_the_approval_that_settles_the_step_needs_its_certificate() -> None:
    state = ok(apply(waiting(), grant(ALICE)))
    assert settles_decision(state, grant(BOB))
    assert refused(apply(state, grant(BOB))) == (
        "decision on sign_off attempt 1: no quorum certificate"
    )
    done = ok(apply(state, certified(grant(BOB))))
    assert done.instances["sign_off"].status == "completed"
    assert done.instances["sign_off"].output == {"approved": True, "approvers": [ALICE, BOB]}


def test_a_timeout_needs_its_certificate_and_fails_the_step() -> None:
    assert refused(apply(waiting(), TIMEOUT)) == (
        "decision on sign_off attempt 1: no quorum certificate"
    )
    timed_out = ok(apply(waiting(), certified(TIMEOUT)))
    assert timed_out.instances["sign_off"].status == "failed"


def test_a_certificate_for_the_other_decision_does_not_settle_this_one() -> None:
    state = ok(apply(waiting(), grant(ALICE)))
    timeout_cert = certified(TIMEOUT).quorum
    assert refused(apply(state, replace(grant(BOB), quorum=timeout_cert))) == (
        "decision on sign_off attempt 1: the certificate is for another outcome "
        "(its value differs from the record's)"
    )


def test_a_decision_is_never_aborted() -> None:
    assert refused(apply(waiting(), certified(TIMEOUT, Decision.abort()))) == (
        "decision on sign_off attempt 1: a decision is never aborted"
    )


def test_whatever_the_fold_order_only_the_certified_decision_counts() -> None:
    """The partition of simulator seed 3050: one side's approval got the certificate;
    the other side's timeout could not (the validators locked the slot to the
    approval) and was written without one, or never. Both orders fold to approved."""
    events = [
        started({}),
        Event("step.started", "sign_off", 1, 1000),
        grant(ALICE),
        certified(grant(BOB)),
    ]
    for order in ([*events, TIMEOUT], [*events[:2], TIMEOUT, *events[2:]]):
        state, rejected = fold(FLOW, EXEC.encode(), order, KEYS)
        assert state.instances["sign_off"].status == "completed"
        assert [r.event.kind for r in rejected] == ["timer.fired"]


def test_what_is_no_decision_step_goes_without_the_validators() -> None:
    ir = flow("""
name: plain
steps:
  - id: nap
    sleep: 1s
  - id: note
    transform: '"done"'
""")
    state = ok(apply(initial(ir, EXEC.encode(), KEYS), started({})))
    state = ok(apply(state, Event("step.started", "nap", 1, 1000)))
    fired = Event("timer.fired", "nap", 1, 2000, {"due": 2000})
    assert not settles_decision(state, fired)
    state = ok(apply(state, fired))
    note = completed("note", "done")
    assert not settles_decision(state, note)
    assert ok(apply(state, note)).instances["note"].status == "completed"


def test_without_a_policy_decisions_apply_as_they_come() -> None:
    assert not settles_decision(waiting(None), TIMEOUT)
    assert ok(apply(waiting(None), TIMEOUT)).instances["sign_off"].status == "failed"


def test_a_validator_refuses_what_does_not_settle_the_step_in_its_replica() -> None:
    assert decision_refusal(waiting(), replace(TIMEOUT, ts=DUE - 1)) == (
        f"the timer is not due before {DUE}"
    )
    assert decision_refusal(waiting(), grant("did:key:mallory")) == (
        "did:key:mallory is not an approver of sign_off"
    )
    assert decision_refusal(waiting(), grant(ALICE)) == "it does not settle the step"
    assert decision_refusal(waiting(), TIMEOUT) is None
    assert decision_refusal(waiting(), certified(TIMEOUT)) is None  # the certificate aside


def test_a_control_step_with_a_deadline_is_a_decision_too() -> None:
    ir = flow("""
name: race
steps:
  - id: both
    timeout: 5s
    parallel:
      branches:
        left:
          - id: a
            transform: '1'
        right:
          - id: b
            transform: '2'
""")
    state = ok(apply(initial(ir, EXEC.encode(), KEYS), started({})))
    state = ok(apply(state, Event("step.started", "both", 1, 1000)))
    state = ok(apply(state, completed("a", 1)))
    state = ok(apply(state, completed("b", 2)))
    [join] = [a for a in next_actions(state, 2000) if isinstance(a, CompleteStep)]
    end = completed("both", join.output)
    assert decision_refusal(state, end) is None
    assert refused(apply(state, end)) == "decision on both attempt 1: no quorum certificate"
    assert ok(apply(state, certified(end))).instances["both"].status == "completed"


def test_a_decision_block_round_trips_and_refuses_what_is_not_one() -> None:
    block = decision_block(grant(ALICE))
    assert decision_event_fields(block.data) == ("approval.granted", ALICE, None)
    assert decision_outcome(EXEC, grant(ALICE)).value == block.cid
    assert decision_outcome(EXEC, grant(ALICE, ts=9)) == decision_outcome(EXEC, grant(ALICE))
    with pytest.raises(FormatError, match=r"decision\.kind: 'exec\.started' is not a decision"):
        decision_event_fields(dag_block({"kind": "exec.started", "actor": None, "value": 1}).data)
    with pytest.raises(FormatError, match="exactly kind, actor and value"):
        decision_event_fields(dag_block({"kind": "timer.fired"}).data)
