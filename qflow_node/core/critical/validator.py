"""A validator's side of the two-phase commit: one lock per slot, never two decisions.

docs/consensus.md, "Validator rules". The shell decodes a request, checks
the policy, re-executes the step and hands the results in; the validator answers with
the actions to take, in order. Signing a decision creates the slot's *lock* and returns
`PersistLock` before the `Reply` that carries the partial: the shell makes the lock
durable (fsync) before it performs any later action of the list, so a restart never
forgets a signature that left the node. With the lock persisted, an honest validator
signs at most one decision per slot, ever: the safety argument rests on that alone.

A coordinator asks for abort only with the proof that its proposal cannot commit
(`n - t + 1` refusals, see `coordinator`), but an abort request does not carry that
proof and a validator does not check it: it signs abort (holding no lock) for the
slot's lease holder, and the shell refuses everyone else with `policy_error` ("Who may
abort" in the design). Refusing is always safe, signing abort when asked by a node
without the proof can only cost liveness, never safety. The shell also keeps the value
and delta blocks of every locked commit (`pinned`) until the execution ends, so a new
coordinator can fetch them and finish that commit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from qflow_node.codec import CID
from qflow_node.core.critical.fields import FormatError, fields, link
from qflow_node.core.critical.messages import (
    MAX_DETAIL_LEN,
    AbortRequest,
    Answer,
    Prepare,
    Query,
    Refusal,
    Request,
    SignedDecision,
    Vote,
)
from qflow_node.core.critical.statement import (
    Decision,
    Outcome,
    check_subnet,
    outcome_digest,
    slot_from_obj,
    slot_to_obj,
    statement_bytes,
)
from qflow_node.core.scheduling.rank import Slot
from qflow_node.crypto import Share, partial_sign

LOCK_FIELDS: Final = frozenset({"subnet", "policy", "slot", "signed"})
_UNPRINTABLE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Lock:
    """The one decision this validator signed for `slot`, as persisted and restored."""

    subnet: str
    policy: CID
    slot: Slot
    signed: SignedDecision

    def __post_init__(self) -> None:
        if not self.signed.decision.applies_to(self.slot):
            raise FormatError("lock.signed.outcome: is for another slot than the lock's")

    @property
    def decision(self) -> Decision:
        return self.signed.decision

    def to_obj(self) -> dict[str, Any]:
        return {
            "subnet": self.subnet,
            "policy": self.policy,
            "slot": slot_to_obj(self.slot),
            "signed": self.signed.to_obj(),
        }

    @classmethod
    def from_obj(cls, obj: object, path: str = "lock") -> Lock:
        f = fields(obj, path, LOCK_FIELDS)
        return cls(
            check_subnet(f["subnet"], f"{path}.subnet"),
            link(f["policy"], f"{path}.policy", dag_cbor_only=True),
            slot_from_obj(f["slot"], f"{path}.slot"),
            SignedDecision.from_obj(f["signed"], f"{path}.signed"),
        )


@dataclass(frozen=True, slots=True)
class PersistLock:
    """Make `lock` durable before performing any later action of the same list."""

    lock: Lock


@dataclass(frozen=True, slots=True)
class Reply:
    """Send `message` back on the request's stream."""

    message: Vote | Answer


ValidatorAction: TypeAlias = PersistLock | Reply


