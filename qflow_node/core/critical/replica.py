"""What a replica checks before it applies a critical step's record (docs/consensus.md,
"Words" and "Replicas").

The validators sign a decision on a slot; the record that settles the slot carries their
certificate in its `quorum` field. A replica recomputes the outcome from the record's own
event (`outcome_of`) and accepts the record only if the certificate is the group's
signature, under the subnet policy it knows (`CriticalKeys`), of commit(that outcome) —
or of abort, on a failure of kind `aborted` (`quorum_problem`).

Pure, and independent of the engine: the engine's `Event` is only read (duck-typed here,
so this package does not import the engine, which imports it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from qflow_node.codec import (
    CID,
    Block,
    CidError,
    CodecError,
    dag_block,
    decode_dag,
    parse_cid,
    raw_block,
)
from qflow_node.core.critical.fields import FormatError, link
from qflow_node.core.critical.statement import (
    Certificate,
    Outcome,
    check_subnet,
    error_object,
    error_text,
    verify_certificate,
)
from qflow_node.core.scheduling.rank import Slot
from qflow_node.crypto import KeySet

if TYPE_CHECKING:
    from qflow_node.core.engine.events import Event

# The error kind of a failure whose slot the validators aborted (an abort certificate).
ABORTED: Final = "aborted"
# The record kinds that settle a slot: the only ones that carry a certificate.
STEP_COMPLETED: Final = "step.completed"
STEP_FAILED: Final = "step.failed"
SETTLING_KINDS: Final = frozenset({STEP_COMPLETED, STEP_FAILED})
# The record kinds that can settle a timed step (a decision: docs/consensus.md,
# "Decisions"): its end, a timeout, an event, an approval.
DECISION_KINDS: Final = frozenset(
    {
        STEP_COMPLETED,
        STEP_FAILED,
        "timer.fired",
        "event.received",
        "approval.granted",
        "approval.denied",
    }
)


@dataclass(frozen=True, slots=True)
class CriticalKeys:
    """What a replica checks certificates with: the subnet, the CID of its policy in
    force, and that policy's validator key set (`PolicyDocument.keys`).

    The binding of `keys` to `policy` is the caller's: it read both from the policy block.
    """

    subnet: str
    policy: CID
    keys: KeySet

    def __post_init__(self) -> None:
        check_subnet(self.subnet)
        link(self.policy, "policy", dag_cbor_only=True)
        if not isinstance(self.keys, KeySet):
            raise FormatError(f"keys: expected a KeySet, got {type(self.keys).__name__}")


def outcome_of(exec: CID, event: Event) -> Outcome:
    """The outcome a `step.completed` or `step.failed` event records: what validators
    sign and replicas recompute.

    - `value`: the CID of the canonical dag-cbor block of the output (`event.value`, the
      decoded JSON of the payload); null for a failure;
    - `delta`: the CID of the raw block of the state delta (the record's `state` block),
      or null without one;
    - `error` (failures): `error_text(kind, message)` of the event's `{kind, message}`,
      which must be exactly that map, its message already cut to fit (what
      `error_object` gives back), so that one outcome never stands for two failures.

    ValueError (a FormatError where the outcome rules are broken) for another kind, an
    event without a step, or a value no outcome can hold.
    """
    if event.kind not in SETTLING_KINDS:
        raise ValueError(f"{event.kind} has no outcome (only step.completed and step.failed)")
    if event.step is None:
        raise ValueError(f"{event.kind} names no step")
    delta = raw_block(event.delta).cid if event.delta else None
    if event.kind == STEP_COMPLETED:
        try:
            value = dag_block(event.value).cid
        except CodecError as exc:
            raise ValueError(f"the output cannot be an outcome's value: {exc}") from None
        return Outcome(exec, event.step, event.attempt, "completed", value, delta)
    return Outcome(exec, event.step, event.attempt, "failed", None, delta, _error(event.value))


def _error(value: Any) -> str:
    if (
        not isinstance(value, Mapping)
        or set(value) != {"kind", "message"}
        or not isinstance(value["kind"], str)
        or not isinstance(value["message"], str)
    ):
        raise FormatError("the failure is not {kind, message} (two strings)")
    try:
        text = error_text(value["kind"], value["message"])
    except ValueError as exc:
        raise FormatError(f"the failure cannot be an outcome's error: {exc}") from None
    if error_object(text)["message"] != value["message"]:
        raise FormatError(
            "the failure's message is too long for an outcome's error: record the message "
            "error_text cuts it to"
        )
    return text


def quorum_problem(critical: CriticalKeys | None, exec_id: str | CID, event: Event) -> str | None:
    """Why the `step.completed` / `step.failed` event of a critical step may not be
    applied, or None when its certificate (`event.quorum`: a `Certificate` or its map)
    holds: under `critical.policy`, commit of exactly `outcome_of(exec, event)`, or abort
    on a failure of kind `aborted`, and the signature verifies under `critical.keys` for
    the subnet and slot (one pairing check, about 2 ms)."""
    where = f"critical step {event.step} attempt {event.attempt}"
    if event.kind not in SETTLING_KINDS or event.step is None:
        return f"{where}: {event.kind} does not settle a slot, so it has no certificate"
    return _certificate_problem(critical, exec_id, event, where, outcome_of, aborts=True)


def decision_block(event: Event) -> Block:
    """The dag-cbor block a decision stands for: what was decided (`kind`, `actor`,
    `value`), without the writer's clock (`ts`), so that every replica recomputes it."""
    return dag_block({"kind": event.kind, "actor": event.actor, "value": event.value})


def decision_event_fields(data: bytes) -> tuple[str, str | None, Any]:
    """(kind, actor, value) of a decision block's bytes; FormatError if it is not one."""
    try:
        obj = decode_dag(data)
    except CodecError as exc:
        raise FormatError(f"decision: not dag-cbor: {exc}") from None
    if not isinstance(obj, dict) or set(obj) != {"kind", "actor", "value"}:
        raise FormatError("decision: expected a map of exactly kind, actor and value")
    kind, actor = obj["kind"], obj["actor"]
    if kind not in DECISION_KINDS:
        raise FormatError(f"decision.kind: {kind!r} is not a decision")
    if actor is not None and not isinstance(actor, str):
        raise FormatError("decision.actor: expected a string or null")
    return kind, actor, obj["value"]


def decision_outcome(exec: CID, event: Event) -> Outcome:
    """The outcome a decision certifies: status `decided`, its `value` the CID of
    `decision_block(event)`, no delta. A timeout that fails the step is a decision too;
    what it decided is in the block.

    ValueError for an event without a step, or a value no block can hold."""
    if event.step is None:
        raise ValueError(f"{event.kind} names no step")
    try:
        value = decision_block(event).cid
    except CodecError as exc:
        raise ValueError(f"the decision cannot be an outcome's value: {exc}") from None
    return Outcome(exec, event.step, event.attempt, "decided", value)


def decision_problem(critical: CriticalKeys, exec_id: str | CID, event: Event) -> str | None:
    """Why the record settling a timed step (an approval, an event, a timeout, the end
    of a step with a deadline) may not be applied, or None when its certificate is the
    group's signature of commit(`decision_outcome(exec, event)`) for the slot. A decision
    is never aborted: an abort certificate does not settle it."""
    where = f"decision on {event.step} attempt {event.attempt}"
    if event.kind not in DECISION_KINDS or event.step is None:
        return f"{where}: {event.kind} does not decide a step, so it has no certificate"
    return _certificate_problem(critical, exec_id, event, where, decision_outcome, aborts=False)


def _certificate_problem(
    critical: CriticalKeys | None,
    exec_id: str | CID,
    event: Event,
    where: str,
    outcome: Callable[[CID, Event], Outcome],
    *,
    aborts: bool,
) -> str | None:
    if critical is None:
        return (
            f"{where}: no validator keys to check its quorum certificate with "
            "(this replica knows no subnet policy)"
        )
    if event.quorum is None:
        return f"{where}: no quorum certificate"
    try:
        cert = (
            event.quorum
            if isinstance(event.quorum, Certificate)
            else Certificate.from_obj(event.quorum, "quorum")
        )
    except FormatError as exc:
        return f"{where}: malformed quorum certificate: {exc}"
    if cert.policy != critical.policy:
        return (
            f"{where}: the certificate is under policy {cert.policy.encode()}, "
            f"not the subnet's policy {critical.policy.encode()}"
        )
    try:
        exec = exec_id if isinstance(exec_id, CID) else parse_cid(exec_id)
    except CidError as exc:
        return f"{where}: the execution id is not a CID ({exc})"
    certified = cert.decision.outcome
    if certified is None:
        problem = _abort_problem(event) if aborts else "a decision is never aborted"
        if problem is not None:
            return f"{where}: {problem}"
    else:
        try:
            own = outcome(exec, event)
        except ValueError as exc:
            return f"{where}: {exc}"
        if certified != own:
            theirs, ours = certified.to_obj(), own.to_obj()
            differ = [key for key in theirs if theirs[key] != ours[key]]
            verb = "differs" if len(differ) == 1 else "differ"
            return (
                f"{where}: the certificate is for another outcome "
                f"(its {' and '.join(differ)} {verb} from the record's)"
            )
    try:
        slot = Slot(exec, event.step or "", event.attempt)
    except ValueError as exc:
        return f"{where}: not a slot: {exc}"
    if not verify_certificate(cert, critical.keys, critical.subnet, slot):
        return (
            f"{where}: the certificate's signature does not verify under policy "
            f"{critical.policy.encode()}"
        )
    return None


def _abort_problem(event: Event) -> str | None:
    """An abort certificate settles only a failure of kind `aborted`."""
    if event.kind != STEP_FAILED:
        return f"an abort certificate cannot settle {event.kind}, only a step.failed"
    try:
        _error(event.value)
    except FormatError as exc:
        return str(exc)
    kind = event.value["kind"]
    if kind != ABORTED:
        return f"an abort certificate settles only a failure of kind {ABORTED!r}, not {kind!r}"
    return None
