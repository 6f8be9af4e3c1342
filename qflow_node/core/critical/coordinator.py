"""One coordinator round of the two-phase commit, for one slot.

docs/consensus.md, "Coordinator rules". The node holding the slot's lease
drives a `Coordinator`: `start`, then every vote, answer and timer tick goes in and the
actions to take come out. Phases:

- query (a coordinator taking over, or any round after a failed one): ask every
  validator what it signed, then pursue one commit: its own proposal, or a commit that
  more validators already signed, provided at least `2t - n` of them did (while fewer
  than `2t - n` validators are Byzantine, the safety assumption, one of them is honest,
  so a Byzantine validator cannot plant a decision for the coordinator to chase); on a
  tie its own. Abort is never pursued from a query (t abort partials found by it are
  recovered, as any decision's are). Nothing to pursue (no proposal of its own and no
  such commit) → `RoundFailed`;
- commit: prepare(target) to every validator that holds nothing. t valid partials of
  any decision → `Decided`. The *proof* (below) → the abort phase, at once if the query
  answers already make it (no prepare is sent then). A timeout, or every validator
  having answered without either, → `RoundFailed`;
- abort, only with the proof: ask every validator to sign abort unless it signed a
  commit. t partials of one decision → `Decided`; on timeout, or once neither the target
  nor abort can reach t, `RoundFailed`.

Abort only on proof. The proof is `n - t + 1` distinct validators shown not to sign the
target: a `mismatch` or `policy` refusal of it, or a verified partial of any other
decision (a `locked` or `aborted` refusal, or a query answer; these partials also count
for their own decision, as any partial does). With it, at most `t - 1` validators can
ever sign the target, so abort cannot split the locks against it. A timeout is never a
reason to abort: it ends the round with `RoundFailed`, every lock stays, and the shell
starts a new round later (`query_first=True`), which can only complete what was started.
With a deterministic step an honest coordinator's target is refused by Byzantine
validators only, fewer than `n - t + 1` when `n = 3f + 1, t = 2f + 1`: it never aborts,
and it commits once t honest validators are reachable ("Split locks" in the design).

Refusals are attributable, not transferable. A vote counts only as delivered by the
shell, which checked its Ed25519 envelope and mapped the signer to the share index
(`on_vote`'s `index`); a `mismatch` or `policy` refusal carries no partial, and this
package keeps no envelope, so the proof convinces this coordinator only. Validators do
not check it: they sign abort for the slot's lease holder (and refuse anyone else with
`policy`). Liveness therefore assumes an honest lease holder: one that asks free
validators to abort without the proof can still split the locks and block the slot.
Safety never depends on it: the validators' locks alone keep two decisions from both
reaching t.

Every partial is verified against its share's key before it counts, and kept per
decision: whatever decision reaches t first wins, so a commit(Y) that validators locked
for an earlier coordinator is finished too. Two valid partials of one share for two
decisions are an `Equivocation`; neither counts, and the equivocator is no refuser.
Requests are re-sent every `resend_ms` to validators that have not answered in the
current phase: every request is idempotent for an honest validator, so lost messages
cost time only. The shell hands in only replies to this coordinator's own requests (a
refusal without a partial does not name the outcome it refuses: it is about the round's
target, the only commit one round prepares).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from qflow_node.codec import CID, Block
from qflow_node.core.critical.messages import (
    AbortRequest,
    Answer,
    Prepare,
    Query,
    SignedDecision,
    Vote,
)
from qflow_node.core.critical.statement import (
    Certificate,
    Decision,
    Outcome,
    check_subnet,
    statement_bytes,
)
from qflow_node.core.scheduling.rank import Slot
from qflow_node.crypto import DecodeError, KeySet, Signature, combine_verified, verify_partial

ABORT = Decision.abort()


class Phase(StrEnum):
    IDLE = "idle"
    QUERY = "query"
    COMMIT = "commit"
    ABORT = "abort"
    DECIDED = "decided"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Settings:
    """Phase timeouts and the re-send interval, in milliseconds. A timeout ends the round
    with `RoundFailed`; it never starts the abort phase."""

    query_ms: int = 2_000
    commit_ms: int = 10_000  # covers the validators' re-execution of the step
    abort_ms: int = 5_000
    resend_ms: int = 1_000

    def __post_init__(self) -> None:
        if min(self.query_ms, self.commit_ms, self.abort_ms, self.resend_ms) <= 0:
            raise ValueError("timeouts and the re-send interval must be positive")


@dataclass(frozen=True, slots=True)
class Send:
    """Send `message` to the validator of share index `to` (the policy maps it to a peer)."""

    to: int
    message: Prepare | AbortRequest | Query


@dataclass(frozen=True, slots=True)
class Decided:
    """`decision` is certified: publish it (the record of the committed outcome with the
    certificate in its `quorum`, or the abort-certified failure record)."""

    certificate: Certificate
    decision: Decision


@dataclass(frozen=True, slots=True)
class RoundFailed:
    """No decision this round: validators offline, too slow or split, no proof to abort,
    or nothing to propose. Every lock stays; the shell starts a new round later, with
    backoff and `query_first=True` (this node while it holds the lease, else the next
    lease holder)."""

    slot: Slot
    reason: str


@dataclass(frozen=True, slots=True)
class InvalidPartial:
    """Validator `index` sent a partial that does not verify under its share key."""

    index: int
    signed: SignedDecision
    reason: str


@dataclass(frozen=True, slots=True)
class Equivocation:
    """Validator `index` signed two decisions for `slot`: both partials verify (the proof)."""

    slot: Slot
    index: int
    first: SignedDecision
    second: SignedDecision


@dataclass(frozen=True, slots=True)
class Rejected:
    """A vote or answer that is not about this round (wrong slot, policy or index)."""

    index: int
    reason: str


CoordinatorAction: TypeAlias = (
    Send | Decided | RoundFailed | InvalidPartial | Equivocation | Rejected
)


class Coordinator:
    """One round for `slot` under the policy `policy` with group key set `keys`.

    `proposal` is this node's own outcome of the slot (with `blocks`, what a validator
    needs to re-execute it); None when it has none, which needs `query_first` and ends
    in `RoundFailed` unless at least `2t - n` validators already signed a commit (such a
    coordinator never aborts: it has no target a proof could be about).
    """

    def __init__(
        self,
        *,
        subnet: str,
        policy: CID,
        keys: KeySet,
        slot: Slot,
        proposal: Outcome | None,
        blocks: tuple[Block, ...] = (),
        query_first: bool = False,
        settings: Settings | None = None,
    ) -> None:
        if proposal is not None and proposal.slot != slot:
            raise ValueError(f"the proposal is for another slot than {slot}")
        if proposal is None and not query_first:
            raise ValueError("a coordinator without a proposal must query first")
        self.subnet = check_subnet(subnet)
        self.policy = policy
        self.keys = keys
        self.slot = slot
        self.proposal = proposal
        self.blocks = blocks
        self.query_first = query_first
        self.settings = settings or Settings()
        self._phase = Phase.IDLE
        self._target: Decision | None = None  # the commit this round prepares
        self._held: dict[int, SignedDecision] = {}  # index -> its verified vote
        self._partials: dict[Decision, dict[int, Signature]] = {}
        self._refused: dict[Decision, set[int]] = {}
        self._equivocators: set[int] = set()
        self._pending: set[int] = set()  # asked in this phase, no answer yet
        self._statements: dict[Decision, bytes] = {}
        self._deadline_ms = 0
        self._resend_ms = 0
        self._certificate: Certificate | None = None
        # Partials a commit found by a query needs before it is pursued: one honest
        # signer at least, while fewer than 2t - n validators are Byzantine.
        self._trusted = max(1, 2 * keys.threshold - keys.size)
        # Validators shown not to sign the target that make the proof to abort.
        self._proof_size = keys.size - keys.threshold + 1

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def certificate(self) -> Certificate | None:
        return self._certificate

    @property
    def target(self) -> Decision | None:
        """The commit this round pursues (None until the query, if any, has chosen one)."""
        return self._target

    def held(self) -> dict[int, Decision]:
        """The decision each validator has shown a valid partial for."""
        return {index: signed.decision for index, signed in self._held.items()}

    def refused_by(self) -> frozenset[int]:
        """The validators shown not to sign this round's target (a `mismatch` or `policy`
        refusal of it, or a valid partial of another decision): the abort phase starts
        once there are `n - t + 1` of them. Empty while there is no target."""
        if self._target is None:
            return frozenset()
        return frozenset(self._refusers(self._target))

    @property
    def next_timer_ms(self) -> int | None:
        """When to call `on_timer` next; None once the round is over."""
        if self._phase not in (Phase.QUERY, Phase.COMMIT, Phase.ABORT):
            return None
        if self._pending:
            return min(self._deadline_ms, self._resend_ms)
        return self._deadline_ms

    def start(self, now_ms: int) -> tuple[CoordinatorAction, ...]:
        if self._phase is not Phase.IDLE:
            raise RuntimeError("a coordinator round starts once")
        if self.query_first:
            return tuple(self._enter(Phase.QUERY, now_ms, self.settings.query_ms))
        assert self.proposal is not None  # checked in __init__
        return tuple(self._begin_commit(Decision.commit(self.proposal), now_ms))

    def on_vote(self, index: int, vote: Vote, now_ms: int) -> tuple[CoordinatorAction, ...]:
        """A vote from the validator of share `index` (the shell checked the envelope)."""
        if not self._running():
            return ()
        problem = self._misaddressed(index, vote.subnet, vote.policy, vote.slot, vote.index)
        if problem is not None:
            return (Rejected(index, f"vote {problem}"),)
        actions: list[CoordinatorAction] = []
        if vote.signed is not None:
            # A yes, or a `locked` / `aborted` refusal: the partial counts for its own
            # decision, and (if it is not the target) towards the proof.
            self._observe(index, vote.signed, actions)
        else:
            # A `mismatch` or `policy` refusal. A prepare is only ever for the target.
            asked = self._target if vote.request == "prepare" else ABORT
            if asked is not None:
                self._refused.setdefault(asked, set()).add(index)
            current = Phase.COMMIT if vote.request == "prepare" else Phase.ABORT
            if self._phase is current:
                self._pending.discard(index)  # refused: asking again will not change that
        actions += self._progress(now_ms)
        return tuple(actions)

    def on_answer(self, index: int, answer: Answer, now_ms: int) -> tuple[CoordinatorAction, ...]:
        """A query answer from the validator of share `index`."""
        if not self._running():
            return ()
        problem = self._misaddressed(index, answer.subnet, answer.policy, answer.slot, answer.index)
        if problem is not None:
            return (Rejected(index, f"answer {problem}"),)
        actions: list[CoordinatorAction] = []
        if answer.signed is not None:
            self._observe(index, answer.signed, actions)
        elif self._phase is Phase.QUERY:
            self._pending.discard(index)
        actions += self._progress(now_ms)
        return tuple(actions)

    def on_timer(self, now_ms: int) -> tuple[CoordinatorAction, ...]:
        if not self._running():
            return ()
        if now_ms >= self._deadline_ms:
            if self._phase is Phase.QUERY:
                return tuple(self._after_query(now_ms))
            # Never an abort: without the proof it could split the locks.
            return (self._fail(f"the {self._phase.value} phase timed out"),)
        if self._pending and now_ms >= self._resend_ms:
            self._resend_ms = now_ms + self.settings.resend_ms
            message = self._request()
            return tuple(Send(index, message) for index in sorted(self._pending))
        return ()

    # -- phases ------------------------------------------------------------------------

    def _running(self) -> bool:
        return self._phase in (Phase.QUERY, Phase.COMMIT, Phase.ABORT)

    def _enter(self, phase: Phase, now_ms: int, timeout_ms: int) -> list[CoordinatorAction]:
        """Switch to `phase` and ask every validator that holds no decision yet."""
        self._phase = phase
        self._deadline_ms = now_ms + timeout_ms
        self._resend_ms = now_ms + self.settings.resend_ms
        if phase is Phase.QUERY:
            self._pending = set(self._validators())
        else:
            skip = self._held.keys() | self._equivocators
            self._pending = {i for i in self._validators() if i not in skip}
        message = self._request()
        actions: list[CoordinatorAction] = [Send(i, message) for i in sorted(self._pending)]
        return actions + self._progress(now_ms)

    def _request(self) -> Prepare | AbortRequest | Query:
        if self._phase is Phase.QUERY:
            return Query(self.subnet, self.policy, self.slot)
        if self._phase is Phase.ABORT:
            return AbortRequest(self.subnet, self.policy, self.slot)
        assert self._target is not None and self._target.outcome is not None
        outcome = self._target.outcome
        blocks = self.blocks if outcome == self.proposal else ()
        return Prepare(self.subnet, self.policy, self.slot, outcome, blocks)

    def _begin_commit(self, target: Decision, now_ms: int) -> list[CoordinatorAction]:
        self._target = target
        if self._proven():
            # The query answers are the proof already: a prepare now would only make
            # free validators lock a commit that cannot reach t.
            return self._begin_abort(now_ms)
        return self._enter(Phase.COMMIT, now_ms, self.settings.commit_ms)

    def _begin_abort(self, now_ms: int) -> list[CoordinatorAction]:
        return self._enter(Phase.ABORT, now_ms, self.settings.abort_ms)

    def _after_query(self, now_ms: int) -> list[CoordinatorAction]:
        """Pursue the commit most validators already signed, among our own proposal and
        the commits at least `2t - n` validators signed; on a tie our own. Never abort:
        that needs the proof against a target."""
        own = None if self.proposal is None else Decision.commit(self.proposal)
        candidates = {
            decision
            for decision, partials in self._partials.items()
            if decision != ABORT and len(partials) >= self._trusted
        }
        if own is not None:
            candidates.add(own)
        if not candidates:
            return [
                self._fail(
                    "no outcome of its own to propose, and no commit that "
                    f"{self._trusted} validator(s) signed to finish"
                )
            ]

        def preference(decision: Decision) -> tuple[int, int, bytes]:
            mine = 0 if decision == own else 1
            return -len(self._partials.get(decision, {})), mine, self._statement(decision)

        return self._begin_commit(min(candidates, key=preference), now_ms)

    def _progress(self, now_ms: int) -> list[CoordinatorAction]:
        """Decide once a decision has t partials; move on once waiting cannot help."""
        if not self._running():
            return []
        threshold = self.keys.threshold
        for decision, partials in self._partials.items():
            if len(partials) >= threshold:
                return [self._decide(decision)]
        if self._phase is Phase.QUERY and not self._pending:
            return self._after_query(now_ms)
        if self._phase is Phase.COMMIT:
            if self._proven():
                return self._begin_abort(now_ms)
            if not self._pending:
                refusers = len(self.refused_by())
                return [
                    self._fail(
                        "every validator answered: no decision reached t, and "
                        f"{refusers} refusal(s) of {self._proof_size} are no proof to abort"
                    )
                ]
        if self._phase is Phase.ABORT:
            assert self._target is not None  # the abort phase is about a target
            if max(self._reachable(self._target), self._reachable(ABORT)) < threshold:
                return [self._fail("neither commit nor abort can reach t")]
        return []

    def _proven(self) -> bool:
        """Whether `n - t + 1` validators are shown not to sign the target: the proof
        that commit(target) can never reach t, the only reason to abort."""
        assert self._target is not None
        return len(self._refusers(self._target)) >= self._proof_size

    def _refusers(self, target: Decision) -> set[int]:
        """Validators shown not to sign `target`: a valid partial of another decision, or
        a `mismatch` / `policy` refusal of it (and no valid partial of it since).
        Equivocators are none: they might sign anything."""
        shown = {index for index, signed in self._held.items() if signed.decision != target}
        said = self._refused.get(target, set()) - self._held.keys()
        return (shown | said) - self._equivocators

    def _reachable(self, decision: Decision) -> int:
        """Partials `decision` has, plus validators that hold nothing and have not refused
        it: an upper bound on the partials it can get this round."""
        refused = self._refused.get(decision, set())
        free = [
            i
            for i in self._validators()
            if i not in self._held and i not in self._equivocators and i not in refused
        ]
        return len(self._partials.get(decision, {})) + len(free)

    def _decide(self, decision: Decision) -> Decided:
        # Every partial was verified on arrival, so the combination verifies first time.
        combined = combine_verified(self.keys, self._statement(decision), self._partials[decision])
        self._certificate = Certificate(self.policy, decision, combined.signature.to_bytes())
        self._phase = Phase.DECIDED
        self._pending = set()
        return Decided(self._certificate, decision)

    def _fail(self, why: str) -> RoundFailed:
        self._phase = Phase.FAILED
        self._pending = set()
        counts = ", ".join(
            f"{decision.kind} {len(partials)}"
            for decision, partials in self._partials.items()
            if partials
        )
        tally = f"partials: {counts or 'none'} of {self.keys.threshold} needed"
        return RoundFailed(self.slot, f"{why} ({tally})")

    # -- votes -------------------------------------------------------------------------

    def _validators(self) -> range:
        return range(1, self.keys.size + 1)

    def _misaddressed(
        self, index: int, subnet: str, policy: CID, slot: Slot, claimed: int
    ) -> str | None:
        if not 1 <= index <= self.keys.size:
            return f"from share {index}, not a validator of the policy (1..{self.keys.size})"
        if claimed != index:
            return f"names share {claimed} but came from share {index}"
        if (subnet, policy, slot) != (self.subnet, self.policy, self.slot):
            return "is about another subnet, policy or slot"
        return None

    def _statement(self, decision: Decision) -> bytes:
        statement = self._statements.get(decision)
        if statement is None:
            statement = statement_bytes(self.subnet, self.policy, self.slot, decision)
            self._statements[decision] = statement
        return statement

    def _observe(
        self, index: int, signed: SignedDecision, actions: list[CoordinatorAction]
    ) -> None:
        """Count `signed` from `index` if its partial verifies; report what is wrong."""
        if index in self._equivocators:
            return
        prior = self._held.get(index)
        if prior == signed:
            return  # a repeat: BLS partials are deterministic, so the same bytes
        try:
            partial = Signature.from_bytes(signed.partial, f"partial from share {index}")
        except DecodeError as exc:
            actions.append(InvalidPartial(index, signed, str(exc)))
            return
        key = self.keys.share_key(index)
        if not verify_partial(key, self._statement(signed.decision), partial):
            actions.append(InvalidPartial(index, signed, "does not verify under its share key"))
            return
        if prior is not None and prior.decision != signed.decision:
            # Valid partials of one share for two decisions: a proof; count neither.
            self._equivocators.add(index)
            del self._held[index]
            del self._partials[prior.decision][index]
            self._pending.discard(index)
            actions.append(Equivocation(self.slot, index, prior, signed))
            return
        self._held[index] = signed
        self._partials.setdefault(signed.decision, {})[index] = partial
        self._pending.discard(index)  # what it holds is all it will ever sign
