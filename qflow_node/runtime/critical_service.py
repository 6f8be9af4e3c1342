"""The two-phase commit of critical steps over libp2p (docs/consensus.md).

The protocol is `qflow_node.core.critical` (pure); this drives it. A validator answers
`/qflow/critical/1.0.0`: one request (prepare, abort or query) and one vote or answer
per stream, a lock made durable in its journal before the vote that follows it leaves.
A coordinator runs one round for a slot: sends what the round asks, re-sends on its
timer, feeds the votes back, and returns the certificate or why the round failed.

Who sent what is the transport's word: a libp2p stream is authenticated (Noise) by the
peer id, which the policy maps to a share index. Votes are not re-signed with Ed25519:
a partial is attributable on its own (it verifies under one share key), and a refusal
convinces only the coordinator it was sent to (docs/consensus.md, "Abort only on proof").

A coordinator hears each validator once per round, so a validator that signs two
decisions for a slot shows it across rounds. `VoteMemory` keeps, per slot, the signed
votes heard in every round until the slot is decided; a vote that conflicts with an
earlier one from the same validator, both partials verifying, is an equivocation: it is
logged, its proof (`EquivocationProof`, both votes) written crash-safely under
`ledger/equivocations/`, and none of that validator's votes count for the slot again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import quote

import trio

from qflow_node import clock, fsio, offload
from qflow_node.appendlog import AppendLog, scan
from qflow_node.codec import CID, Block, CodecError, decode_dag, encode_dag
from qflow_node.core.critical import (
    MAX_MESSAGE_SIZE,
    AbortRequest,
    Answer,
    Coordinator,
    CoordinatorAction,
    Decided,
    Equivocation,
    FormatError,
    InvalidPartial,
    Lock,
    Outcome,
    PersistLock,
    Prepare,
    Query,
    Rejected,
    Reply,
    RoundFailed,
    Send,
    Settings,
    SignedDecision,
    Validator,
    Vote,
    decode_message,
    encode_message,
    statement_bytes,
)
from qflow_node.core.critical.fields import fields, integer, link
from qflow_node.core.critical.statement import check_subnet, slot_from_obj, slot_to_obj
from qflow_node.core.policy import PolicyDocument, PolicyError, load_policy
from qflow_node.core.scheduling import Slot
from qflow_node.crypto import (
    MAX_PARTICIPANTS,
    CryptoError,
    DecodeError,
    KeySet,
    Share,
    Signature,
    verify_partial,
    verify_share,
)
from qflow_node.identity import SigningKey
from qflow_node.identity.keys import IdentityError
from qflow_node.identity.sealed import SealedShare, open_share
from qflow_node.log import get_logger
from qflow_node.net.reqresp import Direct, Limits, RequestError

if TYPE_CHECKING:  # config imports the services' settings, this among them
    from qflow_node.runtime.config import CriticalFiles

CRITICAL_PROTOCOL: Final = "/qflow/critical/1.0.0"
# Preferred: one long-lived stream per peer (`net/channel.py`), as for slot questions; a
# stream per request is the fallback for a peer that does not speak it.
CRITICAL_CHANNEL: Final = "/qflow/critical-channel/1.0.0"
CRITICAL_LOCKS: Final = "critical-locks.log"  # in the repo's ledger/: a validator's locks
EQUIVOCATIONS: Final = "equivocations"  # in the repo's ledger/: proofs a coordinator found
# Slots whose votes a coordinator remembers across rounds (oldest dropped first): a
# decided slot's are dropped at once, so this bounds only the undecided ones.
REMEMBERED_SLOTS: Final = 1024
MAX_STEP_IN_NAME: Final = 96  # characters of a step name in a proof's file name
# A vote is small (a partial, a reason); a prepare carries the blocks to re-execute.
CRITICAL_LIMITS: Final = Limits(
    timeout=5.0, max_request_size=MAX_MESSAGE_SIZE, max_response_size=64 << 10
)

Reexecute = Callable[[str, Prepare], Awaitable[Outcome | None]]
"""The validator's own outcome of a prepared slot: (coordinator peer, prepare) -> the
outcome this node computes re-executing the step, None if it cannot; raises NotReady
(no vote yet) or Refused (a policy refusal)."""

Allow = Callable[[str, Prepare | AbortRequest], str | None]
"""Why the policy forbids the request from this peer (not a member, not the slot's lease
holder, the step is not critical, the module is not whitelisted), None if allowed."""


class CriticalError(Exception):
    """A round that ended without a decision (`RoundFailed`): no certificate this time."""


class NotReady(Exception):
    """The validator cannot judge the prepare yet (it has not merged the records before
    the slot): no vote now; the coordinator's re-send asks again."""