class Validator:
    """One validator of one policy (share `share.index` of its group key) and its locks.

    Locks live until `forget`; the shell restores them at startup with `restore`, before
    it answers any request.
    """

    def __init__(self, subnet: str, policy: CID, share: Share) -> None:
        self.subnet = check_subnet(subnet)
        self.policy = policy
        self._share = share
        self._locks: dict[Slot, Lock] = {}
        self._by_exec: dict[CID, set[Slot]] = {}

    @property
    def index(self) -> int:
        return self._share.index

    def lock(self, slot: Slot) -> Lock | None:
        return self._locks.get(slot)

    def locks(self) -> tuple[Lock, ...]:
        return tuple(self._locks.values())

    def pinned(self) -> frozenset[CID]:
        """The value and delta blocks of every commit this validator locked: keep them
        stored and fetchable until `forget` drops the lock ("Locked outcomes stay
        fetchable" in the design)."""
        cids: set[CID] = set()
        for lock in self._locks.values():
            outcome = lock.decision.outcome
            if outcome is not None:
                cids.update(cid for cid in (outcome.value, outcome.delta) if cid is not None)
        return frozenset(cids)

    def restore(self, locks: Iterable[Lock]) -> None:
        """Load persisted locks. A lock of another policy, or two different locks for one
        slot, mean the persisted state is not this validator's: refuse to start on it."""
        for lock in locks:
            if (lock.subnet, lock.policy) != (self.subnet, self.policy):
                raise ValueError(f"lock for {lock.slot} belongs to another subnet or policy")
            held = self._locks.get(lock.slot)
            if held is not None and held != lock:
                raise ValueError(f"two different locks for {lock.slot}")
            self._hold(lock)

    def forget(self, exec: CID) -> None:
        """Drop the locks of an execution that has ended.

        Only once no slot of it can be asked about again (its end record is in the
        ledger and the shell refuses requests for ended executions): a forgotten lock
        would let this validator sign a second decision for its slot.
        """
        for slot in self._by_exec.pop(exec, set()):
            del self._locks[slot]

    def needs_outcome(self, prepare: Prepare) -> bool:
        """Whether `on_prepare` will look at the validator's own outcome: if not, the shell
        can answer without re-executing the step."""
        return self._foreign(prepare.subnet, prepare.policy) is None and (
            prepare.slot not in self._locks
        )

    def on_prepare(
        self, prepare: Prepare, own_outcome: Outcome | None, policy_error: str | None = None
    ) -> tuple[ValidatorAction, ...]:
        """Answer a prepare. `own_outcome` is the outcome the shell computed by
        re-executing the step (None if it could not); `policy_error` is why the policy
        forbids the request (coordinator not a member, step not critical, module not
        whitelisted), None when it allows it."""
        foreign = self._foreign(prepare.subnet, prepare.policy)
        if foreign is not None:
            return (self._refuse(prepare, "prepare", Refusal.POLICY, detail=foreign),)
        lock = self._locks.get(prepare.slot)
        if lock is not None:
            return (self._from_lock(prepare, "prepare", prepare.decision, lock),)
        if policy_error is not None:
            return (self._refuse(prepare, "prepare", Refusal.POLICY, detail=policy_error),)
        if own_outcome != prepare.outcome:
            own = None if own_outcome is None else outcome_digest(own_outcome)
            detail = "could not compute the outcome" if own is None else "another outcome"
            return (self._refuse(prepare, "prepare", Refusal.MISMATCH, detail=detail, own=own),)
        return self._sign(prepare, "prepare", prepare.decision)

    def on_abort(
        self, request: AbortRequest, policy_error: str | None = None
    ) -> tuple[ValidatorAction, ...]:
        """Sign abort unless a commit is signed. `policy_error` as for `on_prepare`; the
        shell must set it when the sender does not hold the slot's lease, or any member
        could keep a critical step from ever committing (or split the locks). There is no
        proof to check here: the lease holder is trusted to abort only with one."""
        foreign = self._foreign(request.subnet, request.policy)
        if foreign is not None:
            return (self._refuse(request, "abort", Refusal.POLICY, detail=foreign),)
        lock = self._locks.get(request.slot)
        if lock is not None:
            return (self._from_lock(request, "abort", Decision.abort(), lock),)
        if policy_error is not None:
            return (self._refuse(request, "abort", Refusal.POLICY, detail=policy_error),)
        return self._sign(request, "abort", Decision.abort())

    def on_query(self, query: Query) -> tuple[ValidatorAction, ...]:
        """What this validator signed for the slot (under the query's policy), or None."""
        lock = None
        if self._foreign(query.subnet, query.policy) is None:
            lock = self._locks.get(query.slot)
        signed = None if lock is None else lock.signed
        answer = Answer(query.subnet, query.policy, query.slot, self.index, signed)
        return (Reply(answer),)

    def _foreign(self, subnet: str, policy: CID) -> str | None:
        if subnet != self.subnet:
            return f"this validator is not in subnet {subnet}"
        if policy != self.policy:
            return f"policy {policy.encode()} is not this validator's current policy"
        return None

    def _hold(self, lock: Lock) -> None:
        self._locks[lock.slot] = lock
        self._by_exec.setdefault(lock.slot.exec, set()).add(lock.slot)

    def _sign(
        self, request: Prepare | AbortRequest, kind: Request, decision: Decision
    ) -> tuple[ValidatorAction, ...]:
        statement = statement_bytes(self.subnet, self.policy, request.slot, decision)
        signed = SignedDecision(decision, partial_sign(self._share, statement).to_bytes())
        lock = Lock(self.subnet, self.policy, request.slot, signed)
        # Held in memory at once: if persisting fails the shell sends nothing, and this
        # validator still refuses every other decision until it restarts.
        self._hold(lock)
        return PersistLock(lock), Reply(self._vote(request, kind, signed))

    def _from_lock(
        self, request: Prepare | AbortRequest, kind: Request, asked: Decision, lock: Lock
    ) -> Reply:
        """The same vote again if the lock is what is asked, else a refusal showing it."""
        if lock.decision == asked:
            return Reply(self._vote(request, kind, lock.signed))
        reason = Refusal.ABORTED if lock.decision.outcome is None else Refusal.LOCKED
        return Reply(self._vote(request, kind, lock.signed, refusal=reason))

    def _refuse(
        self,
        request: Prepare | AbortRequest,
        kind: Request,
        reason: Refusal,
        *,
        detail: str,
        own: CID | None = None,
    ) -> Reply:
        return Reply(
            self._vote(request, kind, None, refusal=reason, detail=_printable(detail), own=own)
        )

    def _vote(
        self,
        request: Prepare | AbortRequest,
        kind: Request,
        signed: SignedDecision | None,
        *,
        refusal: Refusal | None = None,
        detail: str | None = None,
        own: CID | None = None,
    ) -> Vote:
        return Vote(
            request.subnet,
            request.policy,
            request.slot,
            self.index,
            kind,
            signed,
            refusal,
            detail,
            own,
        )


def _printable(detail: str) -> str:
    """A reason that fits a vote: printable, bounded, never empty."""
    cleaned = _UNPRINTABLE.sub("?", detail)[:MAX_DETAIL_LEN]
    return cleaned or "refused"
