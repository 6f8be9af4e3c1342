"""Dealerless key generation: the Joint-Feldman DKG as a pure, deterministic state machine.

n parties (indices 1..n) make a t-of-n BLS key whose secret nobody ever holds. Every
party is also a dealer. Rounds, as driven by the caller:

1. Deal (`deal`). Party i picks a random polynomial f_i of degree t-1, broadcasts a
   `Deal` (its Feldman commitments C_i0..C_i,t-1) and sends each party j privately a
   `DealtShare` f_i(j).
2. Complain (`complaints`). Party j checks each dealt share against its dealer's
   commitments, f_i(j)·G1 == Σ C_ik·j^k, and broadcasts a `Complaint` about each dealer
   whose share is missing, conflicting or wrong.
3. Justify (`justifications`). A dealer answers each complaint about it by broadcasting
   a `Justification`: that share in the clear. Everyone checks it against the
   commitments; the complainer adopts it.
4. Finish (`finish`). Every party derives the same qualified set QUAL from the broadcast
   transcript. Dealer i is disqualified when
   - it sent no deal, or two different deals (equivocation);
   - its deal is malformed: not exactly t commitments, or a point that does not decode
     (wrong length, non-canonical, outside G1, identity);
   - t or more parties complained about it (answering would publish t of its shares,
     i.e. its whole polynomial);
   - a complaint about it has no justification, two different ones, or one that does
     not verify.
   The group key is Σ_{i∈QUAL} C_i0, party j's share is Σ_{i∈QUAL} f_i(j), and every
   share's public key follows from the summed commitments. Fewer than t qualified
   dealers is an error: with at most t-1 faulty parties, t qualified dealers include an
   honest one, whose random polynomial keeps the key secret.

Messages of a round are accepted until the receiving party closes that round (a fast
peer's complaint may arrive before this party has sent its own); after that they raise
DKGError. Verdicts are taken when a round closes, so arrival order does not matter.

What the transport must provide: authenticated messages (the signed envelope's sender
must be the `dealer` or `complainer` named inside), reliable broadcast (all honest
parties see the same deals, complaints and justifications, or their QUALs differ),
dealt shares on a confidential channel to their recipient only, and agreed round
deadlines. All randomness is the `rng` passed to `deal`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar

from qflow_node.codec import CodecError, decode_dag, encode_dag
from qflow_node.crypto.bls import (
    PUBLIC_KEY_LEN,
    SCALAR_LEN,
    R,
    Rng,
    scalar_to_bytes,
)
from qflow_node.crypto.errors import CryptoError, DecodeError, DKGError
from qflow_node.crypto.feldman import (
    MAX_PARTICIPANTS,
    Commitments,
    Share,
    aggregate,
    check_threshold,
    commit,
    evaluate,
    random_polynomial,
    verify_share,
)
from qflow_node.crypto.threshold import KeySet

# A deal of MAX_PARTICIPANTS commitments, with room for the map around it.
MAX_MESSAGE_SIZE: Final = MAX_PARTICIPANTS * (PUBLIC_KEY_LEN + 3) + 256


@dataclass(frozen=True, slots=True)
class Deal:
    """Round 1, broadcast: dealer's commitments to its polynomial (compressed G1)."""

    KIND: ClassVar[str] = "dkg/deal"
    dealer: int
    commitments: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_party(self.dealer, "dealer")
        if not isinstance(self.commitments, tuple) or not all(
            isinstance(c, bytes) and len(c) == PUBLIC_KEY_LEN for c in self.commitments
        ):
            raise DecodeError(f"deal from {self.dealer}: commitments must be 48-byte strings")
        if not 1 <= len(self.commitments) <= MAX_PARTICIPANTS:
            raise DecodeError(
                f"deal from {self.dealer}: {len(self.commitments)} commitments,"
                f" expected 1..{MAX_PARTICIPANTS}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"dealer": self.dealer, "commitments": list(self.commitments)}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Deal:
        commitments = obj["commitments"]
        if not isinstance(commitments, list):
            raise DecodeError("deal: commitments must be a list")
        return cls(obj["dealer"], tuple(commitments))


@dataclass(frozen=True, slots=True, repr=False)
class DealtShare:
    """Round 1, private to `recipient`: f_dealer(recipient), 32 bytes big-endian."""

    KIND: ClassVar[str] = "dkg/share"
    dealer: int
    recipient: int
    share: bytes

    def __post_init__(self) -> None:
        _check_party(self.dealer, "dealer")
        _check_party(self.recipient, "recipient")
        _check_share_bytes(self.share, f"share from {self.dealer} to {self.recipient}")

    def to_dict(self) -> dict[str, Any]:
        return {"dealer": self.dealer, "recipient": self.recipient, "share": self.share}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> DealtShare:
        return cls(obj["dealer"], obj["recipient"], obj["share"])

    def __repr__(self) -> str:
        return f"DealtShare(dealer={self.dealer}, recipient={self.recipient}, …)"


@dataclass(frozen=True, slots=True)
class Complaint:
    """Round 2, broadcast: `complainer` got no valid share from `dealer`."""

    KIND: ClassVar[str] = "dkg/complaint"
    complainer: int
    dealer: int

    def __post_init__(self) -> None:
        _check_party(self.complainer, "complainer")
        _check_party(self.dealer, "dealer")
        if self.complainer == self.dealer:
            raise DecodeError(f"party {self.dealer} complains about itself")

    def to_dict(self) -> dict[str, Any]:
        return {"complainer": self.complainer, "dealer": self.dealer}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Complaint:
        return cls(obj["complainer"], obj["dealer"])


@dataclass(frozen=True, slots=True)
class Justification:
    """Round 3, broadcast: `dealer` reveals the share it owes `recipient`."""

    KIND: ClassVar[str] = "dkg/justification"
    dealer: int
    recipient: int
    share: bytes

    def __post_init__(self) -> None:
        _check_party(self.dealer, "dealer")
        _check_party(self.recipient, "recipient")
        _check_share_bytes(self.share, f"justification from {self.dealer} for {self.recipient}")

    def to_dict(self) -> dict[str, Any]:
        return {"dealer": self.dealer, "recipient": self.recipient, "share": self.share}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Justification:
        return cls(obj["dealer"], obj["recipient"], obj["share"])


Message = Deal | DealtShare | Complaint | Justification
_M = TypeVar("_M", Deal, DealtShare, Complaint, Justification)
_KINDS: Final[dict[str, type[Message]]] = {
    kind.KIND: kind for kind in (Deal, DealtShare, Complaint, Justification)
}
_FIELDS: Final = {
    Deal: {"dealer", "commitments"},
    DealtShare: {"dealer", "recipient", "share"},
    Complaint: {"complainer", "dealer"},
    Justification: {"dealer", "recipient", "share"},
}


def encode_message(msg: Message) -> bytes:
    """Canonical dag-cbor: {"kind": ..., fields...}."""
    return encode_dag({"kind": msg.KIND, **msg.to_dict()})


def decode_message(data: bytes) -> Message:
    try:
        obj = decode_dag(data, max_size=MAX_MESSAGE_SIZE)
    except CodecError as exc:
        raise DecodeError(f"DKG message: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str):
        raise DecodeError("DKG message: expected a map with a string 'kind'")
    kind = _KINDS.get(obj.pop("kind"))
    if kind is None:
        raise DecodeError("DKG message: unknown kind")
    if set(obj) != _FIELDS[kind]:
        raise DecodeError(f"{kind.KIND}: fields must be {sorted(_FIELDS[kind])}")
    return kind.from_dict(obj)


class Phase(enum.Enum):
    DEAL = 1  # dealing; deals and dealt shares accepted
    COMPLAIN = 2  # deals judged, complaints sent
    JUSTIFY = 3  # complaints closed, justifications sent
    DONE = 4


@dataclass(frozen=True, slots=True)
class DkgResult:
    """One party's outcome: the shared key set, its own share and who qualified."""

    index: int
    keys: KeySet
    share: Share
    qualified: tuple[int, ...]
    disqualified: Mapping[int, str]  # dealer -> why


class Participant:
    """Party `index` of a t-of-n Joint-Feldman DKG. Pure: all input is by argument."""

    def __init__(self, index: int, threshold: int, size: int) -> None:
        check_threshold(threshold, size)
        if type(index) is not int or not 1 <= index <= size:
            raise DKGError(f"party index {index!r} is invalid: indices are 1..{size}")
        self.index = index
        self.threshold = threshold
        self.size = size
        self.phase = Phase.DEAL
        self._polynomial: tuple[int, ...] | None = None
        self._deals: dict[int, Deal] = {}
        self._equivocators: set[int] = set()
        self._received: dict[int, bytes | None] = {}  # dealer -> share; None: two differed
        self._complaints: dict[int, set[int]] = {}  # dealer -> complainers
        self._revealed: dict[tuple[int, int], set[bytes]] = {}  # (dealer, recipient) -> shares
        # Set when the deal round closes:
        self._commitments: dict[int, Commitments] = {}  # well-formed deals
        self._rejected: dict[int, str] = {}  # dealer -> why its deal is out
        self._values: dict[int, int] = {}  # dealer -> verified f_dealer(index)

    # Round 1

    def deal(self, rng: Rng) -> tuple[Deal, tuple[DealtShare, ...]]:
        """This party's deal (broadcast it) and the shares for the others (send privately)."""
        self._expect(Phase.DEAL, "deal")
        if self._polynomial is not None:
            raise DKGError(f"party {self.index} has already dealt")
        self._polynomial = random_polynomial(self.threshold, rng)
        deal = Deal(self.index, tuple(commit(self._polynomial).to_list()))
        self._deals[self.index] = deal
        self._received[self.index] = self._share_for(self.index)
        shares = tuple(
            DealtShare(self.index, j, self._share_for(j))
            for j in range(1, self.size + 1)
            if j != self.index
        )
        return deal, shares

    def receive_deal(self, deal: Deal) -> None:
        self._accept(Phase.DEAL, f"deal from {deal.dealer}")
        self._check_party_index(deal.dealer)
        known = self._deals.setdefault(deal.dealer, deal)
        if known != deal:
            self._equivocators.add(deal.dealer)

    def receive_share(self, msg: DealtShare) -> None:
        self._accept(Phase.DEAL, f"share from {msg.dealer}")
        self._check_party_index(msg.dealer)
        if msg.recipient != self.index:
            raise DKGError(f"party {self.index} got the share meant for {msg.recipient}")
        if msg.dealer == self.index:
            raise DKGError(f"party {self.index} got a dealt share from itself")
        known = self._received.setdefault(msg.dealer, msg.share)
        if known != msg.share:
            self._received[msg.dealer] = None

    # Round 2

    def complaints(self) -> tuple[Complaint, ...]:
        """Close the deal round: judge deals and shares; broadcast what this returns."""
        self._expect(Phase.DEAL, "complain")
        if self._polynomial is None:
            raise DKGError(f"party {self.index} must deal before it complains")
        self.phase = Phase.COMPLAIN
        for dealer in range(1, self.size + 1):
            self._judge_deal(dealer)
        mine = []
        for dealer, commitments in self._commitments.items():
            value = self._check_share(self._received.get(dealer), self.index, commitments)
            if value is None:
                mine.append(Complaint(self.index, dealer))
                self._complaints.setdefault(dealer, set()).add(self.index)
            else:
                self._values[dealer] = value
        return tuple(mine)

    def receive_complaint(self, complaint: Complaint) -> None:
        self._accept(Phase.COMPLAIN, f"complaint from {complaint.complainer}")
        self._check_party_index(complaint.complainer)
        self._check_party_index(complaint.dealer)
        self._complaints.setdefault(complaint.dealer, set()).add(complaint.complainer)

    # Round 3

    def justifications(self) -> tuple[Justification, ...]:
        """Close the complaint round: answer complaints about this party; broadcast them."""
        self._expect(Phase.COMPLAIN, "justify")
        self.phase = Phase.JUSTIFY
        mine = tuple(
            Justification(self.index, j, self._share_for(j))
            for j in sorted(self._complaints.get(self.index, ()))
        )
        for justification in mine:
            self._revealed.setdefault((self.index, justification.recipient), set()).add(
                justification.share
            )
        return mine

    def receive_justification(self, justification: Justification) -> None:
        self._accept(Phase.JUSTIFY, f"justification from {justification.dealer}")
        self._check_party_index(justification.dealer)
        self._check_party_index(justification.recipient)
        key = (justification.dealer, justification.recipient)
        self._revealed.setdefault(key, set()).add(justification.share)

    # Finish

    def finish(self) -> DkgResult:
        """Close the justification round: QUAL, the key set and this party's share."""
        self._expect(Phase.JUSTIFY, "finish")
        self.phase = Phase.DONE
        disqualified = dict(self._rejected)
        for dealer, commitments in self._commitments.items():
            reason = self._judge_complaints(dealer, commitments)
            if reason is not None:
                disqualified[dealer] = reason
        qualified = tuple(d for d in sorted(self._commitments) if d not in disqualified)
        if len(qualified) < self.threshold:
            raise DKGError(
                f"only {len(qualified)} dealers qualified ({_list(qualified)}); at least"
                f" t = {self.threshold} are needed so that one of them is honest"
            )
        keys = KeySet(self.size, aggregate(self._commitments[d] for d in qualified))
        share = Share(self.index, sum(self._values[d] for d in qualified) % R)
        if not verify_share(share, keys.commitments):
            raise DKGError(f"party {self.index}: final share does not match the key set")
        return DkgResult(self.index, keys, share, qualified, dict(sorted(disqualified.items())))

    # Judging

    def _judge_deal(self, dealer: int) -> None:
        deal = self._deals.get(dealer)
        if deal is None:
            self._rejected[dealer] = "sent no deal"
        elif dealer in self._equivocators:
            self._rejected[dealer] = "equivocated: sent two different deals"
        elif len(deal.commitments) != self.threshold:
            self._rejected[dealer] = (
                f"deal has {len(deal.commitments)} commitments, expected t = {self.threshold}"
            )
        else:
            try:
                self._commitments[dealer] = Commitments.from_list(
                    deal.commitments, f"deal from {dealer}"
                )
            except DecodeError as exc:
                self._rejected[dealer] = f"malformed deal: {exc}"

    def _judge_complaints(self, dealer: int, commitments: Commitments) -> str | None:
        complainers = sorted(self._complaints.get(dealer, ()))
        if len(complainers) >= self.threshold:
            return f"{len(complainers)} complaints (t = {self.threshold}): {_list(complainers)}"
        for complainer in complainers:
            revealed = self._revealed.get((dealer, complainer), set())
            if not revealed:
                return f"did not answer the complaint from {complainer}"
            if len(revealed) > 1:
                return f"revealed two different shares for {complainer}"
            value = self._check_share(next(iter(revealed)), complainer, commitments)
            if value is None:
                return f"revealed a share for {complainer} that does not verify"
            if complainer == self.index:
                self._values[dealer] = value
        return None

    @staticmethod
    def _check_share(data: bytes | None, index: int, commitments: Commitments) -> int | None:
        """The share's value if it verifies against the commitments, else None."""
        if data is None:
            return None
        try:
            share = Share.from_bytes(index, data)
        except CryptoError:
            return None
        return share.value if verify_share(share, commitments) else None

    # Plumbing

    def _share_for(self, recipient: int) -> bytes:
        assert self._polynomial is not None
        return scalar_to_bytes(evaluate(self._polynomial, recipient))

    def _expect(self, phase: Phase, action: str) -> None:
        if self.phase is not phase:
            raise DKGError(
                f"party {self.index} cannot {action} in phase {self.phase.name}"
                f" (expected {phase.name})"
            )

    def _accept(self, last: Phase, what: str) -> None:
        if self.phase.value > last.value:
            raise DKGError(f"party {self.index}: {what} arrived after its round closed")

    def _check_party_index(self, index: int) -> None:
        if not 1 <= index <= self.size:
            raise DKGError(f"party {index} is not in this DKG (parties are 1..{self.size})")


def run_locally(threshold: int, size: int, rng: Rng) -> tuple[DkgResult, ...]:
    """An honest DKG with every party in this process, messages through their wire form.

    For tests, benchmarks and the simulator; a node drives one `Participant` over the
    network instead.
    """
    parties = [Participant(i, threshold, size) for i in range(1, size + 1)]
    broadcasts: list[bytes] = []
    private: list[bytes] = []
    for party in parties:
        deal, shares = party.deal(rng)
        broadcasts.append(encode_message(deal))
        private += [encode_message(share) for share in shares]
    for party in parties:
        for data in broadcasts:
            party.receive_deal(_as(Deal, decode_message(data)))
    for data in private:
        share = _as(DealtShare, decode_message(data))
        parties[share.recipient - 1].receive_share(share)
    complaints = [encode_message(c) for party in parties for c in party.complaints()]
    for party in parties:
        for data in complaints:
            party.receive_complaint(_as(Complaint, decode_message(data)))
    answers = [encode_message(j) for party in parties for j in party.justifications()]
    for party in parties:
        for data in answers:
            party.receive_justification(_as(Justification, decode_message(data)))
    return tuple(party.finish() for party in parties)


def _as(kind: type[_M], msg: Message) -> _M:
    if not isinstance(msg, kind):
        raise DKGError(f"expected {kind.KIND}, got {msg.KIND}")
    return msg


def _check_party(index: int, role: str) -> None:
    if type(index) is not int or not 1 <= index <= MAX_PARTICIPANTS:
        raise DecodeError(f"{role} {index!r} is invalid: parties are 1..{MAX_PARTICIPANTS}")


def _check_share_bytes(data: bytes, what: str) -> None:
    if not isinstance(data, bytes) or len(data) != SCALAR_LEN:
        raise DecodeError(f"{what}: expected {SCALAR_LEN} bytes")


def _list(indices: tuple[int, ...] | list[int]) -> str:
    return ", ".join(str(i) for i in indices) or "none"
