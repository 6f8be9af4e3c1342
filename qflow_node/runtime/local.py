"""The local runner: one execution on this node alone, through the real engine, sandbox,
block store and ledger (no network).

The loop is the one the distributed runtime reuses: ask the pure engine what is due
(`next_actions`), perform it, turn the result into an event, let the engine accept it
(`apply`), then sign the record.

Group commit: blocks (payloads, state deltas, records) accumulate and go to the store in
one `put_many` followed by one heads-index write, before anything whose result cannot be
recomputed (an http step, a wasm step with http.fetch, a sub-flow), before waiting for
time or the outside world, every MAX_PENDING blocks, and at the end. What a crash can
lose is therefore only records of deterministic work, which re-running reproduces
exactly (same inputs, seeds and state, so the same output CIDs).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from qflow_node import clock
from qflow_node.codec import CID, Block, decode_dag
from qflow_node.core import engine as eng
from qflow_node.core.engine import events as ev
from qflow_node.core.engine.records import submission_blocks
from qflow_node.core.engine.writing import action_event, event_blocks
from qflow_node.core.flow import FlowIR, check_ir
from qflow_node.identity.keys import SigningKey
from qflow_node.ledger_store import LedgerStore
from qflow_node.runtime.executors import StepOutcome, run_http, run_wasm
from qflow_node.runtime.grants import LocalAuthority
from qflow_node.sandbox import Sandbox
from qflow_node.sandbox.httpcall import new_client
from qflow_node.store import BlockStore

MAX_PENDING = 256  # blocks held before a commit is forced

Clock = Callable[[], int]  # milliseconds since the epoch
Sleep = Callable[[float], None]  # seconds
Progress = Callable[[eng.Event, eng.ExecState], None]


def wall_clock() -> int:
    return clock.wall_ms()


class RunError(Exception):
    """The execution could not start (its inputs do not match the flow's schema)."""


@dataclass
class Inbox:
    """What the outside world says to this run: events by topic (delivered in order to
    wait_for steps) and the actor keys that approve (or deny) approval steps."""

    events: dict[str, list[Any]] = field(default_factory=dict)
    approvers: dict[str, SigningKey] = field(default_factory=dict)  # did -> key
    deny: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RunResult:
    exec: CID
    status: str
    output: Any
    error: dict[str, Any] | None
    heads: tuple[CID, ...]
    records: int
    state: eng.ExecState
    rejected: tuple[eng.Rejection, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "exec": self.exec.encode(),
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "heads": [h.encode() for h in self.heads],
            "records": self.records,
        }


class LocalRunner:
    def __init__(
        self,
        store: BlockStore,
        ledger: LedgerStore,
        sandbox: Sandbox,
        key: SigningKey,
        *,
        clock: Clock = wall_clock,
        sleep: Sleep = time.sleep,
        inbox: Inbox | None = None,
        max_wait_ms: int | None = None,
        on_event: Progress | None = None,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.sandbox = sandbox
        self.key = key
        self.clock = clock
        self.sleep = sleep
        self.inbox = inbox if inbox is not None else Inbox()
        self.max_wait_ms = max_wait_ms
        self.on_event = on_event
        self.authority = LocalAuthority(key)
        self._http: httpx.Client | None = None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self, flow: CID) -> FlowIR:
        """A compiled flow from the block store, checked as hostile input."""
        return check_ir(decode_dag(self.store.get(flow)))

    def run(self, flow: CID, ir: FlowIR, inputs: Any) -> RunResult:
        """Start an execution of `flow` (compiled as `ir`) and run it to its end (or until
        it waits longer than `max_wait_ms`, or is paused). RunError if it cannot start."""
        now = self.clock()
        submission, inputs_block = submission_blocks(
            flow, inputs, submitter=self.key.did, nonce=os.urandom(16), ts=now
        )
        return _Execution(self, submission.cid, ir).run(
            [submission, inputs_block], flow.encode(), inputs, now
        )

    def execute(self, action: eng.RunStep, exec: CID, state: eng.ExecState) -> StepOutcome:
        """Run one step attempt of `exec` (whose state is `state`) here: a wasm module in
        the sandbox, an HTTP request, or a sub-flow run to its end on this node. Never
        raises: an executor bug fails the step, not the node."""
        kind = action.step["kind"]
        try:
            if kind == "run":
                return run_wasm(
                    self.sandbox,
                    action,
                    exec_id=exec,
                    vars_update=state.vars_update(),
                    authority=self.authority,
                )
            if kind == "http":
                return run_http(self.http(), action, exec_id=exec, authority=self.authority)
            return self._subflow(action)
        except Exception as exc:  # an executor bug must fail the step, not the node
            return StepOutcome.failed("internal", f"{type(exc).__name__}: {exc}")

    def _subflow(self, action: eng.RunStep) -> StepOutcome:
        step = action.step
        assert step["kind"] == "flow"
        ir = self.load(step["flow"])
        try:
            child = self.run(step["flow"], ir, action.input)
        except RunError as exc:
            return StepOutcome.failed("subflow", f"sub-flow {step['flow'].encode()}: {exc}")
        if child.status != "completed":
            message = (child.error or {}).get("message", child.status)
            return StepOutcome.failed("subflow", f"sub-flow {child.exec.encode()}: {message}")
        return StepOutcome.ok(child.output)

    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = new_client()
        return self._http


class _Execution:
    def __init__(self, runner: LocalRunner, exec: CID, ir: FlowIR) -> None:
        self.runner = runner
        self.exec = exec
        self.state = eng.initial(ir, exec.encode())
        self.parents: dict[CID, Mapping[str, int]] = {}
        self.pending: list[Block] = []
        self.records = 0
        self.rejected: list[eng.Rejection] = []
        self.answered: set[str] = set()

    def run(self, blocks: list[Block], flow: str, inputs: Any, now: int) -> RunResult:
        started = eng.Event(ev.EXEC_STARTED, ts=now, value={"flow": flow, "inputs": inputs})
        self.pending += blocks
        if not self._push(started, payload=self.exec):
            raise RunError(self.rejected[-1].reason)
        runner = self.runner
        while True:
            now = runner.clock()
            actions = eng.next_actions(self.state, now)
            if not actions:
                break
            progressed = False
            wake: int | None = None
            for action in actions:
                if len(self.pending) >= MAX_PENDING or _has_effects(action):
                    self._commit()
                if isinstance(action, eng.Wake):
                    wake = action.at
                elif isinstance(action, eng.AwaitEvent | eng.AwaitApproval):
                    progressed |= self._answer(action)
                    wake = action.deadline if wake is None else min(wake, action.deadline)
                else:
                    progressed |= self._settle(action)
            if progressed:
                continue
            self._commit()  # about to wait, or done
            if wake is None:
                break  # nothing due and nothing to wait for
            wait = wake - runner.clock()
            if runner.max_wait_ms is not None and wait > runner.max_wait_ms:
                break
            if wait > 0:
                runner.sleep(wait / 1000)
        self._commit()
        state = self.state
        return RunResult(
            self.exec,
            state.status,
            state.output,
            state.error,
            tuple(sorted(self.parents, key=lambda c: c.cid_bytes)),
            self.records,
            state,
            tuple(self.rejected),
        )

    # -- performing actions ----------------------------------------------------------------

    def _settle(self, action: eng.Action) -> bool:
        now = self.runner.clock()
        if isinstance(action, eng.RunStep):
            outcome = self.runner.execute(action, self.exec, self.state)
            now = self.runner.clock()
            if outcome.error is not None:
                return self._push(outcome.event(action, now))
            assert outcome.output is not None
            return self._push(outcome.event(action, now), output=outcome.output)
        event = action_event(action, now)
        return self._push(event)

    def _answer(self, action: eng.AwaitEvent | eng.AwaitApproval) -> bool:
        inbox = self.runner.inbox
        now = self.runner.clock()
        if isinstance(action, eng.AwaitEvent):
            queue = inbox.events.get(action.topic, [])
            while queue:
                value = {"topic": action.topic, "event": queue.pop(0)}
                event = eng.Event(ev.EVENT_RECEIVED, action.instance, 1, now, value)
                if self._push(event):
                    return True
            return False
        for did in action.approvers:
            if did in inbox.approvers and did not in action.granted:
                kind = ev.APPROVAL_DENIED if did in inbox.deny else ev.APPROVAL_GRANTED
                event = eng.Event(kind, action.instance, 1, now, None, actor=did)
                if self._push(event):
                    return True
        return False

    # -- events to records -------------------------------------------------------------------

    def _push(
        self, event: eng.Event, *, payload: CID | None = None, output: bytes | None = None
    ) -> bool:
        result = eng.apply(self.state, event)
        if isinstance(result, eng.Rejection):
            self.rejected.append(result)
            return False
        self.state = result
        blocks, block, record = event_blocks(
            self.exec,
            event,
            parents=self.parents,
            key=self.runner.key,
            payload=payload,
            output=output,
        )
        self.pending += blocks
        self.pending.append(block)
        self.parents = {block.cid: record.clock}
        self.records += 1
        if self.runner.on_event is not None:
            self.runner.on_event(event, self.state)
        return True

    def _commit(self) -> None:
        if self.pending:
            self.runner.ledger.commit(self.exec, self.pending, list(self.parents))
            self.pending = []


def _has_effects(action: eng.Action) -> bool:
    """Whether performing the action does something a re-run would not reproduce."""
    if not isinstance(action, eng.RunStep):
        return False
    step = action.step
    if step["kind"] != "run":
        return True  # http, sub-flow
    return any(cap["op"] == "http.fetch" for cap in step["capabilities"])
