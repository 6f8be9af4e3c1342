"""One party's DKG ceremony: `crypto.dkg.Participant` driven over a network, with the
broadcast, the deadlines and the final confirmation the state machine leaves to its
transport (docs/consensus.md, "Key setup: the DKG over libp2p"; ADR 0012).

Pure: time comes in as unix milliseconds, requests as bytes with the authenticated peer
id of their sender, and what to send comes out as `Send`s. The trio shell is
`runtime/dkg_service.py`.

**Broadcast** (Dolev-Strong with signatures). Deals, complaints and justifications are
broadcast: signed by their originator and sent to every party. Each round lasts t steps
(`Timeline`). A party accepts a message in step k (0-based) of its round only if at
least k + 1 distinct parties signed it; when it accepts one before the last step, it
adds its own signature and relays it to every party that has not signed it yet. With at
most f = t - 1 faulty parties and every message between honest parties delivered within
a step:

- a message an honest party accepts in step k < t - 1 reaches every honest party, with
  k + 2 signatures, by step k + 1, and is accepted there;
- a message accepted in the last step carries t signatures, so an honest party signed
  it earlier, and by the first point every honest party has it already.

So every honest party ends each round holding the same messages, and computes the same
verdicts, QUAL and key. Two different payloads from one originator about one subject
(two deals, two justifications for one complainer) are both relayed: the state machine
turns them into a disqualification everywhere. A third adds nothing and is dropped.

Dealt shares go straight from dealer to recipient (the libp2p stream is encrypted and
authenticated) and are never relayed.

**Confirmation.** After the last round each party derives the policy and sends every
party a signed `Confirm` of its CID and of its transcript's digest. A party finishes
only if at least t parties (itself included) confirmed the same policy. Honest parties
confirm one policy each and t > n/2, so if the timing assumption fails and honest
parties end with different transcripts, at most one policy is confirmed: the others
fail loudly instead of writing a key nobody else holds.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from qflow_node.core.dkg.messages import (
    ACCEPTED,
    DUPLICATE,
    Answer,
    Body,
    Confirm,
    Envelope,
    MessageError,
    Payload,
    decode_envelope,
    dropped,
    refused,
)
from qflow_node.core.dkg.plan import DkgPlan, PlanError, Round
from qflow_node.core.policy import PolicyDocument
from qflow_node.crypto import (
    Complaint,
    Deal,
    DealtShare,
    DKGError,
    DkgResult,
    Justification,
    Participant,
    Rng,
)
from qflow_node.identity.keys import IdentityError, SigningKey, verify

TRANSCRIPT_DOMAIN: Final = b"qflow/dkg-transcript/v1\x00"
MAX_VERSIONS: Final = 2  # two different payloads prove equivocation; more add nothing

Broadcast = Deal | Complaint | Justification
_ROUND: Final[dict[type, Round]] = {
    Deal: Round.DEAL,
    Complaint: Round.COMPLAINT,
    Justification: Round.JUSTIFICATION,
}


class Stage(enum.IntEnum):
    WAITING = 0  # before the plan's start
    DEAL = 1  # dealt; taking deals and shares
    COMPLAIN = 2  # deal round closed, complaints sent
    JUSTIFY = 3  # complaint round closed, justifications sent
    CONFIRM = 4  # finished the DKG, confirmation sent; collecting the others'
    DONE = 5


@dataclass(frozen=True, slots=True)
class Send:
    """Send `data` (an encoded envelope) to party `to`; `what` is for logs."""

    to: int
    data: bytes
    what: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The ceremony made a key: its policy, this party's result (with its share), and
    the parties that confirmed the same policy."""

    policy: PolicyDocument
    result: DkgResult
    confirmed_by: tuple[int, ...]
    transcript: bytes


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str


Outcome = Finished | Failed


