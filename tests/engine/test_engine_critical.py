"""Critical steps in the engine: a run step with `critical: true` is settled only by a
record whose quorum certificate verifies under the subnet policy's keys
(docs/consensus.md, "Replicas"); `outcome_of` is what those certificates sign."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from pycrdt import Doc, Map

from qflow_node.codec import CID, dag_block, raw_block
from qflow_node.core.critical import (
    ABORTED,
    Certificate,
    CriticalKeys,
    Decision,
    FormatError,
    Outcome,
    error_object,
    error_text,
    outcome_of,
)
from qflow_node.core.critical.testing import POLICY, SUBNET, certify, committee
from qflow_node.core.engine import (
    Event,
    ExecState,
    FailStep,
    Rejection,
    RunStep,
    Wake,
    apply,
    fold,
    initial,
    next_actions,
)
from qflow_node.core.engine.records import event_of
from qflow_node.core.engine.state import VARS
from qflow_node.core.engine.testing import completed, failed, flow, started
from qflow_node.core.engine.writing import event_blocks
from qflow_node.core.flow import retry_delay_ms
from qflow_node.core.ledger import RecordError
from qflow_node.core.ledger.testing import KEYS
from qflow_node.core.scheduling import Slot
from qflow_node.crypto import SecretKey

EXEC = dag_block({"submission": "a payment", "nonce": 7}).cid
GROUP = committee(3, 4)
KEYS_OF_SUBNET = CriticalKeys(SUBNET, POLICY, GROUP.keys)
FLOW = flow("""
name: payment
steps:
  - id: quote
    run: quote.wasm
  - id: pay
    run: pay.wasm
    with: {amount: steps.quote.output.amount}
    retry: {max_attempts: 3, delay: 1s}
    critical: true
""")
PAID = {"paid": 10, "ok": True}


def vars_update(**values: Any) -> bytes:
    """A step's state delta: a Yjs update of the `vars` map."""
    doc: Doc[Any] = Doc(client_id=7)
    variables = doc.get(VARS, type=Map)
    for key, value in values.items():
        variables[key] = json.dumps(value)
    return bytes(doc.get_update())


DELTA = vars_update(paid=10)


def ok(state: ExecState | Rejection) -> ExecState:
    assert isinstance(state, ExecState), str(state)
    return state


def refused(result: ExecState | Rejection) -> str:
    assert isinstance(result, Rejection), "the event was applied"
    return result.reason


def quoted(critical: CriticalKeys | None = KEYS_OF_SUBNET) -> ExecState:
    """`quote` completed (not critical: no certificate); `pay` attempt 1 is due."""
    state = ok(apply(initial(FLOW, EXEC.encode(), critical), started({})))
    return ok(apply(state, completed("quote", {"amount": 10})))


def commit(event: Event, group: Any = GROUP, **kwargs: Any) -> Certificate:
    return certify(group, slot(event), Decision.commit(outcome_of(EXEC, event)), **kwargs)


def slot(event: Event) -> Slot:
    assert event.step is not None
    return Slot(EXEC, event.step, event.attempt)


def paid(attempt: int = 1, ts: int = 1000, delta: bytes | None = DELTA) -> Event:
    return replace(completed("pay", PAID, attempt=attempt, ts=ts), delta=delta)


# -- outcome_of -------------------------------------------------------------------------


def test_outcome_of_a_completion() -> None:
    event = paid()
    assert outcome_of(EXEC, event) == Outcome(
        EXEC,
        "pay",
        1,
        "completed",
        dag_block(PAID).cid,  # the canonical dag-cbor of the output, not its JSON bytes
        raw_block(DELTA).cid,  # the record's `state` block
    )
    assert outcome_of(EXEC, replace(event, delta=None)).delta is None
    assert outcome_of(EXEC, replace(event, delta=b"")).delta is None  # no delta either
    # Key order does not matter; int and float do (dag-cbor keeps them apart).
    assert outcome_of(EXEC, replace(event, value={"ok": True, "paid": 10})) == outcome_of(
        EXEC, event
    )
    assert outcome_of(EXEC, replace(event, value={"ok": True, "paid": 10.0})).value != (
        outcome_of(EXEC, event).value
    )
    assert outcome_of(EXEC, replace(event, value=None)).value == dag_block(None).cid