class Refused(Exception):
    """The policy forbids what the prepare asks (the step is not critical, its module is
    not whitelisted): a `policy` refusal."""


def _log() -> Any:
    return get_logger("qflow.critical")


class LockJournal:
    """A validator's locks, durable: one append-only log of dag-cbor entries, each made
    durable (fdatasync) before the vote it backs is sent. A lock forgotten by a crash
    would let the validator sign a second decision for its slot."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._log: AppendLog | None = None

    def load(self) -> list[Lock]:
        entries, _ = scan(self.path)
        locks = []
        for offset, payload in entries:
            try:
                locks.append(Lock.from_obj(decode_dag(payload)))
            except (CodecError, FormatError) as exc:
                raise ValueError(f"{self.path} at byte {offset}: not a lock: {exc}") from None
        return locks

    def append(self, lock: Lock) -> None:
        if self._log is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._log = AppendLog.open(self.path)
        self._log.append([encode_dag(lock.to_obj())])

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass(frozen=True, slots=True)
class CriticalConfig:
    """The policy in force for a subnet, and this node's share of its key if it is one
    of the validators."""

    policy: PolicyDocument
    share: Share | None = None

    @property
    def cid(self) -> CID:
        return self.policy.cid


class CriticalSetupError(Exception):
    """The `[critical]` files cannot be used: which file, and why."""


def load_policy_file(repo: Path, files: CriticalFiles) -> PolicyDocument:
    """The `[critical] policy` block (its path relative to the repo); CriticalSetupError
    naming the file and what is wrong with it."""
    try:
        return load_policy((repo / files.policy).read_bytes(), path=str(files.policy))
    except OSError as exc:
        raise CriticalSetupError(f"[critical] policy {files.policy}: {exc.strerror}") from None
    except PolicyError as exc:
        raise CriticalSetupError(f"[critical] policy: {exc}") from None


def load_critical(repo: Path, files: CriticalFiles, key: SigningKey) -> CriticalConfig:
    """The policy in force and, on a validator, its share opened with the node key and
    checked against the policy's commitments (a sealed share proves nothing of who made
    it). Paths are relative to the repo."""
    policy = load_policy_file(repo, files)
    if files.share is None:
        return CriticalConfig(policy)
    index = policy.index_of(key.peer_id)
    if index is None:
        raise CriticalSetupError(
            f"[critical] share {files.share}: this node ({key.peer_id}) is not a validator "
            f"of policy {policy.cid.encode()}"
        )
    try:
        sealed = SealedShare.from_bytes((repo / files.share).read_bytes(), str(files.share))
        raw = open_share(sealed, key, subnet=policy.subnet, policy=policy.cid, index=index)
        share = Share.from_bytes(index, raw)
    except OSError as exc:
        raise CriticalSetupError(f"[critical] share {files.share}: {exc.strerror}") from None
    except (IdentityError, CryptoError) as exc:
        raise CriticalSetupError(f"[critical] share {files.share}: {exc}") from None
    if not verify_share(share, policy.keys.commitments):
        raise CriticalSetupError(
            f"[critical] share {files.share}: share {index} does not match the policy's "
            "commitments (dealt for another key)"
        )
    return CriticalConfig(policy, share)


@dataclass(frozen=True, slots=True)
class EquivocationProof:
    """Validator `index` signed two decisions for `slot`: both of its signed votes.

    Self-contained: with the policy (its share keys) anyone checks it (`holds`). Its
    file is the dag-cbor of `to_obj`."""

    subnet: str
    policy: CID
    slot: Slot
    index: int
    first: SignedDecision
    second: SignedDecision

    TYPE: ClassVar[str] = "qflow/critical-equivocation"
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"v", "type", "subnet", "policy", "slot", "index", "first", "second"}
    )

    def holds(self, keys: KeySet) -> bool:
        """Whether this proves an equivocation under `keys`: two different decisions of
        the slot, each partial verifying under validator `index`'s share key."""
        return self.first.decision != self.second.decision and all(
            _genuine(
                signed,
                subnet=self.subnet,
                policy=self.policy,
                keys=keys,
                slot=self.slot,
                index=self.index,
            )
            for signed in (self.first, self.second)
        )

    def file_name(self) -> str:
        """`<exec>-<step>-<attempt>-<index>.cbor`: the step name %-quoted, or its digest
        if that is long (a file name has at most 255 bytes; the file names the slot)."""
        step = quote(self.slot.name, safe="")
        if len(step) > MAX_STEP_IN_NAME:
            step = "sha256-" + hashlib.sha256(self.slot.name.encode()).hexdigest()
        return f"{self.slot.exec.encode()}-{step}-{self.slot.attempt}-{self.index}.cbor"

    def to_obj(self) -> dict[str, Any]:
        return {
            "v": 1,
            "type": self.TYPE,
            "subnet": self.subnet,
            "policy": self.policy,
            "slot": slot_to_obj(self.slot),
            "index": self.index,
            "first": self.first.to_obj(),
            "second": self.second.to_obj(),
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> EquivocationProof:
        """Strict: FormatError (or CodecError) naming what is wrong."""
        f = fields(decode_dag(data), "proof", cls.FIELDS)
        if f["v"] != 1 or f["type"] != cls.TYPE:
            raise FormatError(f"proof: not a {cls.TYPE} v1")
        return cls(
            check_subnet(f["subnet"], "proof.subnet"),
            link(f["policy"], "proof.policy", dag_cbor_only=True),
            slot_from_obj(f["slot"], "proof.slot"),
            integer(f["index"], "proof.index", 1, MAX_PARTICIPANTS),
            SignedDecision.from_obj(f["first"], "proof.first"),
            SignedDecision.from_obj(f["second"], "proof.second"),
        )


def _genuine(
    signed: SignedDecision, *, subnet: str, policy: CID, keys: KeySet, slot: Slot, index: int
) -> bool:
    """Whether `signed` is validator `index`'s signature of its decision on `slot`."""
    if not 1 <= index <= keys.size or not signed.decision.applies_to(slot):
        return False
    try:
        partial = Signature.from_bytes(signed.partial)
    except DecodeError:
        return False
    statement = statement_bytes(subnet, policy, slot, signed.decision)
    return verify_partial(keys.share_key(index), statement, partial)


class VoteMemory:
    """A coordinator's memory of the signed votes it heard, per slot and validator,
    across its rounds (pure: no I/O).

    A round sees each validator's vote once, so an equivocation across rounds (a commit
    in one, an abort in the next) is found only here. Partials are verified only when
    two votes of one validator differ (the common case costs no pairing check), and a
    vote that does not verify is never kept as the one to compare with. Bounded: at
    most `capacity` slots, the oldest dropped; `forget` a slot once it is decided."""

    def __init__(
        self, subnet: str, policy: CID, keys: KeySet, capacity: int = REMEMBERED_SLOTS
    ) -> None:
        self.subnet = subnet
        self.policy = policy
        self.keys = keys
        self.capacity = capacity
        self._votes: OrderedDict[Slot, dict[int, SignedDecision]] = OrderedDict()
        self._proven: dict[Slot, set[int]] = {}

    def heard(self, slot: Slot, index: int, signed: SignedDecision) -> EquivocationProof | None:
        """Note validator `index`'s signed vote; the proof if it contradicts an earlier one
        (then the validator is `proven` for this slot)."""
        votes = self._slot(slot)
        prior = votes.get(index)
        if prior is None:
            votes[index] = signed
            return None
        if prior == signed or self.proven(slot, index):
            return None  # a repeat (BLS partials are deterministic)
        new_ok = self._genuine(slot, index, signed)
        if not self._genuine(slot, index, prior):
            if new_ok:
                votes[index] = signed  # the first one was no signature at all
            return None
        if not new_ok or prior.decision == signed.decision:
            return None  # the coordinator reports a partial that does not verify
        return self.prove(slot, index, prior, signed)

    def prove(
        self, slot: Slot, index: int, first: SignedDecision, second: SignedDecision
    ) -> EquivocationProof | None:
        """Record that `index` equivocated on `slot` (found here or by a round); the
        proof the first time, None if it was already known."""
        proven = self._proven.setdefault(slot, set())
        if index in proven:
            return None
        self._slot(slot)  # counted against the cap with the votes
        proven.add(index)
        return EquivocationProof(self.subnet, self.policy, slot, index, first, second)

    def proven(self, slot: Slot, index: int) -> bool:
        return index in self._proven.get(slot, ())

    def forget(self, slot: Slot) -> None:
        self._votes.pop(slot, None)
        self._proven.pop(slot, None)

    def __len__(self) -> int:
        return len(self._votes)

    def _slot(self, slot: Slot) -> dict[int, SignedDecision]:
        votes = self._votes.get(slot)
        if votes is None:
            votes = self._votes[slot] = {}
            while len(self._votes) > self.capacity:
                dropped, _ = self._votes.popitem(last=False)
                self._proven.pop(dropped, None)
        else:
            self._votes.move_to_end(slot)
        return votes

    def _genuine(self, slot: Slot, index: int, signed: SignedDecision) -> bool:
        return _genuine(
            signed, subnet=self.subnet, policy=self.policy, keys=self.keys, slot=slot, index=index
        )


class CriticalService:
    """Both sides of the two-phase commit for one subnet's policy."""

    def __init__(
        self,
        me: str,
        direct: Direct,
        config: CriticalConfig,
        *,
        journal: LockJournal | None = None,
        reexecute: Reexecute | None = None,
        allow: Allow | None = None,
        settings: Settings | None = None,
        evidence: Path | None = None,
    ) -> None:
        """`evidence`: the directory equivocation proofs are written to (None: logged
        only)."""
        self.me = me
        self.direct = direct
        self.config = config
        self.settings = settings or Settings()
        self.evidence = evidence
        self.votes = VoteMemory(config.policy.subnet, config.cid, config.policy.keys)
        self._reexecute = reexecute
        self._allow = allow or (lambda _peer, _request: None)
        self._journal = journal
        self.validator: Validator | None = None
        self._serving = trio.Lock()  # one request through the validator at a time
        policy = config.policy
        if config.share is not None:
            if journal is None:
                raise ValueError("a validator needs a lock journal")
            if policy.index_of(me) != config.share.index:
                raise ValueError(f"{me} does not hold share {config.share.index} of the policy")
            self.validator = Validator(policy.subnet, config.cid, config.share)
            self.validator.restore(journal.load())
            direct.serve(CRITICAL_PROTOCOL, self.answer, CRITICAL_LIMITS)
        self.channel = direct.open_channel(CRITICAL_CHANNEL, self.answer, CRITICAL_LIMITS)
        self._no_channel: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._running = trio.Event()

    async def run(self) -> None:
        """Serve the channel and read its answers, and carry the rounds' requests, until
        cancelled. `decide` needs it running."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.channel.run)
            self._running.set()
            await trio.sleep_forever()

    # -- validator side ---------------------------------------------------------------------

    async def answer(self, peer: str, request: bytes) -> bytes:
        """One request from `peer`: its vote or answer (a malformed request gets an
        `error` map naming what is wrong)."""
        validator = self.validator
        if validator is None:
            return encode_dag({"error": "not a validator"})
        try:
            message = decode_message(request)
        except (CodecError, FormatError) as exc:
            return encode_dag({"error": f"bad request: {exc}"})
        async with self._serving:
            if isinstance(message, Prepare):
                refused = self._allow(peer, message)
                own = None
                if refused is None and validator.needs_outcome(message):
                    try:
                        own = await self._own_outcome(peer, message)
                    except NotReady as exc:
                        return encode_dag({"error": f"not ready: {exc}"})
                    except Refused as exc:
                        refused = str(exc)
                actions = validator.on_prepare(message, own, refused)
            elif isinstance(message, AbortRequest):
                actions = validator.on_abort(message, self._allow(peer, message))
            elif isinstance(message, Query):
                actions = validator.on_query(message)
            else:
                return encode_dag({"error": f"bad request: a {type(message).__name__}"})
            return await self._perform(actions)

    async def _own_outcome(self, peer: str, prepare: Prepare) -> Outcome | None:
        if self._reexecute is None:
            return None
        try:
            return await self._reexecute(peer, prepare)
        except (NotReady, Refused):
            raise
        except Exception as exc:  # the step could not be re-run here: a mismatch vote
            _log().warning("critical.reexecute_failed", slot=_slot(prepare.slot), error=repr(exc))
            return None

    async def _perform(self, actions: Sequence[PersistLock | Reply]) -> bytes:
        answer = b""
        for action in actions:
            if isinstance(action, PersistLock):
                assert self._journal is not None
                await offload.run_sync(self._journal.append, action.lock)
            else:
                answer = encode_message(action.message)
        return answer

    # -- coordinator side -------------------------------------------------------------------

    async def decide(
        self,
        slot: Slot,
        proposal: Outcome | None,
        blocks: Iterable[Block] = (),
        *,
        query_first: bool = False,
    ) -> Decided:
        """Run one round for `slot`: the certified decision, or CriticalError."""
        policy = self.config.policy
        round_ = Coordinator(
            subnet=policy.subnet,
            policy=self.config.cid,
            keys=policy.keys,
            slot=slot,
            proposal=proposal,
            blocks=tuple(blocks),
            query_first=query_first,
            settings=self.settings,
        )
        ended: list[Decided | RoundFailed] = []
        changed = trio.Event()
        counted: set[int] = set()  # validators whose signed votes this round was given
        # Requests run in the service's nursery, not the round's: one still on its way
        # when the round is decided finishes there (its late vote is ignored) instead of
        # being cut off mid-write, which would break the stream to that validator.
        await self._running.wait()
        tasks = self._nursery
        assert tasks is not None

        def handle(actions: Iterable[CoordinatorAction]) -> None:
            nonlocal changed
            for action in actions:
                if isinstance(action, Send):
                    tasks.start_soon(ask, action)
                elif isinstance(action, Decided | RoundFailed):
                    ended.append(action)
                elif isinstance(action, Equivocation):
                    # Found within the round (the memory normally finds it first).
                    proof = self.votes.prove(slot, action.index, action.first, action.second)
                    if proof is not None:
                        tasks.start_soon(self._prove, proof)
                else:
                    _report(slot, action)
            changed.set()
            changed = trio.Event()

        async def ask(send: Send) -> None:
            reply = await self._ask(send)
            if reply is None or ended or not await self._screen(slot, send.to, reply, counted):
                return
            if isinstance(reply, Vote):
                handle(round_.on_vote(send.to, reply, clock.mono_ms()))
            elif isinstance(reply, Answer):
                handle(round_.on_answer(send.to, reply, clock.mono_ms()))

        handle(round_.start(clock.mono_ms()))
        while not ended:
            at = round_.next_timer_ms
            if at is None:
                break
            waiting = changed
            with trio.move_on_at(at / 1000):
                await waiting.wait()
            if round_.next_timer_ms is not None and clock.mono_ms() >= round_.next_timer_ms:
                handle(round_.on_timer(clock.mono_ms()))
        result = ended[0] if ended else None
        if isinstance(result, Decided):
            self.votes.forget(slot)  # no round will ask about it again
            return result
        why = result.reason if result is not None else "the round ended without a decision"
        raise CriticalError(f"{_slot(slot)}: {why}")

    async def _screen(
        self, slot: Slot, index: int, reply: Vote | Answer, counted: set[int]
    ) -> bool:
        """Whether the round gets `reply` from validator `index`, after the memory of
        earlier rounds has seen it. A proven equivocator counts for nothing again. The
        vote that proves it goes to the round only if the round holds the other one
        (it then drops both); one from an earlier round is never counted in this one."""
        if self.votes.proven(slot, index):
            return False
        policy = self.config.policy
        if reply.signed is None or (reply.subnet, reply.policy, reply.slot, reply.index) != (
            policy.subnet,
            self.config.cid,
            slot,
            index,
        ):
            return True  # nothing signed, or misaddressed: the round judges it
        proof = self.votes.heard(slot, index, reply.signed)
        if proof is None:
            counted.add(index)
            return True
        await self._prove(proof)
        return index in counted

    async def _prove(self, proof: EquivocationProof) -> None:
        """Report an equivocation: its proof made durable first, then the log line
        naming the validator and the file."""
        path = None
        if self.evidence is not None:
            path = self.evidence / proof.file_name()
            try:
                await offload.run_sync(_write_proof, path, encode_dag(proof.to_obj()))
            except OSError as exc:
                _log().error("critical.proof_not_written", path=str(path), error=str(exc))
                path = None
        _log().warning(
            "critical.equivocation",
            slot=_slot(proof.slot),
            validator=proof.index,
            peer=self.config.policy.validator(proof.index).peer,
            first=proof.first.decision.kind,
            second=proof.second.decision.kind,
            proof=None if path is None else str(path),
        )

    async def _ask(self, send: Send) -> Vote | Answer | None:
        """The validator's reply to one message; None if it gave none that decodes (the
        round's timer re-sends)."""
        peer = self.config.policy.validator(send.to).peer
        payload = encode_message(send.message)
        try:
            reply = decode_message(await self._request(peer, payload))
        except (RequestError, CodecError, FormatError) as exc:
            cause = exc.__cause__
            detail = f"{exc}" + (f" ({cause!r})" if cause is not None else "")
            _log().info("critical.no_reply", validator=send.to, peer=peer, error=detail)
            return None
        if not isinstance(reply, Vote | Answer):
            _log().warning("critical.bad_reply", validator=send.to, kind=type(reply).__name__)
            return None
        return reply

    async def _request(self, peer: str, payload: bytes) -> bytes:
        if peer == self.me:
            return await self.answer(self.me, payload)
        if peer not in self._no_channel:
            try:
                return await self.channel.request(peer, payload)
            except RequestError as exc:
                if exc.reason != "unsupported":
                    raise
                self._no_channel.add(peer)
        return await self.direct.request(peer, CRITICAL_PROTOCOL, payload, CRITICAL_LIMITS)


def _write_proof(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fsio.atomic_write(path, data)


def _report(slot: Slot, action: CoordinatorAction) -> None:
    if isinstance(action, InvalidPartial):
        _log().warning(
            "critical.invalid_partial",
            slot=_slot(slot),
            validator=action.index,
            reason=action.reason,
        )
    elif isinstance(action, Rejected):
        _log().info(
            "critical.rejected", slot=_slot(slot), validator=action.index, reason=action.reason
        )


def _slot(slot: Slot) -> str:
    return f"{slot.exec.encode()}/{slot.name}/{slot.attempt}"
