"""Replay and re-execution of a recorded execution: rebuild its state from the ledger
without running anything, optionally stopping early (time travel), and re-run its
deterministic wasm steps to check each recorded output.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from qflow_node.codec import CID, decode_dag, raw_block
from qflow_node.core import engine as eng
from qflow_node.core.critical import CriticalKeys
from qflow_node.core.engine import events as ev
from qflow_node.core.engine.plan import plan
from qflow_node.core.engine.records import PayloadError, event_of, read_submission
from qflow_node.core.flow import FlowIR, check_ir
from qflow_node.core.ledger import GENESIS_KIND, Record
from qflow_node.ledger_store import LedgerStore
from qflow_node.runtime.executors import run_wasm
from qflow_node.runtime.grants import LocalAuthority
from qflow_node.sandbox import Sandbox


class ReplayError(Exception):
    """The ledger cannot be replayed: invalid, or its first record or flow is unusable."""


@dataclass
class Replay:
    exec: CID
    flow: CID
    ir: FlowIR
    state: eng.ExecState
    applied: list[tuple[CID, Record]] = field(default_factory=list)
    rejected: list[tuple[CID, eng.Rejection]] = field(default_factory=list)
    total: int = 0  # records in the ledger


@dataclass(frozen=True, slots=True)
class Check:
    record: CID
    step: str
    attempt: int
    ok: bool
    detail: str


# Checked flows by CID: a flow block never changes, and checking it (decode, re-compile,
# schema) costs ~5 ms - on every replay of every execution otherwise.
_CHECKED: OrderedDict[CID, FlowIR] = OrderedDict()
_CHECKED_MAX: Final = 256


def checked_flow(ledger: LedgerStore, flow: CID) -> FlowIR:
    """The compiled flow `flow` from the store, checked as hostile input (cached)."""
    ir = _CHECKED.get(flow)
    if ir is None:
        ir = check_ir(decode_dag(ledger.store.get(flow)))
        _CHECKED[flow] = ir
        while len(_CHECKED) > _CHECKED_MAX:
            _CHECKED.popitem(last=False)
    else:
        _CHECKED.move_to_end(flow)
    return ir


def open_flow(ledger: LedgerStore, exec: CID) -> tuple[CID, FlowIR]:
    try:
        submission = read_submission(ledger.store.get(exec))
        flow: CID = submission["flow"]
        return flow, checked_flow(ledger, flow)
    except PayloadError as exc:
        raise ReplayError(f"execution {exec.encode()}: {exc}") from None
    except Exception as exc:
        raise ReplayError(f"the flow of {exec.encode()} cannot be loaded: {exc}") from None


def _subnet_of(ledger: LedgerStore, exec: CID) -> str | None:
    subnet = read_submission(ledger.store.get(exec)).get("subnet")
    return subnet if isinstance(subnet, str) else None


def replay(
    ledger: LedgerStore,
    exec: CID,
    *,
    until_step: str | None = None,
    until_record: CID | None = None,
    reexecute: Sandbox | None = None,
    authority: LocalAuthority | None = None,
    checks: list[Check] | None = None,
    critical: CriticalKeys | None = None,
) -> Replay:
    """Fold the verified records of `exec` in replay order (`critical`: the subnet
    policy's keys critical steps' certificates are checked with).

    `until_step`: stop once that step instance has completed or failed for good;
    `until_record`: stop after that record. With `reexecute`, every recorded completion
    of a deterministic wasm step is re-run first and compared (appended to `checks`).
    """
    try:
        records = list(ledger.replay(exec))
    except Exception as exc:
        raise ReplayError(str(exc)) from None
    if not records or records[0][1].kind != GENESIS_KIND:
        raise ReplayError(f"execution {exec.encode()} has no {GENESIS_KIND} record")
    flow, ir = open_flow(ledger, exec)
    if critical is not None and _subnet_of(ledger, exec) not in (None, critical.subnet):
        critical = None  # another subnet's policy: it certifies nothing here
    state = eng.initial(ir, exec.encode(), critical)
    result = Replay(exec, flow, ir, state, total=len(records))
    for cid, record in records:
        try:
            event = event_of(cid, record, ledger.store.get)
        except PayloadError as exc:
            result.rejected.append((cid, eng.Rejection(str(exc), eng.Event(record.kind))))
            continue
        if reexecute is not None and checks is not None and authority is not None:
            check = _reexecute(
                reexecute, authority, result.state, exec=exec, cid=cid, record=record
            )
            if check is not None:
                checks.append(check)
        applied = eng.apply(result.state, event)
        if isinstance(applied, eng.Rejection):
            result.rejected.append((cid, applied))
            continue
        result.state = applied
        result.applied.append((cid, record))
        if until_record is not None and cid == until_record:
            break
        if until_step is not None:
            inst = applied.instances.get(until_step)
            if inst is not None and inst.status in ("completed", "failed"):
                break
    return result


def _reexecute(
    sandbox: Sandbox,
    authority: LocalAuthority,
    state: eng.ExecState,
    *,
    exec: CID,
    cid: CID,
    record: Record,
) -> Check | None:
    if record.kind != ev.STEP_COMPLETED or record.step is None:
        return None
    actions = plan(state).by_instance.get(record.step, [])
    run = next((a for a in actions if isinstance(a, eng.RunStep)), None)
    if run is None or run.step["kind"] != "run" or run.attempt != record.attempt:
        return None
    if any(c["op"] == "http.fetch" for c in run.step["capabilities"]):
        return None  # reads the network: its recorded result stands, like an http step
    outcome = run_wasm(
        sandbox, run, exec_id=exec, vars_update=state.vars_update(), authority=authority
    )
    if outcome.error is not None:
        detail = f"re-run failed: {outcome.error['kind']}: {outcome.error['message']}"
        return Check(cid, record.step, record.attempt, False, detail)
    assert outcome.output is not None
    output_cid = raw_block(outcome.output).cid
    if output_cid != record.payload:
        detail = f"output {output_cid.encode()} != recorded {record.payload.encode()}"
        return Check(cid, record.step, record.attempt, False, detail)
    delta_cid = raw_block(outcome.delta).cid if outcome.delta else None
    if delta_cid != record.state:
        shown = delta_cid.encode() if delta_cid else "none"
        recorded = record.state.encode() if record.state else "none"
        detail = f"state delta {shown} != recorded {recorded}"
        return Check(cid, record.step, record.attempt, False, detail)
    return Check(cid, record.step, record.attempt, True, f"output {output_cid.encode()}")
