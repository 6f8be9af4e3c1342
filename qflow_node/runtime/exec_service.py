"""Distributed execution: replicas, claims, leases, records - no coordinator.

Every node of a subnet runs this service (docs/protocol.md, "Distributed execution"):

* **Submissions** arrive on the `flows` topic (or from `qflow submit` through the
  control API, which also publishes them). A node verifies the signed submission,
  fetches what the inline blocks do not carry over bitswap, checks the flow compiles
  and the inputs match its schema, and opens a replica. Duplicates are no-ops: the
  execution id is the submission's CID.
* **Claims**: for each slot due in a replica, every node decides with the pure
  `core.scheduling.decide` - rank 0 (rendezvous over the subnet's live nodes) claims at
  once, rank k after k·Δ if nobody holds the slot, and the next rank takes over when a
  holder's lease lapses. The claimer publishes a signed `claim` with a lease, renews it
  every third of the lease while it works, performs the slot's actions (runs the step
  in the sandbox, or writes `exec.started` / the end of the execution), commits the
  record with a compare-and-set on the heads (never appending after a record it has not
  seen) and publishes it (`record` envelope with the blocks inline when small).
* **Records** from others are stored, completed over bitswap (`fetch_dag`), merged
  (verified) and folded into the replica, which ends the slot everywhere.

A node that restarts resumes every unfinished execution it has a ledger of; heads
announcements (`heads_service`) fill whatever gossip lost. The launcher - the node that
wrote `exec.started` - has no other role: killing it only lapses the leases it held.
"""

from __future__ import annotations

import contextlib
import heapq
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeVar

import trio

from qflow_node import clock, offload
from qflow_node.codec import CID, Block, CodecError, dag_block, decode_dag, encode_dag, raw_block
from qflow_node.codec.envelope_bodies import (
    MAX_BATCH,
    Claims,
    InlineBlock,
    RecordAnnouncement,
    Records,
)
from qflow_node.codec.envelope_bodies import Claim as ClaimBody
from qflow_node.codec.envelope_bodies import Control as ControlBody
from qflow_node.codec.envelope_bodies import Rejection as RejectionBody
from qflow_node.codec.envelope_bodies import Submission as SubmissionBody
from qflow_node.core import engine as eng
from qflow_node.core import rejection as rej
from qflow_node.core.control import control_event, refusal
from qflow_node.core.critical import (
    ABORTED,
    AbortRequest,
    CriticalKeys,
    FormatError,
    Outcome,
    Prepare,
    decision_block,
    decision_event_fields,
    decision_outcome,
    outcome_of,
)
from qflow_node.core.engine import events as ev
from qflow_node.core.engine.writing import action_event, event_blocks
from qflow_node.core.envelopes import Verified, seal_envelope
from qflow_node.core.ledger import Record, VerifyReport
from qflow_node.core.membership import PeerState, Requirement, eligible, states
from qflow_node.core.scheduling import (
    FINISH,
    START,
    Claim,
    ClaimBook,
    ClaimNow,
    Hold,
    Leave,
    Slot,
    TokenBucket,
    WaitUntil,
    decide,
    delta_for,
    precedence,
    ranking,
    reannounce_delay_ms,
)
from qflow_node.core.submission import Submission, SubmissionError, verify_submission
from qflow_node.identity import SigningKey
from qflow_node.ledger_store import LedgerStore
from qflow_node.log import get_logger
from qflow_node.net.channel import Channel
from qflow_node.net.gossip import Gossip
from qflow_node.net.reqresp import Direct, Limits, RequestError
from qflow_node.net.topics import TopicKind, topic
from qflow_node.runtime.batcher import Batcher
from qflow_node.runtime.critical_service import (
    CriticalError,
    CriticalService,
    NotReady,
    Refused,
)
from qflow_node.runtime.executors import StepOutcome
from qflow_node.runtime.local import LocalRunner
from qflow_node.runtime.membership_service import MembershipService
from qflow_node.runtime.merging import fetch_and_merge, missing_block
from qflow_node.runtime.replica import (
    Replica,
    ReplicaError,
    control_slot,
    due,
    open_replica,
    refresh,
    started_event,
    waiting_approvals,
)
from qflow_node.store import StoreError
from qflow_node.store.service import BlockService

T = TypeVar("T")
R = TypeVar("R")

MAX_INLINE: Final = 8  # blocks per envelope (the wire's limit)
MAX_INLINE_BYTES: Final = 512 << 10  # inline only what keeps envelopes well under 1 MiB
# Record announcements packed into one `records` envelope carry at most this many inline
# bytes together (one announcement alone may carry MAX_INLINE_BYTES).
RECORDS_INLINE_BYTES: Final = 640 << 10
_IDLE_LOOK_MS: Final = 1_000  # re-decide at least this often, whatever happens
_DONE_KEPT: Final = 10_000  # finished executions remembered
CONTROL_TTL_MS: Final = 60_000  # a control that does not apply by then is dropped
SLOT_PROTOCOL: Final = "/qflow/slot/1.0.0"  # "what do you know of this slot?", before a commit
SLOT_CHANNEL: Final = "/qflow/slot-channel/1.0.0"  # the same, many per long-lived stream
# A question names up to MAX_BATCH slots (`{"slots": [...]}`), each answered in turn.
SLOT_LIMITS: Final = Limits(timeout=1.0, max_request_size=64 << 10, max_response_size=64 << 10)
_MEMBERSHIP_REUSE_MS: Final = 100  # `_membership` is reused this long for one view
_ASK_GRACE_S: Final = 0.5  # past SLOT_LIMITS.timeout, answers are no longer awaited
COMMIT_TIMEOUT_S: Final = 15.0  # a slot's commit (confirm, store, announce), at most
_INGEST_AT_ONCE: Final = 16  # records/submissions fetched and merged concurrently
DECLINE_TURNS: Final = 8  # a declined slot is looked at again after this many Δ


def _log() -> Any:
    return get_logger("qflow.exec")


mono_ms = clock.mono_ms


def wall_ms() -> int:
    return clock.wall_ms()


@dataclass(frozen=True, slots=True)
class ExecSettings:
    delta_ms: int = 250  # Δ of the normal lane: the wait per rank before taking a turn
    lease_ms: int = 3_000  # a claim's lease; renewed every third of it while working
    work_slots: int = 16  # slots this node works on at once
    fetch_within: float = 10.0  # seconds to fetch the blocks of a submission or record
    admins: tuple[str, ...] = ()  # did:keys that may pause/resume/abort/approve anything
    # After a (re)start, a resumed execution is only watched this long before this node
    # claims any of its work: heads announcements bring the records it missed while
    # down, and claim renewals show which slots others hold. Acting on a stale ledger
    # would redo work others finished.
    resume_hold_ms: int = 2_000
    admission_burst: int = 256  # work tokens (slots claimed) at once
    admission_per_s: float = 1000.0  # tokens refilled per second

    def __post_init__(self) -> None:
        if self.delta_ms < 1 or self.lease_ms < 30 or self.work_slots < 1:
            raise ValueError("exec delta_ms >= 1, lease_ms >= 30 and work_slots >= 1")


class ControlRefused(Exception):
    """A control the actor may not give (or for an execution this node does not run)."""


