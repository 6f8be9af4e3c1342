"""The properties every run must keep (docs/testing.md, "Invariants").

Continuous checks (`Checker.sample`, every couple of virtual seconds, on every live
node) and final ones (`Checker.final`, once the faults have stopped and the run has
settled). A node's state is read from its real services: the execution service's
replicas and the ledger store on its disk. Certificates are checked as they come too:
the world hands in each one a coordinator obtains (`certified`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import trio

from qflow_node.codec import CID
from qflow_node.core.critical import Certificate, CriticalKeys, Decision, verify_certificate
from qflow_node.core.engine import events as ev
from qflow_node.core.engine.state import TERMINAL
from qflow_node.core.ledger import Record
from qflow_node.core.scheduling import Slot
from qflow_node.ledger_store import LedgerStore, LedgerStoreError
from qflow_node.runtime.replay import ReplayError, replay
from qflow_node.sim.critical import show_decision, show_slot
from qflow_node.sim.node import SimNode

RESULT_KINDS: Final = frozenset(
    {ev.STEP_COMPLETED, ev.STEP_FAILED, ev.EXEC_COMPLETED, ev.EXEC_FAILED}
)

INVARIANTS: Final = {
    "liveness": "every accepted flow ends on every node once the faults stop",
    "one_result": "no step attempt has two different committed results",
    "one_certificate": "no slot has certificates of two decisions (critical steps, decisions)",
    "same_state": "replicas that hold the same records compute the same state",
    "ledger_valid": "every node's ledger of every execution verifies",
    "convergence": "after the heal, every node holds the same heads",
    "killed_launcher": "a flow whose launcher was killed still ends on the survivors",
    "signatures": "no message fails its signature check yet gets through",
    "hygiene": "no node logs an error or dies of an exception",
    "progress": "virtual time moves (no busy loop) and the run ends (no endless wait)",
}


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    at: float  # virtual seconds
    detail: str

    def __str__(self) -> str:
        return f"[{self.invariant}] t={self.at:.3f}s {self.detail}"


def _digest(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(cid: CID) -> str:
    return cid.encode()[-10:]


class Checker:
    def __init__(self, critical: CriticalKeys | None = None) -> None:
        self.critical = critical  # the subnet policy's keys: what certificates verify under
        self.violations: list[Violation] = []
        self.duplicate_records = 0
        self.ended: dict[CID, bool] = {}  # per execution: ended on every node (final)
        # (exec, instance, attempt) -> (status, output/error digest), and who saw it first
        self._results: dict[tuple[CID, str, int], tuple[tuple[str, str], str]] = {}
        # (exec, heads) -> state snapshot of a fold from scratch
        self._folds: dict[tuple[CID, frozenset[CID]], dict[str, Any] | None] = {}
        # slot -> every decision certified for it, and where it was seen first
        self._certified: dict[Slot, dict[Decision, str]] = {}
        self._verified: dict[tuple[Slot, bytes], bool] = {}
        self._walked: set[CID] = set()  # records already looked at (the same on every node)

    def violate(self, invariant: str, detail: str) -> None:
        self.violations.append(Violation(invariant, trio.current_time(), detail))

    # -- continuous ------------------------------------------------------------------------

    def sample(self, nodes: Sequence[SimNode]) -> None:
        for node in nodes:
            services = node.services
            if services is None:
                continue
            self._certificates_in(node.name, services.ledger)
            for exec, replica in list(services.execs.replicas.items()):
                self._results_of(node.name, exec, replica.state.instances.items())
                heads = services.ledger.heads(exec)
                if replica.heads and set(replica.heads) == set(heads):
                    reference = self.reference(services.ledger, exec, heads)
                    if reference is not None and reference != replica.state.snapshot():
                        self.violate(
                            "same_state",
                            f"{node.name}: the replica of {_short(exec)} at heads "
                            f"{[_short(h) for h in heads]} differs from a fold of those records",
                        )

    def _results_of(self, node: str, exec: CID, instances: Iterable[tuple[str, Any]]) -> None:
        for name, inst in instances:
            if inst.status not in ("completed", "failed"):
                continue
            seen = (inst.status, _digest(inst.output if inst.status == "completed" else inst.error))
            key = (exec, name, inst.attempt)
            first = self._results.setdefault(key, (seen, node))
            if first[0] != seen:
                self.violate(
                    "one_result",
                    f"{_short(exec)} {name} attempt {inst.attempt}: {node} sees {seen}, "
                    f"{first[1]} saw {first[0]}",
                )
                self._results[key] = (seen, node)  # report each flip once

    # -- one_certificate -------------------------------------------------------------------

    def certified(self, where: str, slot: Slot, cert: Certificate, *, obtained: bool) -> None:
        """A certificate seen for `slot`: one a coordinator obtained (`obtained`), or one in
        a record. Only one that verifies under the group key counts as a certificate (the
        replicas refuse the others), but a coordinator must never obtain one that does
        not."""
        if not self._verifies(slot, cert):
            if obtained:
                self.violate(
                    "one_certificate",
                    f"{where} obtained a certificate of {show_slot(slot)} that does not verify "
                    "under the group key",
                )
            return
        seen = self._certified.setdefault(slot, {})
        if cert.decision in seen:
            return
        if seen:
            earlier = ", ".join(f"{show_decision(d)} (first {w})" for d, w in seen.items())
            self.violate(
                "one_certificate",
                f"{show_slot(slot)}: {where} holds a certificate of "
                f"{show_decision(cert.decision)}, but {earlier} was certified too",
            )
        seen[cert.decision] = where

    def _verifies(self, slot: Slot, cert: Certificate) -> bool:
        if self.critical is None or cert.policy != self.critical.policy:
            return False
        key = (slot, cert.sig)
        if key not in self._verified:
            critical = self.critical
            self._verified[key] = verify_certificate(cert, critical.keys, critical.subnet, slot)
        return self._verified[key]

    def _certificates_in(self, node: str, ledger: LedgerStore) -> None:
        """Every certificate in the records of `node`'s ledger not looked at before."""
        for exec in ledger.executions():
            todo = [head for head in ledger.heads(exec) if head not in self._walked]
            while todo:
                cid = todo.pop()
                if cid in self._walked:
                    continue
                try:
                    record = ledger.record(cid)
                except LedgerStoreError:
                    continue  # not in this store (yet): another node's walk finds it
                self._walked.add(cid)
                todo += [parent for parent in record.prev if parent not in self._walked]
                cert = record.certificate
                if cert is None or record.step is None:
                    continue
                try:
                    slot = Slot(record.exec, record.step, record.attempt)
                except ValueError:
                    continue  # no slot: nothing a certificate could be for
                self.certified(f"{node}'s record {_short(cid)}", slot, cert, obtained=False)

    def reference(
        self, ledger: LedgerStore, exec: CID, heads: Sequence[CID]
    ) -> dict[str, Any] | None:
        """The state a fold from scratch gives for `heads` (cached: records never change)."""
        key = (exec, frozenset(heads))
        if key not in self._folds:
            try:
                self._folds[key] = replay(ledger, exec, critical=self.critical).state.snapshot()
            except ReplayError:
                self._folds[key] = None
        return self._folds[key]

    # -- final -----------------------------------------------------------------------------

    def status(self, ledger: LedgerStore, exec: CID) -> str | None:
        heads = ledger.heads(exec)
        if not heads:
            return None
        snapshot = self.reference(ledger, exec, heads)
        return None if snapshot is None else str(snapshot["status"])

    def settled(self, nodes: Sequence[SimNode], execs: Sequence[CID]) -> bool:
        """Every node up, and for every execution the same heads everywhere, ended."""
        for exec in execs:
            heads: set[frozenset[CID]] = set()
            for node in nodes:
                if node.services is None:
                    return False
                ledger = node.services.ledger
                heads.add(frozenset(ledger.heads(exec)))
                if self.status(ledger, exec) not in TERMINAL:
                    return False
            if len(heads) != 1:
                return False
        return True

    def final(self, nodes: Sequence[SimNode], execs: Sequence[CID]) -> None:
        for node in nodes:
            if node.services is not None:
                self._certificates_in(node.name, node.services.ledger)
        for exec in execs:
            heads_of: dict[str, frozenset[CID]] = {}
            states: dict[frozenset[CID], dict[str, Any]] = {}
            for node in nodes:
                if node.services is None:
                    self.violate("liveness", f"{node.name} is down at the end")
                    continue
                ledger = node.services.ledger
                heads = ledger.heads(exec)
                heads_of[node.name] = frozenset(heads)
                if not heads:
                    self.violate("liveness", f"{node.name} never started {_short(exec)}")
                    continue
                report = ledger.verify(exec)
                if not report.ok:
                    self.violate("ledger_valid", f"{node.name} {_short(exec)}: {report.failure}")
                    continue
                try:
                    folded = replay(ledger, exec, critical=self.critical)
                except ReplayError as exc:
                    self.violate("ledger_valid", f"{node.name} {_short(exec)}: {exc}")
                    continue
                state = folded.state
                self.ended[exec] = self.ended.get(exec, True) and state.status in TERMINAL
                if state.status not in TERMINAL:
                    pending = sorted(
                        n for n, i in state.instances.items() if i.status not in TERMINAL
                    )
                    self.violate(
                        "liveness",
                        f"{node.name}: {_short(exec)} is {state.status} (open: {pending[:5]})",
                    )
                self._results_of(node.name, exec, state.instances.items())
                self._one_result_per_record(node.name, exec, list(ledger.replay(exec)))
                snapshot = state.snapshot()
                first = states.setdefault(frozenset(heads), snapshot)
                if first != snapshot:
                    self.violate(
                        "same_state", f"{node.name}: {_short(exec)} differs at equal heads"
                    )
            if len(set(heads_of.values())) > 1:
                shown = {n: sorted(_short(h) for h in hs) for n, hs in heads_of.items()}
                self.violate("convergence", f"{_short(exec)}: heads differ: {shown}")

    def _one_result_per_record(
        self, node: str, exec: CID, records: Sequence[tuple[CID, Record]]
    ) -> None:
        results: dict[tuple[str | None, int], tuple[str, CID]] = {}
        for cid, record in records:
            if record.kind not in RESULT_KINDS:
                continue
            key = (record.step, record.attempt)
            result = (record.kind, record.payload)
            first = results.setdefault(key, result)
            if first == result and first is not result:
                self.duplicate_records += node == "n0"  # counted once, on one node
            elif first != result:
                self.violate(
                    "one_result",
                    f"{node}: {_short(exec)} {record.step} attempt {record.attempt} has two "
                    f"results: {first[0]} {_short(first[1])} and {record.kind} "
                    f"{_short(record.payload)} (record {_short(cid)})",
                )