class Ceremony:
    """Party `key` of the ceremony `plan`. All randomness is `rng` (the deal)."""

    def __init__(self, plan: DkgPlan, key: SigningKey, rng: Rng) -> None:
        index = plan.index_of(key.peer_id)
        if index is None:
            raise PlanError(f"this node ({key.peer_id}) is not a validator of the plan")
        self.plan = plan
        self.plan_cid = plan.cid
        self.key = key
        self.index = index
        self.timeline = plan.timeline
        self.participant = Participant(index, plan.threshold, plan.size)
        self.stage = Stage.WAITING
        self.outcome: Outcome | None = None
        self._rng = rng
        self._held: dict[bytes, Payload] = {}  # digest -> accepted broadcast: the transcript
        self._versions: dict[tuple[object, ...], set[bytes]] = {}
        self._confirms: dict[int, Confirm | None] = {}  # None: two different ones
        self._result: DkgResult | None = None
        self._policy: PolicyDocument | None = None

    # -- time --------------------------------------------------------------------------------

    @property
    def next_deadline_ms(self) -> int | None:
        """When `tick` has something to do next (None once done)."""
        timeline = self.timeline
        deadlines: dict[Stage, int | None] = {
            Stage.WAITING: timeline.start_ms,
            Stage.DEAL: timeline.opens(Round.COMPLAINT),
            Stage.COMPLAIN: timeline.opens(Round.JUSTIFICATION),
            Stage.JUSTIFY: timeline.confirm_opens,
            Stage.CONFIRM: timeline.ends,
            Stage.DONE: None,
        }
        return deadlines[self.stage]

    def tick(self, now_ms: int) -> list[Send]:
        """Close every round whose deadline has passed, in order; what to send."""
        sends: list[Send] = []
        while self.outcome is None:
            deadline = self.next_deadline_ms
            if deadline is None or now_ms < deadline:
                break
            sends += self._advance(now_ms)
        return sends

    def _advance(self, now_ms: int) -> list[Send]:
        if self.stage is Stage.WAITING:
            late = self.timeline.start_ms + self.timeline.step_ms
            if now_ms >= late:
                self._fail(
                    f"started too late: the deal round's first step ended at {late} (unix ms),"
                    f" {now_ms - late} ms ago; every party must be running before the"
                    " plan's start"
                )
                return []
            self.stage = Stage.DEAL
            deal, shares = self._deal()
            sends = self._broadcast(deal)
            return sends + [self._direct(share.recipient, share) for share in shares]
        if self.stage is Stage.DEAL:
            self.stage = Stage.COMPLAIN
            return [s for c in self.participant.complaints() for s in self._broadcast(c)]
        if self.stage is Stage.COMPLAIN:
            self.stage = Stage.JUSTIFY
            return [s for j in self._justifications() for s in self._broadcast(j)]
        if self.stage is Stage.JUSTIFY:
            self.stage = Stage.CONFIRM
            return self._finish()
        self._decide()
        return []

    # -- what this party says (tests of cheating parties override these two) ----------------

    def _deal(self) -> tuple[Deal, tuple[DealtShare, ...]]:
        return self.participant.deal(self._rng)

    def _justifications(self) -> tuple[Justification, ...]:
        return self.participant.justifications()

    def _payload(self, msg: Body) -> Payload:
        return Payload(self.plan_cid, self.index, msg)

    def _broadcast(self, msg: Broadcast) -> list[Send]:
        payload = self._payload(msg)
        self._hold(payload)
        data = Envelope.signed(payload, self.key).to_bytes()
        return [Send(j, data, msg.KIND) for j in self._others()]

    def _direct(self, to: int, msg: DealtShare | Confirm) -> Send:
        return Send(to, Envelope.signed(self._payload(msg), self.key).to_bytes(), msg.KIND)

    def _others(self) -> list[int]:
        return [j for j in range(1, self.plan.size + 1) if j != self.index]

    # -- receiving ---------------------------------------------------------------------------

    def receive(self, now_ms: int, peer: str, data: bytes) -> tuple[Answer, list[Send]]:
        """A request from the authenticated `peer`: the answer, and the relays to send."""
        if self.outcome is not None:
            return dropped("the ceremony is over at this party"), []
        sender = self.plan.index_of(peer)
        if sender is None:
            return refused(f"peer {peer} is not a party of plan {self.plan_cid.encode()}"), []
        try:
            envelope = decode_envelope(data)
        except MessageError as exc:
            return refused(str(exc)), []
        problem = self._authenticate(envelope, sender)
        if problem is not None:
            return refused(problem), []
        msg = envelope.payload.msg
        if isinstance(msg, Confirm):
            return self._on_confirm(envelope.payload.sender, msg), []
        if isinstance(msg, DealtShare):
            return self._on_share(envelope.payload, msg, now_ms), []
        return self._on_broadcast(envelope, msg, now_ms)

    def _authenticate(self, envelope: Envelope, peer: int) -> str | None:
        """Why the envelope is not authentic for this ceremony, or None."""
        payload, n = envelope.payload, self.plan.size
        if payload.plan != self.plan_cid:
            return (
                f"a message of plan {payload.plan.encode()}; this ceremony is plan"
                f" {self.plan_cid.encode()}"
            )
        for by in (payload.sender, *envelope.signers):
            if by > n:
                return f"party {by} is not in this ceremony (parties are 1..{n})"
        msg = payload.msg
        author = _author(msg)
        if author is not None and author != payload.sender:
            return f"a {msg.KIND} by party {author} sent as party {payload.sender}"
        if isinstance(msg, DealtShare | Confirm):
            if peer != payload.sender or envelope.signers != {payload.sender}:
                return (
                    f"a {msg.KIND} comes only from its sender, party {payload.sender}, never"
                    f" relayed (this came from party {peer}, signed by"
                    f" {_list(sorted(envelope.signers))})"
                )
        elif peer not in envelope.signers:
            return f"party {peer} relayed a {msg.KIND} without signing it"
        signed = payload.signing_bytes
        for i, (by, sig) in enumerate(envelope.sigs):
            try:
                verify(self.plan.public_key(by), signed, sig)
            except IdentityError:
                return f"dkg message.sigs[{i}]: party {by}'s signature does not verify"
        return None

    def _on_share(self, payload: Payload, msg: DealtShare, now_ms: int) -> Answer:
        what = f"dkg/share from party {msg.dealer}"
        if msg.recipient != self.index:
            return refused(f"{what} is for party {msg.recipient}, not this party ({self.index})")
        if self.timeline.step_of(Round.DEAL, now_ms) is None:
            return dropped(f"{what} arrived after the deal round closed")
        return self._take(payload, ("share", msg.dealer), what, self.participant.receive_share)

    def _on_broadcast(
        self, envelope: Envelope, msg: Broadcast, now_ms: int
    ) -> tuple[Answer, list[Send]]:
        payload = envelope.payload
        round_ = _ROUND[type(msg)]
        what = f"{msg.KIND} from party {payload.sender}"
        step = self.timeline.step_of(round_, now_ms)
        if step is None:
            return dropped(f"{what} arrived after the {round_.name.lower()} round closed"), []
        if payload.digest in self._held:
            return DUPLICATE, []
        signers = len(envelope.signers)
        if signers < step + 1:
            return dropped(
                f"{what} arrived in step {step + 1} of the {round_.name.lower()} round with"
                f" {signers} signature(s); by then it needs {step + 1}"
            ), []
        answer = self._take(payload, _subject(msg), what, self._feed)
        if answer is not ACCEPTED or step >= self.timeline.steps - 1:
            return answer, []  # in the last step, every honest party has it already
        relay = envelope.with_sig(self.index, payload.sign(self.key))
        data = relay.to_bytes()
        targets = [j for j in self._others() if j not in relay.signers]
        return answer, [Send(j, data, f"relay of {what}") for j in targets]

    def _take(
        self,
        payload: Payload,
        subject: tuple[object, ...],
        what: str,
        feed: Callable[..., None],
    ) -> Answer:
        digest = payload.digest
        versions = self._versions.setdefault(subject, set())
        if digest in versions:
            return DUPLICATE
        if len(versions) >= MAX_VERSIONS:
            return dropped(f"{what}: two different versions are held already (equivocation)")
        try:
            feed(payload.msg)
        except DKGError as exc:
            return dropped(f"{what}: {exc}")
        versions.add(digest)
        if not isinstance(payload.msg, DealtShare):
            self._held[digest] = payload
        return ACCEPTED

    def _hold(self, payload: Payload) -> None:
        self._versions.setdefault(_subject(payload.msg), set()).add(payload.digest)
        self._held[payload.digest] = payload

    def _feed(self, msg: Broadcast) -> None:
        if isinstance(msg, Deal):
            self.participant.receive_deal(msg)
        elif isinstance(msg, Complaint):
            self.participant.receive_complaint(msg)
        else:
            self.participant.receive_justification(msg)

    # -- finishing ---------------------------------------------------------------------------

    @property
    def transcript(self) -> bytes:
        """Digest of the broadcast messages held: equal at every honest party."""
        digest = hashlib.sha256(TRANSCRIPT_DOMAIN)
        for item in sorted(self._held):
            digest.update(item)
        return digest.digest()

    def _finish(self) -> list[Send]:
        try:
            result = self.participant.finish()
        except DKGError as exc:
            confirm = Confirm(None, self.transcript)
            self._fail(f"the DKG failed: {exc}")
            return [self._direct(j, confirm) for j in self._others()]
        self._result = result
        self._policy = self.plan.policy_for(result.keys)
        confirm = Confirm(self._policy.cid, self.transcript)
        self._confirms[self.index] = confirm
        sends = [self._direct(j, confirm) for j in self._others()]
        self._decide_if_all_in()
        return sends

    def _on_confirm(self, sender: int, confirm: Confirm) -> Answer:
        if sender in self._confirms:
            if self._confirms[sender] == confirm:
                return DUPLICATE
            self._confirms[sender] = None  # two different confirmations count for nothing
        else:
            self._confirms[sender] = confirm
        self._decide_if_all_in()
        return ACCEPTED

    def _decide_if_all_in(self) -> None:
        if self.stage is Stage.CONFIRM and len(self._confirms) == self.plan.size:
            self._decide()

    def _decide(self) -> None:
        policy, result = self._policy, self._result
        assert policy is not None and result is not None
        same = tuple(
            sorted(i for i, c in self._confirms.items() if c is not None and c.policy == policy.cid)
        )
        if len(same) >= self.plan.threshold:
            self.outcome = Finished(policy, result, same, self.transcript)
            self.stage = Stage.DONE
            return
        self._fail(
            f"policy {policy.cid.encode()} was confirmed by {len(same)} part(ies)"
            f" ({_list(same)}); t = {self.plan.threshold} are needed. {self._dissent(policy)}"
        )

    def _dissent(self, policy: PolicyDocument) -> str:
        notes = []
        for i in range(1, self.plan.size + 1):
            if i not in self._confirms:
                notes.append(f"party {i} sent no confirmation")
                continue
            confirm = self._confirms[i]
            if confirm is None:
                notes.append(f"party {i} sent two different confirmations")
            elif confirm.policy is None:
                notes.append(f"party {i} could not finish")
            elif confirm.policy != policy.cid:
                notes.append(f"party {i} derived {confirm.policy.encode()}")
        return "; ".join(notes) + "."

    def _fail(self, reason: str) -> None:
        self.outcome = Failed(reason)
        self.stage = Stage.DONE


def _author(msg: Body) -> int | None:
    """The party a message speaks for (None: a confirmation, whose author is `from`)."""
    if isinstance(msg, Complaint):
        return msg.complainer
    if isinstance(msg, Deal | DealtShare | Justification):
        return msg.dealer
    return None


def _subject(msg: Body) -> tuple[object, ...]:
    """What two versions of a message would disagree about."""
    if isinstance(msg, Deal):
        return ("deal", msg.dealer)
    if isinstance(msg, Complaint):
        return ("complaint", msg.complainer, msg.dealer)
    if isinstance(msg, Justification):
        return ("justification", msg.dealer, msg.recipient)
    if isinstance(msg, DealtShare):
        return ("share", msg.dealer)
    return ("confirm",)


def _list(items: list[int] | tuple[int, ...]) -> str:
    return ", ".join(str(i) for i in items) or "none"