class ExecService:
    def __init__(
        self,
        key: SigningKey,
        gossip: Gossip,
        blocks: BlockService,
        ledger: LedgerStore,
        *,
        runner: LocalRunner,
        membership: MembershipService,
        direct: Direct | None = None,
        subnets: Sequence[str],
        settings: ExecSettings | None = None,
    ) -> None:
        self.key = key
        self.me = key.peer_id
        self.gossip = gossip
        self.blocks = blocks
        self.ledger = ledger
        self.runner = runner
        self.membership = membership
        self.direct = direct
        # Slot questions go over one long-lived stream per peer (`channel`); a peer that
        # does not speak it yet is asked with a stream per question (`direct`).
        self.channel: Channel | None = None
        if direct is not None:
            direct.serve(SLOT_PROTOCOL, self._answer_slot, SLOT_LIMITS)
            self.channel = direct.open_channel(SLOT_CHANNEL, self._answer_slot, SLOT_LIMITS)
        self.subnets = frozenset(subnets)
        self.settings = settings or ExecSettings()
        self.replicas: dict[CID, Replica] = {}
        self.book = ClaimBook()
        self._working: set[Slot] = set()  # slots claimed (each holds a work slot) until done
        self._writing: set[Slot] = set()  # past the final check: answered as done
        self._asked: dict[Slot, _Asked] = {}  # asked when claimed, for the first write
        self._ended: set[Slot] = set()  # slots that wrote the execution's end with their record
        self._no_channel: set[str] = set()  # peers that do not speak SLOT_CHANNEL
        self._members: tuple[Any, int, tuple[frozenset[str], dict[str, tuple[str, ...]]]] | None
        self._members = None  # (view, until, what `_membership` said for it)
        self._slots = trio.CapacityLimiter(self.settings.work_slots)
        self._ingesting = trio.CapacityLimiter(_INGEST_AT_ONCE)
        # Admission: a node takes at most `admission_burst` slots at once, refilled at
        # `admission_per_s`; past that it declines and the next rank takes the work.
        self.admission = TokenBucket(self.settings.admission_burst, self.settings.admission_per_s)
        self._seq = clock.wall_ns() // 1000  # grows across restarts, like heartbeats
        self._wake = trio.Event()
        # Incremental scheduling: with many executions active, deciding all of them on
        # every claim or record heard costs O(executions) per message. Decided are the
        # executions poked since, those whose own time to look came (a heap of
        # (monotonic ms, exec), stale entries skipped), and all of them once per sweep.
        self._dirty: dict[CID, None] = {}  # a dict: looked at in the order they changed
        self._looks: list[tuple[int, bytes, CID]] = []  # CIDs do not order: their bytes do
        self._look_at: dict[CID, int] = {}
        self._sweep_at = 0
        # Wanted to claim, found no free work slot: looked at again, oldest first, one
        # per work slot that frees (waking them all re-decided every waiting execution
        # each time a slot finished: most of a loaded node's scheduling time).
        # Those whose slot is ours first (our turn: rank 0 among the live nodes) come
        # before those whose slot we would take over (their first node let its turn pass,
        # busy as we are): on a saturated cluster, two busy nodes picking up the same
        # takeover at once was most of the work done twice.
        self._starved: OrderedDict[CID, None] = OrderedDict()
        self._starved_late: OrderedDict[CID, None] = OrderedDict()
        # Several slots at the same stage share one operation (runtime/batcher.py):
        # claims (and renewals) one envelope, records one put_many and one envelope,
        # local commits one worker-thread trip, questions one request per peer.
        self._claims = Batcher(self._flush_claims, max_items=MAX_BATCH)
        self._builds = Batcher(self._flush_builds, max_items=MAX_BATCH)
        self._announcements = Batcher(self._flush_announcements, max_items=MAX_BATCH)
        self._commits = Batcher(self._flush_commits, max_items=MAX_BATCH)
        self._askers: dict[str, Batcher[dict[str, Any], Any]] = {}
        self.resumed = trio.Event()  # unfinished executions re-opened after a (re)start
        self._nursery: trio.Nursery | None = None
        self.completed_slots = 0  # slots this node committed (status, tests)
        # The two-phase commit of critical steps, when the node has a subnet policy (the
        # daemon sets it); rounds tried per slot (a retry queries the validators first).
        self.critical: CriticalService | None = None
        self._critical_rounds: dict[Slot, int] = {}
        # Finished executions, with their heads then: a late record or re-announcement
        # merges into the ledger but opens no replica again, unless it brought records
        # the end was not folded from (`_ended_with`). Bounded; the ledger says so anyway.
        self._done: OrderedDict[CID, tuple[CID, ...]] = OrderedDict()
        # Refused submissions (docs/protocol.md, "Rejections"): why, per execution, as
        # this node found or heard it (the newest rej.MAX_KEPT); when it last sent or
        # heard a rejection of each; and a rate limit on the ones it publishes, so a
        # flood of invalid submissions is not answered by a flood of rejections.
        self.rejections: OrderedDict[CID, rej.KnownRejection] = OrderedDict()
        self._rejection_sent: OrderedDict[CID, int] = OrderedDict()
        self._rejecting = TokenBucket(rej.BURST, rej.PER_S)
        self._rejections_changed = trio.Event()
        self.rejections_published = 0

    # -- entry points --------------------------------------------------------------------

    async def run(self) -> None:
        """Resume unfinished executions, then schedule until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.channel is not None:
                nursery.start_soon(self.channel.run)
            for batcher in (self._claims, self._builds, self._announcements, self._commits):
                nursery.start_soon(batcher.run)
            opened = await offload.run_sync(self._resume)
            hold_until = mono_ms() + self.settings.resume_hold_ms
            for replica in [r for r in opened if r.finished][-_DONE_KEPT:]:
                self._done[replica.exec] = replica.heads  # a question about them: done
            for replica in [r for r in opened if not r.finished]:
                replica.hold_until = hold_until
                replica.own_heads = "unchecked"
                self.replicas[replica.exec] = replica
                _log().info("exec.resumed", exec=replica.exec.encode(), records=replica.records)
            self.resumed.set()
            while True:
                try:
                    wake_at = self._schedule()
                except Exception as exc:  # a bug must not stop every execution here
                    _log().exception("exec.schedule_error", error=repr(exc))
                    self._sweep_at = 0  # everything again, after a pause
                    wake_at = mono_ms() + _IDLE_LOOK_MS
                with trio.move_on_at(wake_at / 1000):
                    await self._wake.wait()
                self._wake = trio.Event()

    def free_work_tokens(self) -> int:
        """How many slots this node would take on now: free work slots, bounded by the
        admission tokens left (what its heartbeats advertise)."""
        slots = int(self._slots.available_tokens)
        return max(0, min(slots, self.admission.available(mono_ms())))

    def batch_stats(self) -> dict[str, dict[str, int]]:
        """Per batched stage, how many operations carried how many slots (`node.status`):
        items well above batches means the node shares its per-message costs."""
        stages: dict[str, list[Batcher[Any, Any]]] = {
            "claims": [self._claims],
            "builds": [self._builds],
            "announcements": [self._announcements],
            "commits": [self._commits],
            "questions": list(self._askers.values()),
        }
        return {
            stage: {
                "batches": sum(b.batches for b in batchers),
                "items": sum(b.items for b in batchers),
            }
            for stage, batchers in stages.items()
        }

    def withholds(self, exec: CID) -> bool:
        """Whether the heads of `exec` must not be announced yet: until this node has
        resumed its executions and checked its own heads with its peers after a restart,
        a head may be a record lost in the crash (never sent) whose slot another node
        redid; announcing it would put the step in every ledger twice."""
        if not self.resumed.is_set():
            return True
        replica = self.replicas.get(exec)
        return replica is not None and replica.own_heads != "settled"

    def poke(self, exec: CID | None = None) -> None:
        """Something changed for `exec` (a record, a claim, a finished slot), or for all
        executions (None): decide again now - only what changed, the rest on its own
        timer or the next full sweep (every `_IDLE_LOOK_MS`)."""
        if exec is None:
            self._sweep_at = 0
        else:
            self._dirty[exec] = None
        self._wake.set()

    async def submit(self, exec: CID, blocks: Sequence[Block]) -> bool:
        """A submission from this node's API: store, check, open, publish. True if new."""
        await offload.run_sync(self.blocks.store.put_many, list(blocks))
        submission = self._verified_submission(exec)
        new = exec not in self.replicas
        await self._open(submission)
        if not self.ledger.heads(exec):  # accepted means kept, crash or not, until started
            await offload.run_sync(self.ledger.accept, exec)
        inline = inline_blocks(blocks)
        body = SubmissionBody(exec=exec, blocks=inline)
        await self._publish(submission.subnet, "flows", body)
        return new

    def heard(self, subnet: str, verified: Verified[Any]) -> None:
        """A verified envelope from the `flows` or `exec` topic of `subnet`. Claims are
        noted at once; records and submissions are fetched and merged in the background
        (a slow sender must not hold up the topic)."""
        body = verified.body
        if verified.sender == self.me:
            return
        if isinstance(body, ClaimBody):
            self._heard_claim(body, verified)
        elif isinstance(body, Claims):
            for claim in body.claims:
                self._heard_claim(claim, verified)
        elif isinstance(body, ControlBody):
            try:
                self.control(body)
            except ControlRefused as exc:
                _log().info("control.refused", exec=body.exec.encode(), error=str(exc))
        elif self._nursery is None:
            return  # not running yet: heads announcements bring it later
        elif isinstance(body, RecordAnnouncement):
            self._nursery.start_soon(self._ingest, self._heard_records((body,), verified.sender))
        elif isinstance(body, Records):
            self._nursery.start_soon(
                self._ingest, self._heard_records(body.records, verified.sender)
            )
        elif isinstance(body, SubmissionBody):
            self._nursery.start_soon(
                self._ingest, self._heard_submission(subnet, body, verified.sender)
            )

    async def _ingest(self, work: Coroutine[Any, Any, None]) -> None:
        async with self._ingesting:
            await work

    def control(self, control: ControlBody) -> bool:
        """An actor's signed control (signature already verified): queue its record if
        the actor may. True if new. ControlRefused (with the reason) otherwise."""
        replica = self.replicas.get(control.exec)
        if replica is None:
            raise ControlRefused(f"execution {control.exec.encode()} is not active on this node")
        name = control_slot(control)
        if name in replica.controls or replica.finished:
            return False
        reason = refusal(
            control,
            submitter=replica.submission.submitter,
            waiting=waiting_approvals(replica, wall_ms()),
            admins=self.settings.admins,
        )
        if reason is not None:
            raise ControlRefused(reason)
        replica.controls[name] = control
        replica.controls_since[name] = mono_ms()
        _log().info(
            "control.accepted",
            exec=control.exec.encode(),
            action=control.action,
            actor=control.actor,
            slot=name,
        )
        self.poke(control.exec)
        return True

    async def publish_control(self, control: ControlBody) -> bool:
        """A control from this node's API: check, queue, and gossip it to the subnet."""
        new = self.control(control)
        replica = self.replicas[control.exec]
        await self._publish(replica.subnet, "exec", control)
        return new

    # -- submissions and records from peers ------------------------------------------------

    async def _heard_submission(self, subnet: str, body: SubmissionBody, sender: str) -> None:
        if body.exec in self.replicas:
            return
        log = _log().bind(exec=body.exec.encode(), sender=sender)
        submission: Submission | None = None
        try:
            submission = await self._fetched_submission(subnet, body, sender)
            # In the try: a flow that does not compile or inputs its schema refuses are
            # the submitter's mistake, to be reported, not an error of this service.
            await self._open(submission)
        except StoreError as exc:  # not fetched (yet): nothing to say about the submission
            log.info("submission.refused", reason="missing", error=str(exc))
        except SubmissionError as exc:
            log.info("submission.refused", reason=exc.reason, error=str(exc))
            blocks_here = submission is not None and all(
                self.blocks.store.has(cid) for cid in (submission.flow, submission.inputs)
            )
            await self._reject(subnet, body.exec, sender, exc, blocks_here=blocks_here)

    async def _heard_records(
        self, announcements: Sequence[RecordAnnouncement], sender: str
    ) -> None:
        """Announced records: those carried inline are stored, decoded and merged in one
        trip to a worker thread (the usual case), the others fetched from `sender`."""
        inline: list[RecordAnnouncement] = []
        fetch: list[RecordAnnouncement] = []
        for body in announcements:
            carried = any(b.cid == body.record for b in body.blocks)
            (inline if carried else fetch).append(body)
        if inline:
            taken = await offload.run_sync(self._take_inline, inline)
            for body, outcome in zip(inline, taken, strict=True):
                # Carried without all it links to (a re-announcement): fetched first.
                if not isinstance(outcome, Exception) and missing_block(outcome[1]):
                    fetch.append(body)
                else:
                    await self._merged(body, sender, outcome)
        for body in fetch:
            fetched: tuple[Record, VerifyReport] | Exception
            try:
                fetched = await self._fetch_record(body, sender)
            except Exception as exc:
                fetched = exc
            await self._merged(body, sender, fetched)

    async def _merged(
        self,
        body: RecordAnnouncement,
        sender: str,
        outcome: tuple[Record, VerifyReport] | Exception,
    ) -> None:
        if isinstance(outcome, Exception):  # unreachable sender, bad blocks: heads sync
            _log().info("record.fetch_failed", record=body.record.encode(), error=str(outcome))
            return
        record, report = outcome
        if not report.ok:
            assert report.failure is not None
            _log().warning(
                "record.refused",
                record=body.record.encode(),
                reason=report.failure.reason,
                error=report.failure.message,
            )
            return
        if record.exec not in self.replicas and not self._ended_with(record.exec):
            await self._open_from_ledger(record.exec, [sender])
        self._refresh(record.exec)

    def _take_inline(
        self, bodies: Sequence[RecordAnnouncement]
    ) -> list[tuple[Record, VerifyReport] | Exception]:
        """Store the inline blocks of announcements whose records they carry, all in one
        `put_many`, and merge each record (in a worker thread): per announcement, the
        record and its merge's report, or why it failed (LedgerStoreError, StoreError)."""
        try:
            self.blocks.store.put_many([Block(b.cid, b.data) for a in bodies for b in a.blocks])
        except StoreError as exc:
            return [exc for _ in bodies]

        def merge(body: RecordAnnouncement) -> tuple[Record, VerifyReport]:
            record = self.ledger.record(body.record)
            return record, self.ledger.merge(record.exec, [body.record])

        return self._each_in_ledger_batch(bodies, merge)

    def _each_in_ledger_batch(
        self, items: Sequence[T], work: Callable[[T], R]
    ) -> list[R | Exception]:
        """`work(item)` for each item inside one `LedgerStore.batch` (their heads durable
        together), each item's result or failure on its own; if the heads cannot be
        written at the end, that failure is every item's. In a worker thread."""
        results: list[R | Exception] = []
        try:
            with self.ledger.batch():
                for item in items:
                    try:
                        results.append(work(item))
                    except Exception as exc:  # this one fails, the others go on
                        results.append(exc)
        except OSError as exc:
            return [exc for _ in items]
        return results

    async def _fetch_record(
        self, body: RecordAnnouncement, sender: str
    ) -> tuple[Record, VerifyReport]:
        """An announced record that did not fit inline: fetched from `sender`, merged."""
        await self._store_inline(body.blocks)
        if not self.blocks.store.has(body.record):
            await self.blocks.fetch_dag(
                [body.record], peers=[sender], within=self.settings.fetch_within
            )
        record = await offload.run_sync(self.ledger.record, body.record)
        report, _ = await fetch_and_merge(
            self.blocks,
            self.ledger,
            record.exec,
            [body.record],
            peers=[sender],
            within=self.settings.fetch_within,
        )
        return record, report

    def _heard_claim(self, body: ClaimBody, verified: Verified[Any]) -> None:
        slot = Slot(body.exec, body.step, body.attempt)
        now = mono_ms()
        held = self.book.holder(slot, now)
        claim = Claim(slot, verified.sender, body.rank, now + body.lease_ms, verified.seq)
        if self.book.observe(claim) and (held is None or held.node != verified.sender):
            # A renewal by the holder changes no decision here: the execution is looked
            # at again when the lease it knew ends anyway.
            self.poke(slot.exec)

    async def _store_inline(self, blocks: Sequence[InlineBlock]) -> None:
        if blocks:
            await offload.run_sync(
                self.blocks.store.put_many, [Block(b.cid, b.data) for b in blocks]
            )

    # -- replicas -----------------------------------------------------------------------------

    def _verified_submission(self, exec: CID) -> Submission:
        try:
            data = self.blocks.store.get(exec)
        except StoreError as exc:
            raise SubmissionError("missing", f"submission {exec.encode()}: {exc}") from None
        return verify_submission(exec, data)

    async def _open(self, submission: Submission) -> None:
        if submission.cid in self.replicas or submission.cid in self._done:
            return
        if submission.subnet not in self.subnets:
            raise SubmissionError(
                "wrong_subnet", f"subnet {submission.subnet!r} is not one of this node's"
            )
        try:
            replica = await offload.run_sync(
                open_replica, self.ledger, submission, self._critical_keys(submission.subnet)
            )
        except ReplicaError as exc:
            raise SubmissionError("unusable", str(exc)) from None
        if not replica.started:
            rejected = eng.apply(replica.state, started_event(replica, wall_ms()))
            if isinstance(rejected, eng.Rejection):
                raise SubmissionError("bad_inputs", rejected.reason)
        self.replicas[submission.cid] = replica
        _log().info("exec.opened", exec=submission.cid.encode(), records=replica.records)
        self.poke(submission.cid)

    async def _open_from_ledger(self, exec: CID, peers: Sequence[str] | None = None) -> None:
        """Open a replica of an execution first heard of by its records (a heads
        catch-up; records gossiped after a partition healed): its submission, flow and
        inputs are fetched if missing - from `peers`, or every connected peer."""
        try:
            await self._fetch_submission(exec, peers)
            await self._open(self._verified_submission(exec))
        except (SubmissionError, StoreError) as exc:
            _log().info("exec.not_opened", exec=exec.encode(), error=str(exc))

    def _resume(self) -> list[Replica]:
        """Replicas of the executions this node has a ledger of (finished ones too: they
        are remembered as done), or accepted and has no record of yet (runs in a worker
        thread)."""
        found = []
        for exec in [*self.ledger.executions(), *self.ledger.accepted()]:
            try:
                submission = self._verified_submission(exec)
            except SubmissionError:
                continue  # a local run (unsigned submission) or foreign: not ours to drive
            if submission.subnet not in self.subnets:
                continue
            try:
                replica = open_replica(
                    self.ledger, submission, self._critical_keys(submission.subnet)
                )
            except ReplicaError as exc:
                _log().warning("exec.not_resumed", exec=exec.encode(), error=str(exc))
                continue
            found.append(replica)
        return found

    def _refresh(self, exec: CID) -> None:
        replica = self.replicas.get(exec)
        if replica is None:
            return
        was_finished = replica.finished
        try:
            changed = refresh(replica, self.ledger)
        except ReplicaError as exc:
            _log().warning("exec.refresh_failed", exec=exec.encode(), error=str(exc))
            return
        self._refreshed(replica, changed, was_finished)

    def _refreshed(self, replica: Replica, changed: bool, was_finished: bool) -> None:
        """After a refresh: log the end of the execution once, and decide again."""
        if not changed:
            return
        if replica.finished and not was_finished:
            _log().info("exec.finished", exec=replica.exec.encode(), status=replica.state.status)
        self.poke(replica.exec)

    def ledger_merged(self, exec: CID) -> None:
        """The ledger of `exec` took records from elsewhere (a heads catch-up): fold them
        into the replica, or open one for an execution first heard of this way."""
        if exec in self.replicas:
            self._refresh(exec)
        elif not self._ended_with(exec) and self._nursery is not None:
            self._nursery.start_soon(self._ingest, self._open_from_ledger(exec))

    def _ended_with(self, exec: CID) -> bool:
        """Whether `exec` ended here and its ledger holds nothing newer than what that
        end was folded from. A branch written on the other side of a partition can
        merge after the end, and the records together may say otherwise (the earliest
        of concurrent starts counts): such an execution is opened and folded again."""
        heads = self._done.get(exec)
        if heads is None or set(self.ledger.heads(exec)) == set(heads):
            return heads is not None
        del self._done[exec]
        return False

    # -- scheduling ---------------------------------------------------------------------------

    def _schedule(self) -> int:
        """Decide the due slots of the executions that need it; start the ones to claim.
        The next monotonic ms to look."""
        now = mono_ms()
        wall = wall_ms()
        if now >= self._sweep_at:
            # In a stable order (dicts, not sets: a set of CIDs iterates in an order
            # PYTHONHASHSEED picks, and the simulator's runs must replay exactly).
            candidates = dict.fromkeys(self.replicas)
            self._sweep_at = now + _IDLE_LOOK_MS
        else:
            candidates = self._dirty
            while self._looks and self._looks[0][0] <= now:
                at, _, exec = heapq.heappop(self._looks)
                if self._look_at.get(exec) == at:
                    candidates[exec] = None
        self._dirty = {}
        live, members = self._membership(now)
        for exec in candidates:
            self._look(exec, now, wall, live, members)
        # Free work slots go to the executions that waited longest for one.
        while self._slots.available_tokens > 0 and (self._starved or self._starved_late):
            waiting = self._starved or self._starved_late
            self._look(waiting.popitem(last=False)[0], now, wall, live, members)
        return min(self._sweep_at, self._looks[0][0]) if self._looks else self._sweep_at

    def _look(
        self,
        exec: CID,
        now: int,
        wall: int,
        live: frozenset[str],
        members: dict[str, tuple[str, ...]],
    ) -> None:
        """Decide one execution's due slots and note when to look at it again."""
        replica = self.replicas.get(exec)
        if replica is None:
            return
        if replica.finished:
            self._forget(exec)
            return
        at = self._decide(replica, now, wall, live, members)
        if self._look_at.get(exec) != at:
            self._look_at[exec] = at
            heapq.heappush(self._looks, (at, exec.cid_bytes, exec))

    def _forget(self, exec: CID) -> None:
        """A finished execution: no replica, no claims; remembered as done."""
        self._done[exec] = self.replicas.pop(exec).heads
        self._look_at.pop(exec, None)
        self._starved.pop(exec, None)
        self._starved_late.pop(exec, None)
        self.book.forget(exec)
        while len(self._done) > _DONE_KEPT:
            self._done.popitem(last=False)

    def _decide(
        self,
        replica: Replica,
        now: int,
        wall: int,
        live: frozenset[str],
        members: dict[str, tuple[str, ...]],
    ) -> int:
        """Decide each due slot of one execution; when to look at it again."""
        look_at = now + _IDLE_LOOK_MS
        held = self._held(replica, now)
        if held is not None:
            return min(look_at, held)
        self._expire_controls(replica, now)
        work = due(replica, wall)
        if work.wake_at is not None:
            look_at = min(look_at, now + max(0, work.wake_at - wall))
        for slot in list(replica.opened_ms):
            if slot not in work.slots:  # settled, or on hold (a pause)
                del replica.opened_ms[slot]
                replica.reannounce.pop(slot, None)
                replica.declined.pop(slot, None)
                if _settled(replica, slot):
                    self.book.done(slot)
        for slot, actions in work.slots.items():
            opened = replica.opened_ms.setdefault(slot, now)
            if slot in self._working:
                continue
            nodes = [self.me, *members.get(replica.subnet, ())]
            decision = decide(
                slot,
                self.me,
                ranking(slot, nodes),
                self.book,
                opened_at_ms=opened,
                now_ms=now,
                delta_ms=delta_for(replica.priority, self.settings.delta_ms),
                live=live,
            )
            if isinstance(decision, ClaimNow):
                try:  # busy: no claim, so the next rank's turn comes
                    self._slots.acquire_on_behalf_of_nowait(slot)
                except trio.WouldBlock:
                    # Looked at again when a slot frees.
                    if decision.turn == 0:
                        self._starved[replica.exec] = None
                    elif replica.exec not in self._starved:
                        self._starved_late[replica.exec] = None
                    continue
                if self._admit(replica, slot, now):
                    self._start(replica, slot, actions, decision.rank)
                else:
                    self._slots.release_on_behalf_of(slot)
                    look_at = min(look_at, replica.declined[slot])
            elif isinstance(decision, WaitUntil):
                look_at = min(look_at, decision.at_ms, self._reannounce_due(replica, slot, now))
            elif isinstance(decision, Leave) and decision.recheck_at_ms is not None:
                look_at = min(look_at, decision.recheck_at_ms)
            elif isinstance(decision, Hold):
                pass  # our renewal task keeps the lease
        return look_at

    def _held(self, replica: Replica, now: int) -> int | None:
        """When to look again at a replica that must not claim yet (after a restart:
        the hold, then the check of its own heads), or None if it may."""
        if now < replica.hold_until:
            return replica.hold_until
        if replica.own_heads != "unchecked":
            return None if replica.own_heads == "settled" else replica.hold_until
        replica.own_heads = "checking"
        replica.hold_until = now + 60 * _IDLE_LOOK_MS  # until the check ends
        assert self._nursery is not None
        self._nursery.start_soon(self._settle_own_heads, replica)
        return replica.hold_until

    def _expire_controls(self, replica: Replica, now: int) -> None:
        """Forget queued controls that stopped applying long ago: recorded by another node
        (a second pause of a paused execution does not apply), or never applicable (a
        resume whose pause never came)."""
        for name, since in list(replica.controls_since.items()):
            if now - since > CONTROL_TTL_MS:
                control = replica.controls.pop(name)
                del replica.controls_since[name]
                _log().debug(
                    "control.dropped",
                    exec=replica.exec.encode(),
                    action=control.action,
                    reason=f"not applicable here for {CONTROL_TTL_MS // 1000} s",
                )

    def _admit(self, replica: Replica, slot: Slot, now: int) -> bool:
        """Take a work token, or decline the slot for a while: the next rank's turn comes
        Δ later, and we look again after every rank had its turn."""
        if now < replica.declined.get(slot, 0):
            return False
        if self.admission.take(now):
            replica.declined.pop(slot, None)
            return True
        wait = DECLINE_TURNS * delta_for(replica.priority, self.settings.delta_ms)
        replica.declined[slot] = now + wait
        _log().info("slot.declined", exec=slot.exec.encode(), slot=slot.name, retry_in_ms=wait)
        return False

    def _reannounce_due(self, replica: Replica, slot: Slot, now: int) -> int:
        """Re-announce the work behind an unclaimed slot with backoff and jitter (a peer
        that missed the record or submission that made it due hears it again); the next
        time to do so."""
        when, round_ = replica.reannounce.get(slot, (0, 0))
        if when == 0:
            when = replica.opened_ms[slot] + reannounce_delay_ms(0, self._seed(slot))
        if now >= when and self._nursery is not None:
            self._nursery.start_soon(self._reannounce, replica)
            round_ += 1
            when = now + reannounce_delay_ms(round_, self._seed(slot))
        replica.reannounce[slot] = (when, round_)
        return when

    def _seed(self, slot: Slot) -> bytes:
        return f"{self.me}\x00{slot.name}\x00{slot.attempt}".encode() + slot.exec.cid_bytes

    async def _reannounce(self, replica: Replica) -> None:
        try:
            if replica.started:
                for head in replica.heads:
                    block = Block(head, await offload.run_sync(self.blocks.store.get, head))
                    await self._announce(replica.subnet, block, [])
            else:
                submission = await offload.run_sync(self.blocks.store.get, replica.exec)
                body = SubmissionBody(
                    exec=replica.exec, blocks=inline_blocks([Block(replica.exec, submission)])
                )
                await self._publish(replica.subnet, "flows", body)
        except StoreError as exc:
            _log().info("exec.reannounce_failed", exec=replica.exec.encode(), error=str(exc))

    def _membership(self, now: int) -> tuple[frozenset[str], dict[str, tuple[str, ...]]]:
        """The alive nodes, and each subnet's members (alive or suspect): computed again
        when a heartbeat changed the view or `_MEMBERSHIP_REUSE_MS` passed (a peer turns
        suspect after missed heartbeats, seconds), not for every scheduling pass."""
        view = self.membership.view
        cached = self._members
        if cached is not None and cached[0] is view and now < cached[1]:
            return cached[2]
        alive = frozenset(n for n, s in states(view, now).items() if s is PeerState.ALIVE)
        members = {
            subnet: eligible(
                view, Requirement(subnet, needs_work_token=False, include_suspect=True), now
            )
            for subnet in self.subnets
        }
        self._members = (view, now + _MEMBERSHIP_REUSE_MS, (alive, members))
        return alive, members

    def _start(
        self, replica: Replica, slot: Slot, actions: tuple[eng.Action, ...], rank: int
    ) -> None:
        assert self._nursery is not None
        self._working.add(slot)
        self._nursery.start_soon(self._work, replica, slot, actions, rank)

    # -- doing the work -----------------------------------------------------------------------

    async def _work(
        self, replica: Replica, slot: Slot, actions: tuple[eng.Action, ...], rank: int
    ) -> None:
        log = _log().bind(exec=slot.exec.encode(), slot=slot.name, attempt=slot.attempt)
        try:
            async with trio.open_nursery() as lease:
                await self._claim(replica.subnet, slot, rank)
                log.info("slot.claimed", rank=rank)
                lease.start_soon(self._renew, replica.subnet, slot, rank)
                # The question of the slot's first write, asked now: its round trip to
                # the peers overlaps the step's run instead of following it.
                asked = self._asked[slot] = _Asked()
                lease.start_soon(asked.ask, self._confirm, replica, slot)
                written = await self._perform(replica, slot, actions)
                lease.cancel_scope.cancel()
            if written:
                self.completed_slots += 1
                ended = slot.name == FINISH or slot in self._ended
                log.info("slot.done", rank=rank, records=written, ended=ended)
        except Exception as exc:  # a bug must not take the node down; the lease lapses
            log.exception("slot.error", error=repr(exc))
        finally:
            self._working.discard(slot)
            self._asked.pop(slot, None)
            self._ended.discard(slot)
            self._slots.release_on_behalf_of(slot)  # taken when the slot was started
            self.poke(slot.exec)

    async def _claim(self, subnet: str, slot: Slot, rank: int) -> None:
        body = ClaimBody(
            exec=slot.exec,
            step=slot.name,
            attempt=slot.attempt,
            lease_ms=self.settings.lease_ms,
            rank=rank,
        )
        seq = await self._claims.submit((subnet, body))
        self.book.observe(Claim(slot, self.me, rank, mono_ms() + self.settings.lease_ms, seq))

    async def _flush_claims(self, claims: Sequence[tuple[str, ClaimBody]]) -> list[int]:
        """One envelope per subnet for the claims of a batch; each claim's envelope seq."""
        seqs: dict[str, int] = {}
        for subnet, mine in _by_subnet(claims).items():
            # A slot once per envelope: its latest claim (a renewal racing the first).
            bodies = list({(b.exec, b.step, b.attempt): b for b in mine}.values())
            batch: Any = bodies[0] if len(bodies) == 1 else Claims(tuple(bodies))
            seqs[subnet] = await self._publish(subnet, "exec", batch)
        return [seqs[subnet] for subnet, _ in claims]

    async def _renew(self, subnet: str, slot: Slot, rank: int) -> None:
        while True:
            await trio.sleep(self.settings.lease_ms / 3000)
            await self._claim(subnet, slot, rank)

    async def _perform(self, replica: Replica, slot: Slot, actions: tuple[eng.Action, ...]) -> int:
        """Do the slot's work and commit its records; how many were written. The work
        slot is held until the record is written: handing it back while the commit waits
        on peers let a loaded node take on more slots than its peers could confirm in
        time (answers late, records written twice)."""
        written = 0
        control = replica.controls.get(slot.name)
        if control is not None:
            event = control_event(control, wall_ms())
            if eng.settles_decision(replica.state, event):
                written = await self._commit_decision(replica, slot, event)
                if not written:
                    return 0  # not certified yet: the control stays, tried again
            else:
                written = await self._commit(
                    replica, slot, lambda: control_event(control, wall_ms())
                )
            replica.controls.pop(slot.name, None)
            replica.controls_since.pop(slot.name, None)
            return written
        if slot.name == START:
            return await self._commit(
                replica, slot, lambda: started_event(replica, wall_ms()), payload=replica.exec
            )
        for action in actions:
            if isinstance(action, eng.RunStep):
                outcome = await offload.run_sync(
                    self.runner.execute, action, replica.exec, replica.state
                )
                written += await self._commit_outcome(replica, slot, action, outcome)
            else:
                written += await self._commit_event(replica, slot, _event_now(action))
        return written

    async def _commit_event(
        self, replica: Replica, slot: Slot, make_event: Callable[[], eng.Event]
    ) -> int:
        """Commit an event that runs nothing: through the validators first when it settles
        a decision step (`_commit_decision`), else as it is."""
        event = make_event()
        if eng.settles_decision(replica.state, event):
            return await self._commit_decision(replica, slot, event)
        return await self._commit(replica, slot, make_event)

    async def _commit_outcome(
        self, replica: Replica, slot: Slot, action: eng.RunStep, outcome: StepOutcome
    ) -> int:
        if action.step.get("critical", False):
            return await self._commit_critical(replica, slot, action, outcome)
        output = None if outcome.error is not None else outcome.output
        return await self._commit(
            replica, slot, lambda: outcome.event(action, wall_ms()), output=output
        )

    # -- critical steps (docs/consensus.md) ------------------------------------------------

    def _critical_keys(self, subnet: str) -> CriticalKeys | None:
        """The keys a replica of `subnet` checks critical steps' certificates with."""
        critical = self.critical
        if critical is None or critical.config.policy.subnet != subnet:
            return None
        policy = critical.config.policy
        return CriticalKeys(subnet, critical.config.cid, policy.keys)

    async def _commit_critical(
        self, replica: Replica, slot: Slot, action: eng.RunStep, outcome: StepOutcome
    ) -> int:
        """A critical step's result is written only with the validators' certificate:
        commit of this outcome, or abort (a retryable failure). A round without a
        decision writes nothing; the lease lapses and the slot is taken up again."""
        critical = self.critical
        exec = replica.exec.encode()
        if critical is None or critical.config.policy.subnet != replica.subnet:
            _log().warning("critical.no_policy", exec=exec, slot=slot.name, subnet=replica.subnet)
            return 0
        event = outcome.event(action, wall_ms())
        proposal = outcome_of(replica.exec, event)
        tried = self._critical_rounds.get(slot, 0)
        self._critical_rounds[slot] = tried + 1
        try:
            decided = await critical.decide(
                slot, proposal, _outcome_blocks(event), query_first=tried > 0
            )
        except CriticalError as exc:
            _log().warning(
                "critical.round_failed", exec=exec, slot=slot.name, attempt=slot.attempt,
                error=str(exc),
            )  # fmt: skip
            return 0
        decision = decided.decision
        if decision.outcome == proposal:
            final = replace(event, quorum=decided.certificate)
            output = None if outcome.error is not None else outcome.output
        elif decision.outcome is None:
            why = ev.error(ABORTED, f"the validators aborted attempt {slot.attempt}")
            final = eng.Event(
                ev.STEP_FAILED, action.instance, action.attempt, wall_ms(), why,
                quorum=decided.certificate,
            )  # fmt: skip
            output = None
        else:  # certified for an outcome another coordinator proposed: not ours to write
            _log().warning("critical.other_outcome", exec=exec, slot=slot.name)
            return 0
        _log().info("critical.decided", exec=exec, slot=slot.name, decision=decision.kind)
        self._critical_rounds.pop(slot, None)
        await self._keep(_outcome_blocks(final))  # the certificate links them
        return await self._commit(replica, slot, lambda: final, output=output)

    async def _commit_decision(self, replica: Replica, slot: Slot, event: eng.Event) -> int:
        """A decision (an approval, an event, a timeout: `eng.is_decision`) is written only
        with the validators' certificate, so that the two sides of a partition cannot
        both take one (docs/consensus.md, "Decisions"). If the slot is already certified
        for another decision (a coordinator that got there first, maybe dead since), that
        one is written: its block is on the validators that certified it."""
        critical = self.critical
        exec = replica.exec.encode()
        if critical is None:  # a replica with policy keys but no service: not wired
            _log().warning("critical.no_policy", exec=exec, slot=slot.name, subnet=replica.subnet)
            return 0
        assert event.step is not None
        decision_slot = Slot(replica.exec, event.step, event.attempt)
        proposal = decision_outcome(replica.exec, event)
        tried = self._critical_rounds.get(decision_slot, 0)
        self._critical_rounds[decision_slot] = tried + 1
        try:
            decided = await critical.decide(
                decision_slot, proposal, [decision_block(event)], query_first=tried > 0
            )
        except CriticalError as exc:
            _log().info("critical.round_failed", exec=exec, slot=event.step, error=str(exc))
            return 0
        certified = decided.decision.outcome
        if certified is None:  # validators never abort a decision (they withhold votes)
            _log().warning("critical.decision_aborted", exec=exec, slot=event.step)
            return 0
        if certified != proposal:
            final = await self._certified_decision(replica, event, certified.value)
            if final is None:
                return 0
        else:
            final = event
        self._critical_rounds.pop(decision_slot, None)
        _log().info("critical.decided", exec=exec, slot=event.step, decision=final.kind)
        certificate = decided.certificate
        await self._keep([decision_block(final)])  # the certificate links it
        return await self._commit(replica, slot, lambda: replace(final, quorum=certificate))

    async def _keep(self, blocks: Sequence[Block]) -> None:
        """Store the blocks a certificate links (an outcome's value and delta, a
        decision), so that a walk of the record's DAG finds them on its writer and on
        the validators that certified it instead of waiting on the network for them."""
        for block in blocks:
            await self.blocks.put(block)

    async def _certified_decision(
        self, replica: Replica, ours: eng.Event, value: CID | None
    ) -> eng.Event | None:
        """The event of the decision the validators certified instead of ours, from its
        block (fetched from them); None if it cannot be had now (the lease lapses and the
        slot is taken up again)."""
        critical = self.critical
        assert critical is not None and value is not None
        peers = [v.peer for v in critical.config.policy.validators if v.peer != self.me]
        try:
            data = await self.blocks.get(value, peers=peers, within=SLOT_LIMITS.timeout)
            kind, actor, decided = decision_event_fields(data)
        except (StoreError, FormatError) as exc:
            _log().warning(
                "critical.decision_unavailable", exec=replica.exec.encode(), slot=ours.step,
                error=str(exc),
            )  # fmt: skip
            return None
        ts = wall_ms()
        if kind == ev.TIMER_FIRED and isinstance(decided, dict):
            ts = max(ts, int(decided.get("due", ts)))  # due on the validators' clocks
        return eng.Event(kind, ours.step, ours.attempt, ts, decided, actor=actor)

    async def reexecute(self, peer: str, prepare: Prepare) -> Outcome | None:
        """A validator's own outcome of a prepared slot: the step re-run here on this
        node's replica (opened from the coordinator if it is new here)."""
        slot = prepare.slot
        if slot.exec not in self.replicas:
            await self._open_from_ledger(slot.exec, [peer])
        replica = self.replicas.get(slot.exec)
        if replica is None:
            raise NotReady(f"execution {slot.exec.encode()} cannot be opened here yet")
        self._refresh(slot.exec)
        proposed = next((b for b in prepare.blocks if b.cid == prepare.outcome.value), None)
        if proposed is not None and _decides(replica, slot.name):
            return await self._judge_decision(replica, prepare, proposed)
        due = [
            a
            for a in eng.next_actions(replica.state, wall_ms())
            if isinstance(a, eng.RunStep) and (a.instance, a.attempt) == (slot.name, slot.attempt)
        ]
        if not due:
            raise NotReady(f"{slot.name} attempt {slot.attempt} is not due in this replica")
        action = due[0]
        if not action.step.get("critical", False):
            raise Refused(f"step {slot.name} is not critical")
        module = action.step.get("module")
        critical = self.critical
        policy = None if critical is None else critical.config.policy
        if policy is not None and isinstance(module, CID) and not policy.allows_module(module):
            raise Refused(f"module {module.encode()} is not whitelisted by the policy")
        outcome = await offload.run_sync(self.runner.execute, action, replica.exec, replica.state)
        own = outcome_of(replica.exec, outcome.event(action, wall_ms()))
        if own == prepare.outcome:  # this validator will certify it: keep what it links
            await self._keep(prepare.blocks)
        return own

    async def _judge_decision(self, replica: Replica, prepare: Prepare, proposed: Block) -> Outcome:
        """A validator's check of a proposed decision: it must settle the step in this
        replica, now, by this node's clock (a timeout is certified only once it is due
        here too). Anything else gets no vote yet (NotReady), never a refusal: a
        decision is not aborted, and a replica behind its peers catches up."""
        slot = prepare.slot
        try:
            kind, actor, value = decision_event_fields(proposed.data)
        except FormatError as exc:
            raise NotReady(f"the proposed decision on {slot.name}: {exc}") from None
        event = eng.Event(kind, slot.name, slot.attempt, wall_ms(), value, actor=actor)
        why = eng.decision_refusal(replica.state, event)
        if why is not None:
            raise NotReady(f"{slot.name}: {why}")
        # Kept so that a coordinator taking over the slot can write the certified
        # decision (`_certified_decision`) even if the one that proposed it is gone.
        await self.blocks.put(proposed)
        return decision_outcome(replica.exec, event)

    def allow_critical(self, peer: str, request: Prepare | AbortRequest) -> str | None:
        """Why a validator refuses `peer`'s request on policy grounds, None if allowed:
        only members coordinate, and only the slot's lease holder may ask to abort."""
        critical = self.critical
        if critical is None:
            return "this node has no subnet policy"
        if not critical.config.policy.is_member(peer):
            return f"{peer} is not a member of subnet {critical.config.policy.subnet}"
        if isinstance(request, AbortRequest):
            replica = self.replicas.get(request.slot.exec)
            if replica is not None and _decides(replica, request.slot.name):
                return f"{request.slot.name} is a decision: it is never aborted"
            holder = self.book.holder(request.slot, mono_ms())
            if holder is not None and holder.node != peer:
                return f"{peer} does not hold the lease of {request.slot.name}"
        return None

    async def _commit(
        self,
        replica: Replica,
        slot: Slot,
        make_event: Any,
        *,
        payload: CID | None = None,
        output: bytes | None = None,
    ) -> int:
        """`_write`, bounded: the lease is renewed while a commit waits, so a commit stuck
        on a congested peer would hold the slot forever. Past `COMMIT_TIMEOUT_S` it fails
        (`slot.error`), the lease lapses and the next rank takes the slot."""
        with trio.fail_after(COMMIT_TIMEOUT_S):
            return await self._write(replica, slot, make_event, payload=payload, output=output)

    async def _write(
        self,
        replica: Replica,
        slot: Slot,
        make_event: Any,
        *,
        payload: CID | None,
        output: bytes | None,
    ) -> int:
        """Write the event's record unless the replica moved on; 1 if written.

        Order matters for a crash: the blocks are stored, the record is *announced*, and
        only then made a local head. A node killed after announcing leaves the record
        with its peers (they merge it, the slot is done); killed before, nobody has it
        and the next rank redoes the work. Committing locally first would leave a record
        only the dead node holds, redone by another node, and both would meet in the
        ledger when it comes back.
        """
        phases: dict[str, float] = {}
        started = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal started
            now = time.perf_counter()
            phases[name] = round((now - started) * 1000, 2)
            started = now

        was_finished = replica.finished
        # On this thread, as every other refresh of the replica: a worker thread's
        # refresh could interleave with one of those; it reads a record or two.
        changed = refresh(replica, self.ledger)
        self._refreshed(replica, changed, was_finished)
        event = make_event()
        lap("refresh")
        reason = self._superseded(replica, slot, event)
        heads = replica.heads
        then = _ending_after(replica, event) if reason is None else None
        writer = _RecordWriter(replica.exec, event, self.key, payload, output, then)
        built: list[Block] = []
        if reason is None:
            # Ask the subnet while the record is signed and stored: the question is on
            # the critical path of every step, the fsyncs need not wait for it.
            async with trio.open_nursery() as both:

                async def build() -> None:
                    built.append(_raised(await self._builds.submit((heads, writer))))

                both.start_soon(build)
                asked = self._asked.pop(slot, None)
                reason = await (asked.answer() if asked else self._confirm(replica, slot))
            # Again, now: while we waited, a record of the slot may have arrived, or a
            # better claimer may have asked us about it (its question counts as its
            # claim). Past this check the slot is ours to write, and from now on we
            # answer that it is done (`_answer_slot`): in that order, of two claimers
            # that each asked the other, exactly one writes.
            reason = reason or self._superseded(replica, slot, event)
        lap("confirm+build")
        if reason is not None:
            _log().info(
                "slot.superseded",
                exec=replica.exec.encode(),
                slot=slot.name,
                kind=event.kind,
                reason=reason,
            )
            return 0  # blocks already stored are unreferenced: gc collects them
        record, blocks, first = built[0], writer.blocks, writer.first
        assert first is not None  # built
        if then is not None and _ending_after(replica, event) != then:
            # A record merged meanwhile changed how the execution ends (a control):
            # ours alone, and the end is left to its own slot.
            record, blocks = first, blocks[: blocks.index(first) + 1]
        if slot.name == START:
            # The start record carries the submission's DAG where it fits: whoever merges
            # the first record can run the flow even if the launcher dies before anyone
            # fetched the flow and inputs from it (its submission gossip lost).
            dag = await offload.run_sync(self.blocks.local_dag, replica.exec, MAX_INLINE)
            blocks = [*blocks, *dag]
        self._writing.add(slot)
        try:
            await self._announce(replica.subnet, record, blocks)
            lap("announce")
            _raised(await self._commits.submit((replica.exec, heads, record)))
            self._refresh(replica.exec)
        finally:
            self._writing.discard(slot)  # written (the replica says so now), or failed
        lap("commit")
        _log().debug("slot.phases", exec=replica.exec.encode(), slot=slot.name, ms=phases)
        if record is first:
            return 1
        self._ended.add(slot)
        return 2

    def _superseded(self, replica: Replica, slot: Slot, event: eng.Event) -> str | None:
        """Why our result must not be written (None: write it). Two nodes can claim one
        slot at nearly the same time (each before hearing the other); both run it, and
        the one every replica's claim book prefers writes - the other yields here."""
        holder = self.book.holder(slot, mono_ms())
        if holder is not None and holder.node != self.me:
            return f"{holder.node} holds the slot (it wins the claim)"
        if slot.name == START and replica.started:
            return "exec.started is already written"
        applied = eng.apply(replica.state, event)
        if isinstance(applied, eng.Rejection):
            return applied.reason  # settled by a record we merged meanwhile
        return None

    async def _confirm(self, replica: Replica, slot: Slot) -> str | None:
        """Ask the subnet's other live nodes, directly, what they know of the slot before
        writing its record: a record of it, or a claim that wins over ours, means ours
        must not be written. Gossip may be slow or lossy; this answer is not. Both of two
        concurrent claimers ask each other, and every answer is judged by the same
        claim precedence, so exactly one of them writes. Nodes that do not answer in
        time are passed over (dead, or on the other side of a partition)."""
        question = {"exec": slot.exec, "name": slot.name, "attempt": slot.attempt}
        answers = await self._ask_all(replica, question, batch=True)
        mine = precedence(slot, self.me)
        for node, answer in answers:
            if not isinstance(answer, dict):
                continue
            if answer.get("done") is True:
                return f"{node} has a record of the slot already"
            claimers = answer.get("claims")
            for claimer in claimers if isinstance(claimers, list) else []:
                if isinstance(claimer, str) and precedence(slot, claimer) < mine:
                    return f"{claimer} claimed the slot too, and wins (asked {node})"
        return None

    async def _settle_own_heads(self, replica: Replica) -> None:
        """After a restart: drop from the heads a record this node wrote that never left
        it. A node killed after committing a record locally but before its announcement
        left the machine holds a record nobody else saw; the others took the slot over
        and wrote their own. If no peer that answers has it, it was never part of anyone
        else's ledger: the heads go back to its parents (the block stays, unreferenced),
        so the ledger does not end up with the slot done twice.

        `exec.started` is never rewound: a second start is no conflict (replay applies
        the first, the others change nothing), while the peers that answer lacking it
        (one back from a crash itself, say) tell nothing of whether anyone else holds
        the execution - without it the accepted submission could be forgotten by all."""
        try:
            # A rewound record's parents are asked about in turn: a step's record and
            # the end of the execution are written and announced together.
            heads = list(replica.heads)
            while heads:
                head = heads.pop()
                record = await offload.run_sync(self.ledger.record, head)
                if record.node != self.me or record.kind == ev.EXEC_STARTED:
                    continue
                answers = await self._ask_all(replica, {"record": head}, batch=False)
                have = [a.get("have") for _, a in answers if isinstance(a, dict)]
                if have and not any(have):
                    rewound = await offload.run_sync(
                        self.ledger.rewind, replica.exec, head, record.prev
                    )
                    if rewound:
                        heads += record.prev
                        _log().warning(
                            "exec.rewound",
                            exec=replica.exec.encode(),
                            record=head.encode(),
                            reason=f"none of {len(have)} peers had it: lost with the crash",
                        )
            self._refresh(replica.exec)
        finally:
            replica.hold_until = 0
            replica.own_heads = "settled"
            self.poke(replica.exec)

    async def _ask_all(
        self, replica: Replica, question: dict[str, Any], *, batch: bool
    ) -> list[tuple[str, Any]]:
        """(node, decoded answer) from each live node of the subnet that answers a
        slot-protocol question in time; the others are passed over (dead, or across a
        partition). With `batch`, the question shares a request with the other slot
        questions for the same node at that moment (`_ask_slots`)."""
        if self.direct is None:
            return []
        # Alive and suspect members alike: a node just back from a restart may still be
        # suspect here while it already works; asking it is what keeps us both honest.
        _live, members = self._membership(mono_ms())
        others = [n for n in members.get(replica.subnet, ()) if n != self.me]
        # The questions run in the service's nursery and we stop listening at the
        # deadline: py-libp2p resets a stream that failed to open under a cancel
        # shield, which waits as long as the connection cannot be written to (a stalled
        # peer), and that wait must not hold the slot - whose lease we keep renewing.
        assert self._nursery is not None
        send, receive = trio.open_memory_channel[tuple[str, Any]](len(others))
        async with send:
            for node in others:
                self._nursery.start_soon(self._ask, node, question, batch, send.clone())
        answers: list[tuple[str, Any]] = []
        with trio.move_on_after(SLOT_LIMITS.timeout + _ASK_GRACE_S):
            async with receive:
                async for answer in receive:
                    answers.append(answer)
        return answers

    async def _ask(
        self,
        node: str,
        question: dict[str, Any],
        batch: bool,
        send: trio.MemorySendChannel[tuple[str, Any]],
    ) -> None:
        async with send:
            with contextlib.suppress(RequestError, CodecError, trio.BrokenResourceError):
                if batch:
                    answer = await self._asker(node).submit(question)
                else:
                    answer = decode_dag(await self._request(node, encode_dag(question)))
                send.send_nowait((node, answer))  # room for every answer

    def _asker(self, node: str) -> Batcher[dict[str, Any], Any]:
        asker = self._askers.get(node)
        if asker is None:
            asker = self._askers[node] = Batcher(
                lambda questions: self._ask_slots(node, questions), max_items=MAX_BATCH
            )
            assert self._nursery is not None
            self._nursery.start_soon(asker.run)
        return asker

    async def _ask_slots(self, node: str, questions: Sequence[dict[str, Any]]) -> list[Any]:
        """The answers of `node` to several slot questions, asked in one request
        (`{"slots": [...]}`, answered `{"answers": [...]}` in the same order); a lone
        question is asked as itself."""
        if len(questions) == 1:
            return [decode_dag(await self._request(node, encode_dag(questions[0])))]
        reply = decode_dag(await self._request(node, encode_dag({"slots": list(questions)})))
        answers = reply.get("answers") if isinstance(reply, dict) else None
        if not isinstance(answers, list) or len(answers) != len(questions):
            raise RequestError("transport", f"{node} answered {len(questions)} slots badly")
        return answers

    async def _request(self, node: str, question: bytes) -> bytes:
        assert self.direct is not None
        if self.channel is not None and node not in self._no_channel:
            try:
                return await self.channel.request(node, question)
            except RequestError as exc:
                if exc.reason != "unsupported":
                    raise
                self._no_channel.add(node)  # an older node: one stream per question
        return await self.direct.request(node, SLOT_PROTOCOL, question, SLOT_LIMITS)

    async def _answer_slot(self, peer: str, request: bytes) -> bytes:
        """The answer to a slot question, to several (`{"slots": [...]}`, answered in
        order), or to "do you have this record?"."""
        await self.resumed.wait()  # until then "not done" could be wrong (a restart)
        try:
            asked = decode_dag(request)
        except CodecError:
            return encode_dag({"error": "bad request"})
        if isinstance(asked, dict) and isinstance(asked.get("record"), CID):
            # "Did my record reach you?" - asked by a node back from a crash.
            return encode_dag({"have": self.blocks.store.has(asked["record"])})
        now = mono_ms()
        if isinstance(asked, dict) and isinstance(asked.get("slots"), list):
            slots = asked["slots"]
            if len(slots) > MAX_BATCH:
                return encode_dag({"error": f"more than {MAX_BATCH} slots"})
            return encode_dag({"answers": [self._answer_one(peer, q, now) for q in slots]})
        return encode_dag(self._answer_one(peer, asked, now))

    def _answer_one(self, peer: str, asked: Any, now: int) -> dict[str, Any]:
        """What this node knows of a slot: done here (or being written), and who holds
        valid claims - the asking node among them."""
        try:
            slot = Slot(asked["exec"], asked["name"], asked["attempt"])
        except (KeyError, TypeError, ValueError):
            return {"error": "bad request"}
        replica = self.replicas.get(slot.exec)
        done = (
            slot in self._writing
            or self.book.is_done(slot)
            or slot.exec in self._done
            or (replica is not None and _settled(replica, slot))
        )
        if not done and peer != self.me:
            # Only a node that claimed the slot asks: its question counts as its claim
            # here (its claim envelope may still be on its way), so our own final check
            # before writing sees it. Sequence 0: any real claim of it replaces this.
            self.book.observe(Claim(slot, peer, 0, now + self.settings.lease_ms, 0))
        claims = sorted({c.node for c in self.book.claims(slot) if c.valid_at(now)})
        return {"done": done, "claims": claims}

    async def _flush_builds(
        self, items: Sequence[tuple[Sequence[CID], _RecordWriter]]
    ) -> list[Block | Exception]:
        return await offload.run_sync(self._build, items)

    def _build(
        self, items: Sequence[tuple[Sequence[CID], _RecordWriter]]
    ) -> list[Block | Exception]:
        """Each writer's record on its heads (or why it could not be built), the blocks
        of all of them durable in the store in one `put_many`, not yet heads. In a
        worker thread."""
        records: list[Block | Exception] = []
        blocks: list[Block] = []
        for heads, writer in items:
            try:
                parents = {head: self.ledger.record(head).clock for head in heads}
                more, record = writer.build(parents)
            except Exception as exc:  # this slot fails (`slot.error`), the others go on
                records.append(exc)
                continue
            blocks += [*more, record]
            records.append(record)
        self.blocks.store.put_many(blocks)
        return records

    async def _flush_commits(
        self, items: Sequence[tuple[CID, Sequence[CID], Block]]
    ) -> list[Exception | None]:
        return await offload.run_sync(self._commit_records, items)

    def _commit_records(
        self, items: Sequence[tuple[CID, Sequence[CID], Block]]
    ) -> list[Exception | None]:
        """Make each (exec, expected heads, record) the head of its execution; a record
        whose heads moved meanwhile (a merge) joins them. In a worker thread."""

        def commit(item: tuple[CID, Sequence[CID], Block]) -> None:
            exec, heads, record = item
            if self.ledger.commit_next(exec, heads, _written(record)) is None:
                self.ledger.merge(exec, [record.cid])

        return self._each_in_ledger_batch(items, commit)

    async def _flush_announcements(
        self, items: Sequence[tuple[str, RecordAnnouncement]]
    ) -> list[None]:
        """One envelope per subnet and per RECORDS_INLINE_BYTES of inline blocks."""
        for subnet, announced in _by_subnet(items).items():
            # A record once per flush: a re-announcement of the heads can meet the
            # announcement of the record just written (a `records` body refuses twins).
            bodies = list({b.record: b for b in announced}.values())
            batch: list[RecordAnnouncement] = []
            size = 0
            for body in bodies:
                body_size = sum(len(b.data) for b in body.blocks)
                if batch and size + body_size > RECORDS_INLINE_BYTES:
                    await self._publish_records(subnet, batch)
                    batch, size = [], 0
                batch.append(body)
                size += body_size
            await self._publish_records(subnet, batch)
        return [None for _ in items]

    async def _publish_records(self, subnet: str, batch: Sequence[RecordAnnouncement]) -> None:
        await self._publish(subnet, "exec", batch[0] if len(batch) == 1 else Records(tuple(batch)))

    async def _announce(self, subnet: str, record: Block, blocks: Sequence[Block]) -> None:
        """Announce `record` (with `blocks` inline where they fit), in the next batch."""
        inline = inline_blocks([record, *[b for b in blocks if b.cid != record.cid]])
        body = RecordAnnouncement(record=record.cid, blocks=inline)
        await self._announcements.submit((subnet, body))

    async def _publish(self, subnet: str, kind: TopicKind, body: Any) -> int:
        self._seq += 1
        data = seal_envelope(self.key, subnet=subnet, seq=self._seq, body=body)
        await self.gossip.publish(topic(subnet, kind), data)
        return self._seq

    async def _fetch_submission(self, exec: CID, peers: Sequence[str] | None) -> None:
        """Make the submission's whole DAG (flow, inputs, modules) local. Present blocks
        are not trusted to come with theirs: a submission block arrives inline alone (a
        re-announcement carries only it), and a node holding it without its inputs could
        never fold the execution. The DAG is a few blocks: walking it costs little."""
        await self.blocks.fetch_dag(
            [exec], peers=peers, within=self.settings.fetch_within, skip_present=False
        )

    async def _fetched_submission(
        self, subnet: str, body: SubmissionBody, sender: str
    ) -> Submission:
        """The verified submission a `submission` envelope heard on `subnet` names, its
        blocks stored or fetched from `sender`. StoreError, SubmissionError."""
        await self._store_inline(body.blocks)
        await self._fetch_submission(body.exec, [sender])
        submission = self._verified_submission(body.exec)
        if submission.subnet != subnet:
            raise SubmissionError(
                "wrong_subnet", f"for subnet {submission.subnet}, heard on {subnet}"
            )
        return submission

    # -- rejections (docs/protocol.md, "Rejections") ------------------------------------------

    async def _reject(
        self, subnet: str, exec: CID, sender: str, error: SubmissionError, *, blocks_here: bool
    ) -> None:
        """A submission heard from `sender` refused: remember why, and publish the
        `rejection` if this node is the one to (the decision is `core.rejection`'s)."""
        if not rej.definitive(error.reason, blocks_here=blocks_here):
            return  # nothing every node would agree on: logged only
        message = rej.rejection_message(error.message, error.reason)
        self._remember_rejection(
            exec, rej.KnownRejection(error.reason, message, self.me, wall_ms())
        )
        now = mono_ms()
        alive, members = self._membership(now)
        why_not = rej.why_not_publish(
            exec,
            error.reason,
            me=self.me,
            sender=sender,
            nodes=[n for n in members.get(subnet, ()) if n in alive],
            blocks_here=blocks_here,
            last_ms=self._rejection_sent.get(exec),
            now_ms=now,
        )
        if why_not is None and not self._rejecting.take(now):
            why_not = f"over {rej.PER_S:g} rejections a second"
        log = _log().bind(exec=exec.encode(), reason=error.reason)
        if why_not is not None:
            log.debug("rejection.not_published", why=why_not)
            return
        self._rejection_heard_at(exec, now)
        await self._publish(
            subnet, "flows", RejectionBody(exec=exec, reason=error.reason, message=message)
        )
        self.rejections_published += 1
        log.info("rejection.published", message=message)

    def heard_rejection(self, subnet: str, verified: Verified[Any]) -> None:
        """A `rejection` from the `flows` topic of `subnet`: remembered for `exec.status`
        (advisory: it changes nothing this node does). Only a live member of the subnet
        is listened to."""
        body = verified.body
        if not isinstance(body, RejectionBody) or verified.sender == self.me:
            return
        now = mono_ms()
        log = _log().bind(exec=body.exec.encode(), by=verified.sender, reason=body.reason)
        _alive, members = self._membership(now)
        if verified.sender not in members.get(subnet, ()):
            # debug: anyone can send these, a log line each would be theirs to flood
            log.debug("rejection.ignored", why=f"the sender is not a live member of {subnet}")
            return
        self._rejection_heard_at(body.exec, now)
        self._remember_rejection(
            body.exec, rej.KnownRejection(body.reason, body.message, verified.sender, wall_ms())
        )
        if body.exec in self.replicas:  # valid here: a bug, or a node lying about it
            log.warning("rejection.disputed", message=body.message)
        else:
            log.info("rejection.heard", message=body.message)

    def refusals(self) -> list[tuple[CID, int]]:
        """(execution, when this node learned of its rejection: wall ms), of the
        rejections it remembers."""
        return [(exec, known.at_ms) for exec, known in self.rejections.items()]

    def rejection(self, exec: CID) -> dict[str, str] | None:
        """Why `exec` was refused (`reason`, `message`, `by`), if this node knows."""
        known = self.rejections.get(exec)
        return None if known is None else known.as_json()

    async def wait_rejection(self, exec: CID) -> dict[str, str]:
        """Why `exec` was refused, as soon as this node knows."""
        while (known := self.rejection(exec)) is None:
            await self._rejections_changed.wait()
        return known

    def _remember_rejection(self, exec: CID, rejection: rej.KnownRejection) -> None:
        """The first reason known for `exec` stays, but this node's own wins over a
        peer's (it checked the blocks itself)."""
        known = self.rejections.get(exec)
        if known is None or (known.by != self.me and rejection.by == self.me):
            self.rejections[exec] = rejection
        self.rejections.move_to_end(exec)
        while len(self.rejections) > rej.MAX_KEPT:
            self.rejections.popitem(last=False)
        self._rejections_changed.set()
        self._rejections_changed = trio.Event()

    def _rejection_heard_at(self, exec: CID, now: int) -> None:
        self._rejection_sent[exec] = now
        self._rejection_sent.move_to_end(exec)
        while len(self._rejection_sent) > rej.MAX_KEPT:
            self._rejection_sent.popitem(last=False)