def test_outcome_of_a_failure() -> None:
    event = failed("pay", "trap", attempt=2)
    assert outcome_of(EXEC, event) == Outcome(
        EXEC, "pay", 2, "failed", None, None, error_text("trap", "pay broke")
    )
    assert outcome_of(EXEC, event).error == '{"kind":"trap","message":"pay broke"}'
    # A failure's message must already be what error_text cuts it to.
    long = replace(event, value={"kind": "trap", "message": "x" * 2000})
    with pytest.raises(FormatError, match="too long for an outcome's error"):
        outcome_of(EXEC, long)
    cut = error_object(error_text("trap", "x" * 2000))
    assert outcome_of(EXEC, replace(event, value=cut)).error == error_text("trap", "x" * 2000)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (started({}), "exec.started has no outcome"),
        (Event("step.started", "pay", 1), "step.started has no outcome"),
        (Event("step.completed", None, 1, value=1), "names no step"),
        (Event("step.completed", "pay", 1, value=2**64), "cannot be an outcome's value"),
        (Event("step.failed", "pay", 1, value="boom"), "not {kind, message}"),
        (Event("step.failed", "pay", 1, value={"kind": "t"}), "not {kind, message}"),
        (
            Event("step.failed", "pay", 1, value={"kind": "t", "message": "m", "more": 1}),
            "not {kind, message}",
        ),
        (Event("step.failed", "pay", 1, value={"kind": "", "message": "m"}), "1..64 characters"),
    ],
)
def test_what_has_no_outcome(event: Event, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        outcome_of(EXEC, event)


# -- a critical step's completion --------------------------------------------------------


def test_a_completion_with_a_valid_certificate_is_applied() -> None:
    state = quoted()
    [run] = next_actions(state, 1000)
    assert isinstance(run, RunStep) and run.step["critical"] and run.input == {"amount": 10}
    event = paid()
    state = ok(apply(state, replace(event, quorum=commit(event))))
    assert state.instances["pay"].status == "completed"
    assert state.instances["pay"].output == PAID
    assert state.deltas == (DELTA,) and state.vars() == {"paid": 10}
    assert state.critical == KEYS_OF_SUBNET  # kept by every evolve
    # The certificate's map (a record's `quorum` field) is accepted as well.
    again = ok(apply(quoted(), replace(event, quorum=commit(event).to_obj())))
    assert again.snapshot() == state.snapshot()


def test_whichever_t_validators_signed_the_certificate_is_the_same() -> None:
    event = paid()
    late = commit(event, signers=(2, 3, 4))
    assert late == commit(event)
    ok(apply(quoted(), replace(event, quorum=late)))


def test_a_completion_without_a_certificate_is_rejected() -> None:
    assert refused(apply(quoted(), paid())) == "critical step pay attempt 1: no quorum certificate"


def test_without_the_policy_keys_nothing_settles_a_critical_step() -> None:
    event = paid()
    assert refused(apply(quoted(None), replace(event, quorum=commit(event)))) == (
        "critical step pay attempt 1: no validator keys to check its quorum certificate with "
        "(this replica knows no subnet policy)"
    )


def test_a_certificate_for_another_outcome_is_rejected() -> None:
    event = paid()
    other = commit(replace(event, value={"paid": 1_000_000, "ok": True}))
    assert refused(apply(quoted(), replace(event, quorum=other))) == (
        "critical step pay attempt 1: the certificate is for another outcome "
        "(its value differs from the record's)"
    )
    no_delta = commit(replace(event, delta=None))
    assert "(its delta differs from the record's)" in refused(
        apply(quoted(), replace(event, quorum=no_delta))
    )
    # A certificate of attempt 2 does not settle attempt 1 (another slot).
    second = commit(replace(event, attempt=2))
    assert "(its attempt differs from the record's)" in refused(
        apply(quoted(), replace(event, quorum=second))
    )


def test_a_forged_certificate_is_rejected() -> None:
    event = paid()
    # Another committee's key, claiming the subnet's policy: a valid BLS signature, but not
    # under the policy's group key.
    impostors = committee(3, 4, seed=b"impostors", secret=SecretKey(0xBAD))
    forged = commit(event, group=impostors)
    assert refused(apply(quoted(), replace(event, quorum=forged))) == (
        f"critical step pay attempt 1: the certificate's signature does not verify under "
        f"policy {POLICY.encode()}"
    )
    # The real signature of another decision, pasted onto this one.
    swapped = Certificate(
        POLICY,
        Decision.commit(outcome_of(EXEC, event)),
        certify(GROUP, slot(event), Decision.abort()).sig,
    )
    assert "does not verify under policy" in refused(
        apply(quoted(), replace(event, quorum=swapped))
    )
    # The right signers for another subnet.
    elsewhere = commit(event, subnet="other-dao")
    assert "does not verify under policy" in refused(
        apply(quoted(), replace(event, quorum=elsewhere))
    )


def test_a_certificate_under_another_policy_is_rejected() -> None:
    event = paid()
    old = dag_block({"policy": "epoch 0"}).cid
    stale = commit(event, policy=old)
    assert refused(apply(quoted(), replace(event, quorum=stale))) == (
        f"critical step pay attempt 1: the certificate is under policy {old.encode()}, "
        f"not the subnet's policy {POLICY.encode()}"
    )


@pytest.mark.parametrize(
    ("quorum", "message"),
    [
        ("cert", "quorum: expected a map, got 'cert'"),
        ({"policy": POLICY}, "quorum: missing field(s) ['decision', 'outcome', 'sig']"),
        (
            {"policy": POLICY, "decision": "abort", "outcome": None, "sig": b"abc"},
            "quorum.sig: expected 96 bytes, got 3",
        ),
    ],
)
def test_a_malformed_certificate_is_rejected(quorum: Any, message: str) -> None:
    assert refused(apply(quoted(), replace(paid(), quorum=quorum))) == (
        f"critical step pay attempt 1: malformed quorum certificate: {message}"
    )


def test_a_certificate_is_checked_after_what_the_step_waits_for() -> None:
    event = paid()
    state = ok(apply(quoted(), replace(event, quorum=commit(event))))
    again = apply(state, replace(event, quorum=commit(event)))
    assert refused(again) == "step pay has already completed"


# -- failures and aborts -----------------------------------------------------------------


def aborted(attempt: int = 1, ts: int = 5000) -> Event:
    return Event(
        "step.failed",
        "pay",
        attempt,
        ts,
        {"kind": ABORTED, "message": "the validators aborted attempt 1"},
    )


def test_an_abort_certificate_fails_the_attempt_and_the_next_one_runs() -> None:
    event = aborted()
    abort = certify(GROUP, slot(event), Decision.abort())
    state = ok(apply(quoted(), replace(event, quorum=abort)))
    assert state.instances["pay"].status == "retry"
    assert state.instances["pay"].error == {
        "kind": "aborted",
        "message": "the validators aborted attempt 1",
    }
    delay = retry_delay_ms(FLOW["steps"][1]["retry"], exec_id=EXEC.encode(), step="pay", attempt=1)
    assert next_actions(state, 5000) == [Wake(5000 + delay)]
    [run] = next_actions(state, 5000 + delay)
    assert isinstance(run, RunStep) and (run.instance, run.attempt) == ("pay", 2)
    # Attempt 2 is a new slot: it needs its own certificate.
    second = paid(attempt=2, ts=5000 + delay)
    assert refused(apply(state, replace(second, quorum=commit(paid())))) == (
        "critical step pay attempt 2: the certificate is for another outcome "
        "(its attempt differs from the record's)"
    )
    state = ok(apply(state, replace(second, quorum=commit(second))))
    assert (state.instances["pay"].status, state.instances["pay"].attempt) == ("completed", 2)


def test_an_abort_of_the_last_attempt_fails_the_step() -> None:
    state = quoted()
    delay = 0
    for attempt in (1, 2, 3):
        event = aborted(attempt, ts=5000 + delay)
        state = ok(
            apply(state, replace(event, quorum=certify(GROUP, slot(event), Decision.abort())))
        )
        delay += 100_000
    assert state.instances["pay"].status == "failed"
    assert state.status == "running"  # the end is the next (bookkeeping) record's
    assert state.error is None


def test_an_abort_certificate_settles_only_an_aborted_failure() -> None:
    abort = certify(GROUP, Slot(EXEC, "pay", 1), Decision.abort())
    assert refused(apply(quoted(), replace(failed("pay", "trap"), quorum=abort))) == (
        "critical step pay attempt 1: an abort certificate settles only a failure of kind "
        "'aborted', not 'trap'"
    )
    assert refused(apply(quoted(), replace(paid(), quorum=abort))) == (
        "critical step pay attempt 1: an abort certificate cannot settle step.completed, "
        "only a step.failed"
    )
    other_slot = certify(GROUP, Slot(EXEC, "pay", 2), Decision.abort())
    assert "does not verify" in refused(apply(quoted(), replace(aborted(), quorum=other_slot)))


def test_an_aborted_failure_needs_its_certificate() -> None:
    assert (
        refused(apply(quoted(), aborted())) == "critical step pay attempt 1: no quorum certificate"
    )


def test_a_committed_failure_is_a_failure_like_any_other() -> None:
    event = failed("pay", "trap", ts=5000)
    state = ok(apply(quoted(), replace(event, quorum=commit(event))))
    assert state.instances["pay"].status == "retry"
    assert state.instances["pay"].error == {"kind": "trap", "message": "pay broke"}


def test_a_failure_whose_message_is_not_cut_cannot_be_certified() -> None:
    event = replace(failed("pay", "trap"), value={"kind": "trap", "message": "m" * 5000})
    cut = replace(event, value=error_object(error_text("trap", "m" * 5000)))
    assert refused(apply(quoted(), replace(event, quorum=commit(cut)))) == (
        "critical step pay attempt 1: the failure's message is too long for an outcome's "
        "error: record the message error_text cuts it to"
    )


# -- one meaning for a certificate --------------------------------------------------------


def test_a_non_critical_step_carries_no_certificate() -> None:
    state = ok(apply(initial(FLOW, EXEC.encode(), KEYS_OF_SUBNET), started({})))
    event = completed("quote", {"amount": 10})
    quote_cert = certify(GROUP, slot(event), Decision.commit(outcome_of(EXEC, event)))
    assert refused(apply(state, replace(event, quorum=quote_cert))) == (
        "step quote is not critical: its step.completed cannot carry a quorum certificate"
    )


@pytest.mark.parametrize(
    "event", [started({}), Event("exec.completed", value=None)], ids=lambda e: e.kind
)
def test_only_settling_events_carry_a_certificate(event: Event) -> None:
    state = quoted()
    abort = certify(GROUP, Slot(EXEC, "pay", 1), Decision.abort())
    assert refused(apply(state, replace(event, quorum=abort))) == (
        f"{event.kind} carries no quorum certificate"
    )


def test_a_sleep_decides_nothing_so_its_timer_carries_no_certificate() -> None:
    ir = flow("name: t\nsteps:\n  - id: nap\n    sleep: 1s\n")
    state = ok(apply(initial(ir, EXEC.encode(), KEYS_OF_SUBNET), started({})))
    state = ok(apply(state, Event("step.started", "nap", 1, 0)))
    fired = Event("timer.fired", "nap", 1, 1000, {"due": 1000})
    abort = certify(GROUP, Slot(EXEC, "nap", 1), Decision.abort())
    assert refused(apply(state, replace(fired, quorum=abort))) == (
        "step nap decides nothing: its timer.fired carries no certificate"
    )
    assert ok(apply(state, fired)).instances["nap"].status == "completed"


def test_flows_without_critical_steps_fold_alike_with_or_without_keys() -> None:
    ir = flow("name: t\nsteps:\n  - id: a\n    run: a.wasm\n")
    events = [started({}), completed("a", {"x": 1})]
    with_keys, rejected = fold(ir, EXEC.encode(), events, KEYS_OF_SUBNET)
    without, rejected_too = fold(ir, EXEC.encode(), events)
    assert rejected == rejected_too == []
    assert with_keys.snapshot() == without.snapshot()  # the keys are no part of the state
    assert with_keys.critical == KEYS_OF_SUBNET and without.critical is None


def test_an_execution_id_that_is_no_cid_settles_no_critical_step() -> None:
    state = ok(apply(initial(FLOW, "e", KEYS_OF_SUBNET), started({})))
    state = ok(apply(state, completed("quote", {"amount": 10})))
    event = paid()
    assert refused(apply(state, replace(event, quorum=commit(event)))).startswith(
        "critical step pay attempt 1: the execution id is not a CID ("
    )


def test_critical_keys_are_checked() -> None:
    with pytest.raises(FormatError, match="subnet"):
        CriticalKeys("Not A Subnet", POLICY, GROUP.keys)
    with pytest.raises(FormatError, match=r"policy: .* must be a dag-cbor link"):
        CriticalKeys(SUBNET, raw_block(b"x").cid, GROUP.keys)


# -- through a record and back -----------------------------------------------------------


def test_the_certificate_goes_into_the_record_and_back_into_the_event() -> None:
    parents = {EXEC: {KEYS[0].peer_id: 1}}  # any head will do
    with_map = replace(paid(), quorum=commit(paid()).to_obj())
    _, _, record = event_blocks(EXEC, with_map, parents=parents, key=KEYS[0])
    assert record.certificate == commit(paid())
    with pytest.raises(RecordError, match="'quorum' is not a certificate"):
        event_blocks(EXEC, replace(paid(), quorum="cert"), parents=parents, key=KEYS[0])

    event = paid()
    cert = commit(event)
    with_cert = replace(event, quorum=cert)  # or its map
    blocks, record_block, record = event_blocks(EXEC, with_cert, parents=parents, key=KEYS[0])
    assert record.quorum == cert.to_obj() and record.certificate == cert
    assert record.state == raw_block(DELTA).cid
    store: dict[CID, bytes] = {b.cid: b.data for b in [*blocks, record_block]}
    back = event_of(record_block.cid, record, lambda cid: store[cid])
    assert back.quorum == cert.to_obj()  # the record's map: the engine parses it
    assert back.delta == event.delta and back.value == PAID
    state = ok(apply(quoted(), back))
    assert state.instances["pay"].output == PAID


def test_a_failure_the_engine_decides_needs_no_certificate() -> None:
    # `pay`'s input cannot be evaluated: nothing runs, every replica decides the same
    # failure (FailStep), so no validator has anything to sign.
    ir = flow("""
name: t
steps:
  - id: quote
    run: quote.wasm
  - id: pay
    run: pay.wasm
    with: {amount: steps.quote.output.missing}
    critical: true
""")
    state = ok(apply(initial(ir, EXEC.encode(), KEYS_OF_SUBNET), started({})))
    state = ok(apply(state, completed("quote", {"amount": 10})))
    [decided] = next_actions(state, 1000)
    assert isinstance(decided, FailStep) and decided.error["kind"] == "expression"
    event = Event("step.failed", "pay", 1, 1000, decided.error)
    assert refused(apply(state, replace(event, value={"kind": "trap", "message": "m"}))) == (
        "critical step pay attempt 1: the recorded failure differs from the engine's"
    )
    abort = certify(GROUP, slot(event), Decision.abort())
    assert refused(apply(state, replace(event, quorum=abort))) == (
        "critical step pay attempt 1: the engine decided this failure, so it carries no "
        "quorum certificate"
    )
    state = ok(apply(state, event))
    assert state.instances["pay"].status == "failed"