class _Asked:
    """The subnet's answer to a slot question (`ExecService._confirm`: why our record
    must not be written, or None), asked in the background."""

    def __init__(self) -> None:
        self._answered = trio.Event()
        self._reason: str | None = None

    async def ask(
        self,
        confirm: Callable[[Replica, Slot], Awaitable[str | None]],
        replica: Replica,
        slot: Slot,
    ) -> None:
        self._reason = await confirm(replica, slot)
        self._answered.set()

    async def answer(self) -> str | None:
        await self._answered.wait()
        return self._reason


@dataclass
class _RecordWriter:
    """Builds one event's record on the parents `commit_next` finds, keeping the blocks;
    with `then` (the end of the execution that event brings), that event's record on
    top of it: the record returned, `first` the one beneath."""

    exec: CID
    event: eng.Event
    key: SigningKey
    payload: CID | None
    output: bytes | None
    then: eng.Event | None = None
    blocks: list[Block] = field(default_factory=list)
    first: Block | None = None

    def build(self, parents: dict[CID, Mapping[str, int]]) -> tuple[Sequence[Block], Block]:
        blocks, record, written = event_blocks(
            self.exec,
            self.event,
            parents=parents,
            key=self.key,
            payload=self.payload,
            output=self.output,
        )
        self.first = record
        if self.then is not None:
            more, last, _ = event_blocks(
                self.exec, self.then, parents={record.cid: written.clock}, key=self.key
            )
            blocks, record = [*blocks, record, *more], last
        self.blocks = [*blocks, record]
        return blocks, record


def _outcome_blocks(event: eng.Event) -> list[Block]:
    """The blocks an outcome names (its value, its delta): what a validator may fetch."""
    blocks = []
    if event.kind == ev.STEP_COMPLETED:
        blocks.append(dag_block(event.value))
    if event.delta:
        blocks.append(raw_block(event.delta))
    return blocks


def _ending_after(replica: Replica, event: eng.Event) -> eng.Event | None:
    """The `exec.completed`/`exec.failed` event due right after `event`, if it ends the
    execution: written with it, in the same slot (one claim, confirmation, announcement
    and commit less per execution, and the end is known as soon as its last step).
    Bookkeeping every node derives alike, so whoever writes the step may write it;
    the two go out in one announcement, so no node sees the step's record without the
    end (and claims `$finish` for it). None while controls are queued: one of them may
    still change how the execution ends."""
    if replica.controls or event.kind in {ev.EXEC_COMPLETED, ev.EXEC_FAILED}:
        return None
    state = eng.apply(replica.state, event)
    if isinstance(state, eng.Rejection):
        return None
    now = event.ts
    ends = [
        action
        for action in eng.next_actions(state, now)
        if isinstance(action, eng.CompleteExecution | eng.FailExecution)
    ]
    return action_event(ends[0], now) if len(ends) == 1 else None


def _by_subnet(items: Sequence[tuple[str, T]]) -> dict[str, list[T]]:
    """Items grouped by subnet (an envelope is signed for one), in order."""
    grouped: dict[str, list[T]] = {}
    for subnet, item in items:
        grouped.setdefault(subnet, []).append(item)
    return grouped


def _written(
    record: Block,
) -> Callable[[dict[CID, Mapping[str, int]]], tuple[Sequence[Block], Block]]:
    """For `commit_next`: a record built and stored already (its parents were chosen
    when it was built; `commit_next` checks they are still the heads)."""
    return lambda _parents: ([], record)


def _raised(result: Any) -> Any:
    """A batch's result for one item, raised if it is that item's failure."""
    if isinstance(result, Exception):
        raise result
    return result


def _event_now(action: eng.Action) -> Callable[[], eng.Event]:
    """The bookkeeping event of `action`, stamped when it is written."""
    return lambda: action_event(action, wall_ms())


def _decides(replica: Replica, instance: str) -> bool:
    """Instance `instance` of the replica's flow is a decision step (`eng.is_decision`)."""
    parsed = eng.parse_instance(instance)
    step = None if parsed is None else replica.state.index.steps.get(parsed[0])
    return step is not None and eng.is_decision(step)


def _settled(replica: Replica, slot: Slot) -> bool:
    """Whether the replica's ledger already settles the slot (a record of it merged)."""
    if slot.name == START:
        return replica.started
    if slot.name.startswith("$"):  # $finish; $ctl: slots are only known by their queue
        return replica.finished
    instance = replica.state.instances.get(slot.name)
    if instance is None:
        return False  # not reached yet here
    return instance.attempt > slot.attempt or instance.status in ("completed", "failed")


def inline_blocks(blocks: Sequence[Block]) -> tuple[InlineBlock, ...]:
    """The first blocks that fit an envelope; the rest are fetched over bitswap."""
    chosen: list[InlineBlock] = []
    size = 0
    seen: set[CID] = set()
    for block in blocks:
        if len(chosen) == MAX_INLINE or block.cid in seen:
            continue
        if size + len(block.data) > MAX_INLINE_BYTES:
            continue
        seen.add(block.cid)
        size += len(block.data)
        chosen.append(InlineBlock(block.cid, block.data))
    return tuple(chosen)
