"""Chaos: Byzantine validators and coordinators against critical steps, on node processes.

    .venv/bin/python -m chaos.byzantine

Five `qflow node run` processes, each a validator of a 3-of-5 subnet policy dealt with
`qflow subnet create` (validator i + 1 is node ni); the flow is
`examples/flows/payment.yaml` with a retry on its critical step `pay`. Byzantine nodes
are real nodes started through `chaos/byzantine_node.py`, which patches one behaviour
in. On one cluster, n3 a liar and n4 stalled to begin with:

1. The submission is picked so that the liar n3 coordinates `pay`'s first attempt (it
   computes a wrong result for every critical step): the honest validators'
   re-executions disagree, so they sign abort, never its result; the abort-certified
   failure it must write reports it, and the retry commits the honest result.
2. n3 killed, n4 stalled (it never answers a vote): n - t = 2 validators out, and a
   flow still commits; n4 signed nothing for it.
3. n3 comes back forging everything it signs, n4 equivocating (and never coordinating).
   n3 submits a flow of its own: its submission, claims and records are refused by
   every honest node. With n1 and n2 down, n0 coordinates a flow with only n3 and n4
   to vote: no commit; its rounds name n3's forged votes, and it proves n4's
   equivocation (a commit in one round, an abort in the next) with both signed votes
   in a file. Once n1 and n2 are back the flow commits, with one certificate.

4. On a second cluster of five honest nodes, the network splits {n0, n1, n2} | {n3, n4}:
   the majority commits a flow, the minority cannot commit its own.

The lease holders are steered without touching the nodes: a slot's ranking is a hash of
the execution id and the peer ids, so the submission's nonce is chosen (here, before it
is signed) until the wanted node ranks first.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from chaos.cluster import (
    ROOT,
    Cluster,
    LedgerCheck,
    Node,
    converged_ledgers,
    local_cluster,
    qflow,
)
from chaos.partition import PARTITION_CONFIG, partition
from qflow_node.api.client import call
from qflow_node.codec import CID, Block, parse_cid, raw_block
from qflow_node.core.critical import Decision, Lock, verify_certificate
from qflow_node.core.engine.records import json_block
from qflow_node.core.ledger.record import Record
from qflow_node.core.policy import PolicyDocument, load_policy
from qflow_node.core.scheduling import Slot, ranking
from qflow_node.core.submission import NONCE_LEN, build_submission
from qflow_node.crypto import KeySet
from qflow_node.flow_loader import load_flow
from qflow_node.identity.store import load_node_key
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.runtime.critical_service import (
    CRITICAL_LOCKS,
    EQUIVOCATIONS,
    EquivocationProof,
    LockJournal,
)
from qflow_node.runtime.testing import NODE_CMD, NodeProcess
from qflow_node.store import FileBlockStore

TIMEOUT: Final = 90.0
# A wider turn per rank than FAST_CONFIG's: the node steered to rank first for a slot
# claims at once; the next waits this long, ample for that claim to reach it.
CONFIG: Final = PARTITION_CONFIG.replace("delta_ms = 200", "delta_ms = 500")
assert CONFIG != PARTITION_CONFIG
SUBNET: Final = "default"
SPIN: Final = ROOT / "examples" / "steps" / "spin.wasm"
INPUTS: Final = {"rounds": 1000}
# examples/flows/payment.yaml, with a retry: an attempt the validators abort is retried.
FLOW_TEXT: Final = f"""\
name: byzantine-payment
inputs:
  type: object
  required: [rounds]
  properties:
    rounds: {{type: integer, minimum: 0, maximum: 1000000}}
steps:
  - id: quote
    run: {SPIN}
    with: {{rounds: inputs.rounds, label: '"quote"'}}
  - id: pay
    run: {SPIN}
    critical: true
    retry: {{max_attempts: 3, backoff: fixed, delay: 100ms}}
    with: {{rounds: inputs.rounds, label: 'steps.quote.output.digest'}}
output: steps.pay.output
"""


def byzantine(mode: str, *, validator_only: bool = False) -> list[str]:
    """The command that runs `qflow node` with `mode` patched in (`Node.command`)."""
    only = ["--validator-only"] if validator_only else []
    return [sys.executable, "-m", "chaos.byzantine_node", "--mode", mode, *only, "--"]


def deal(nodes: Sequence[Node], out: Path) -> None:
    """The dealer: `qflow subnet create` (3 of 5, validator i + 1 is node i), then each
    node's `[critical]` config names the policy and its sealed share."""
    peers = [load_node_key(RepoPaths(node.repo)).peer_id for node in nodes]
    module = raw_block(SPIN.read_bytes()).cid.encode()
    args = ["subnet", "create", "--subnet", SUBNET, "--threshold", "3", "--module", module]
    args += [arg for peer in peers for arg in ("--validator", peer)]
    done = qflow(*args, "--out", str(out))
    if done.returncode != 0:
        raise RuntimeError(f"qflow subnet create failed: {done.stdout}{done.stderr}")
    for node, peer in zip(nodes, peers, strict=True):
        with (node.repo / "config.toml").open("a", encoding="utf-8") as file:
            policy, share = out / "policy.cbor", out / f"{peer}.share"
            file.write(f'\n[critical]\npolicy = "{policy}"\nshare = "{share}"\n')


# -- facts ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """A record settling one attempt of `pay`, as an honest node holds it."""

    attempt: int
    kind: str  # step.completed | step.failed
    error_kind: str | None
    decision: str | None  # what its certificate certifies: commit | abort
    certified: bool  # the certificate verifies under the group key
    writer: str  # node name
    value: CID | None = None  # the certified outcome's value (a commit)


@dataclass
class Outcome:
    roles: dict[str, str]
    keys: KeySet  # the validators' (the policy's)
    # every phase: flow label -> node -> check, and the certificates of `pay`
    checks: dict[str, dict[str, LedgerCheck]] = field(default_factory=dict)
    certificates: dict[str, set[bytes]] = field(default_factory=dict)
    certified: dict[str, bool] = field(default_factory=dict)
    # 1. the liar
    liar_attempts: list[Attempt] = field(default_factory=list)
    honest_locks_first: set[str] = field(default_factory=set)  # decisions on attempt 1
    liar_lock_first: Decision | None = None  # what the liar signed on attempt 1
    # 2. stalled and offline
    stalled_locks: int = -1  # locks the stalled validator took for the flow's `pay`
    # 3. forged records, claims and votes
    bad_signatures: dict[str, int] = field(default_factory=dict)  # envelope kind -> refused
    forgeries_refused: int = 0  # ledgers the forger announced that honest nodes refused
    forged_votes_named: set[int] = field(default_factory=set)  # by the coordinator
    forger_index: int = 0
    forger_records: int = 0  # records signed by the forger in honest ledgers
    forger_flow_records: int = 0  # records of the forger's own flow on honest nodes
    # 3. equivocation
    paid_short: int = -1  # pay records while only one honest validator was up
    equivocator_index: int = 0
    equivocations: list[dict[str, Any]] = field(default_factory=list)  # the coordinator's
    proof: EquivocationProof | None = None
    proof_path: Path | None = None
    proof_holds: bool = False
    # 4. partition (a cluster of its own)
    paid_by_minority: int = -1  # pay records of the minority's flow on its side
    stops: dict[str, int] = field(default_factory=dict)  # honest nodes' exit codes

    @property
    def problems(self) -> list[str]:
        found = []
        if not self.bad_signatures:
            found.append("no forged envelope was refused")
        if not self.forgeries_refused:
            found.append("no forged ledger was refused")
        if self.forged_votes_named != {self.forger_index}:
            found.append(f"forged votes named: {sorted(self.forged_votes_named)}")
        if self.forger_records or self.forger_flow_records:
            found.append("an honest ledger holds a forged record")
        if self.paid_short or self.paid_by_minority:
            found.append(
                f"paid without a quorum: {self.paid_short} with one honest validator up, "
                f"{self.paid_by_minority} by the minority"
            )
        if not self.proof_holds or {e["validator"] for e in self.equivocations} != {
            self.equivocator_index
        }:
            found.append(f"equivocation not proven: {self.equivocations}")
        for label, checks in self.checks.items():
            for name, check in checks.items():
                if not check.verified or check.status != "completed":
                    found.append(f"{label} on {name}: {check.status} ({check.report})")
                elif check.completions.get("pay") != 1:
                    found.append(f"{label} on {name}: pay completed {check.completions}")
            if len({c.heads for c in checks.values()}) != 1:
                found.append(f"{label}: nodes hold different heads")
            if len(self.certificates.get(label, ())) != 1 or not self.certified.get(label):
                found.append(f"{label}: not exactly one valid certificate")
        if self.stalled_locks != 0:
            found.append(f"the stalled validator took {self.stalled_locks} lock(s)")
        aborted = [a for a in self.liar_attempts if a.decision == "abort" and a.certified]
        if not aborted or self.honest_locks_first != {"abort"}:
            found.append(f"the liar was not outvoted: {self.liar_attempts}")
        found += [f"{name} stopped with {code}" for name, code in self.stops.items() if code]
        return found

    def summary(self) -> str:
        lines = [f"5 validators (3 of 5): {self.roles}"]
        lines.append(
            f"  forged: refused envelopes {self.bad_signatures}, refused ledgers "
            f"{self.forgeries_refused}, forged votes named {sorted(self.forged_votes_named)}, "
            f"forged records kept {self.forger_records + self.forger_flow_records}"
        )
        lines.append(
            f"  pay records without a quorum: {self.paid_short} (n0 with n3, n4), "
            f"{self.paid_by_minority} (the {{n3, n4}} minority)"
        )
        proof = self.proof
        if proof is not None:
            lines.append(
                f"  equivocation: validator {proof.index} signed {proof.first.decision.kind} "
                f"then {proof.second.decision.kind} for {proof.slot.name}/{proof.slot.attempt}; "
                f"proof holds: {self.proof_holds}"
            )
        for label, checks in self.checks.items():
            statuses = sorted({str(c.status) for c in checks.values()})
            pays = sorted({c.completions.get("pay", 0) for c in checks.values()})
            lines.append(
                f"  {label}: {statuses} on {len(checks)} nodes, pay records {pays}, "
                f"certificates {len(self.certificates.get(label, ()))} "
                f"(valid: {self.certified.get(label)})"
            )
        lines.append(f"  stalled validator's locks for its flow: {self.stalled_locks}")
        for a in self.liar_attempts:
            lines.append(
                f"  liar's flow, pay attempt {a.attempt}: {a.kind} ({a.error_kind}) by "
                f"{a.writer}, certificate {a.decision} valid {a.certified}"
            )
        lines.append(
            f"  locks on its first attempt: honest {sorted(self.honest_locks_first)}, "
            f"liar {_describe(self.liar_lock_first)}"
        )
        lines += [f"  problem: {p}" for p in self.problems]
        lines.append(f"  outcome: {'OK' if not self.problems else 'FAILED'}")
        return "\n".join(lines)


# -- the scenario ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scene:
    cluster: Cluster
    policy: PolicyDocument
    flow: Path
    outcome: Outcome


def run(root: Path) -> Outcome:
    flow = root / "byzantine-payment.yaml"
    flow.write_text(FLOW_TEXT, encoding="utf-8")
    (root / "faults").mkdir()
    (root / "partition").mkdir()
    dealt = root / "faults" / "deal"

    def setup(nodes: Sequence[Node]) -> None:
        deal(nodes, dealt)
        nodes[3].command = byzantine("lie")
        nodes[4].command = byzantine("stall")

    with local_cluster(root / "faults", 5, config=CONFIG, setup=setup) as cluster:
        policy = load_policy((dealt / "policy.cbor").read_bytes())
        roles = ["honest", "honest", "honest", "lie", "stall"]
        named = {n.name: r for n, r in zip(cluster.nodes, roles, strict=True)}
        outcome = Outcome(named, policy.keys)
        scene = Scene(cluster, policy, flow, outcome)
        _check_modes(cluster)
        _liar(scene)
        _stalled_and_offline(scene)
        _forge_and_equivocate(scene)
        stops = cluster.stop_all()
        outcome.stops = {n: c for n, c in stops.items() if outcome.roles[n].endswith("honest")}
    # A cluster of its own: after a partition py-libp2p keeps the two sides apart for a
    # while (docs/testing.md, "Byzantine faults"), so nothing may follow it.
    dealt = root / "partition" / "deal"
    with local_cluster(
        root / "partition", 5, config=CONFIG, setup=lambda nodes: deal(nodes, dealt)
    ) as cluster:
        policy = load_policy((dealt / "policy.cbor").read_bytes())
        _partition(Scene(cluster, policy, flow, outcome))
        stops = cluster.stop_all()
        outcome.stops |= {f"partition/{name}": code for name, code in stops.items()}
    return outcome


def _restart(scene: Scene, *changes: tuple[Node, list[str] | None]) -> None:
    """Restart nodes, each with a Byzantine command or honest (None); until the others
    see each of them alive again."""
    cluster = scene.cluster
    since = time.time()
    restarted = [node for node, _ in changes]
    for node, command in changes:
        if node.running:
            cluster.kill(node)
        node.command = command if command is not None else list(NODE_CMD)
        cluster.start(node)
        role = "honest" if command is None else command[command.index("--mode") + 1]
        if not scene.outcome.roles[node.name].endswith(role):
            scene.outcome.roles[node.name] += f", then {role}"
    _check_modes(cluster)
    for node in restarted:
        for other in cluster.running():
            if other not in restarted:
                _wait(cluster, [other], _event("peer.alive", peer=node.peer_id), since=since)


def _forge_and_equivocate(scene: Scene) -> None:
    cluster, policy, flow, outcome = scene.cluster, scene.policy, scene.flow, scene.outcome
    c, h1, h2, forger, equivocator = cluster.nodes
    _restart(
        scene,
        (forger, byzantine("forge")),
        (equivocator, byzantine("equivocate", validator_only=True)),
    )
    outcome.forger_index = _index(policy, forger)
    outcome.equivocator_index = _index(policy, equivocator)
    # The forger's own flow: its submission, claims and records never verify.
    since = time.time()
    own = cluster.submit(forger, flow, INPUTS)
    for kind in ("flows", "exec"):  # the submission; claims and record announcements
        _wait(cluster, [c, h1, h2], _refused_signature(kind), since=since)
    _wait(
        cluster, [c, h1, h2, equivocator], _event("ledger.merge_rejected", announcer=forger.peer_id)
    )
    events = _events(cluster, [c, h1, h2, equivocator])
    outcome.bad_signatures = _bad_signatures(events)
    outcome.forgeries_refused = sum(
        1 for e in events if _event("ledger.merge_rejected", announcer=forger.peer_id)(e)
    )

    # n1 and n2 down: n0 coordinates `pay` with n3 and n4 to vote, and no third honest
    # vote. n0 ranks first for every slot: n4 never takes a lease, but a forger that
    # outranks n0 could claim a slot and, answering n0's slot questions with its claim,
    # keep n0 from writing it (docs/testing.md, "Byzantine faults").
    cluster.kill(h1)
    cluster.kill(h2)

    def first(exec_id: str) -> bool:
        slots = (("$start", 0), ("quote", 1), ("pay", 1))
        return all(_first(exec_id, name, n, cluster.nodes) is c for name, n in slots)

    exec_id = _submit_steered(cluster, c, flow, first)
    slot = f"{exec_id}/pay/1"
    _wait(cluster, [c], _event("critical.invalid_partial", slot=slot))
    _wait(cluster, [c], _event("critical.equivocation", slot=slot))
    outcome.paid_short = sum(_paid(node, exec_id) for node in (c, equivocator))
    _restart(scene, (h1, None), (h2, None))
    honest = [c, h1, h2, equivocator]  # n4 signs twice, but its ledger is honest
    _settled(scene, "n1, n2 back after n4 equivocated", exec_id, honest)

    events = _events(cluster, [c])
    outcome.forged_votes_named = {
        e["validator"] for e in events if e["event"] == "critical.invalid_partial"
    }
    outcome.equivocations = [e for e in events if e["event"] == "critical.equivocation"]
    for report in outcome.equivocations:
        path = Path(report.get("proof") or "")
        if path.parent == RepoPaths(c.repo).ledger / EQUIVOCATIONS:  # where n0 keeps them
            outcome.proof_path = path
            outcome.proof = EquivocationProof.from_bytes(path.read_bytes())
            outcome.proof_holds = outcome.proof.holds(policy.keys)
    for node in honest:
        outcome.forger_records += sum(
            1 for r in _records(node, exec_id) if r.node == forger.peer_id
        )
        outcome.forger_flow_records += len(_records(node, own))


def _partition(scene: Scene) -> None:
    cluster, flow, outcome = scene.cluster, scene.flow, scene.outcome
    majority, minority = cluster.nodes[:3], cluster.nodes[3:]
    for side, other in ((majority, minority), (minority, majority)):
        for node in side:
            partition(node, other)
    for side, other in ((majority, minority), (minority, majority)):
        for node in side:
            for gone in other:
                _wait(cluster, [node], _event("peer.suspect", peer=gone.peer_id))
    theirs = cluster.submit(minority[0], flow, INPUTS)
    ours = cluster.submit(majority[0], flow, INPUTS)
    _settled(scene, "the majority of a partition", ours, majority)
    _wait(cluster, minority, _event("critical.round_failed", exec=theirs))
    outcome.paid_by_minority = sum(_paid(node, theirs) for node in minority)


def _stalled_and_offline(scene: Scene) -> None:
    cluster, flow, outcome = scene.cluster, scene.flow, scene.outcome
    c, h1, h2, offline, stalled = cluster.nodes
    cluster.kill(offline)
    outcome.roles[offline.name] += ", then offline"
    exec_id = cluster.submit(c, flow, INPUTS)
    _settled(scene, "n3 offline, n4 stalled", exec_id, [c, h1, h2])
    slot = Slot(parse_cid(exec_id), "pay", 1)
    outcome.stalled_locks = sum(1 for lock in _locks(stalled) if lock.slot == slot)


def _liar(scene: Scene) -> None:
    cluster, flow, outcome = scene.cluster, scene.flow, scene.outcome
    c, h1, h2, liar, _stalled = cluster.nodes

    # The liar runs `quote` and coordinates `pay`'s first attempt; another node the retry.
    def wanted(exec_id: str) -> bool:
        return (
            _first(exec_id, "quote", 1, cluster.nodes) is liar
            and _first(exec_id, "pay", 1, cluster.nodes) is liar
            and _first(exec_id, "pay", 2, cluster.nodes) is not liar
        )

    exec_id = _submit_steered(cluster, c, flow, wanted)
    _settled(scene, "a liar coordinating", exec_id, [c, h1, h2])
    names = {node.peer_id: node.name for node in cluster.nodes}
    for record in _records(c, exec_id):
        if record.step == "pay" and record.kind in ("step.completed", "step.failed"):
            outcome.liar_attempts.append(_attempt(scene, c, record, names))
    first = Slot(parse_cid(exec_id), "pay", 1)
    outcome.honest_locks_first = {
        lock.decision.kind for node in (c, h1, h2) for lock in _locks(node) if lock.slot == first
    }
    lie = [lock.decision for lock in _locks(liar) if lock.slot == first]
    outcome.liar_lock_first = lie[0] if lie else None


# -- helpers --------------------------------------------------------------------------------


def _attempt(scene: Scene, node: Node, record: Record, names: dict[str, str]) -> Attempt:
    cert = record.certificate
    decision = None if cert is None else cert.decision
    slot = Slot(record.exec, "pay", record.attempt)
    error = _record_value(node, record) if record.kind == "step.failed" else None
    return Attempt(
        record.attempt,
        record.kind,
        error.get("kind") if isinstance(error, dict) else None,
        None if decision is None else decision.kind,
        cert is not None and verify_certificate(cert, scene.policy.keys, SUBNET, slot),
        names.get(record.node, record.node),
        None if decision is None or decision.outcome is None else decision.outcome.value,
    )


def _check_modes(cluster: Cluster) -> None:
    """Every running node started through the wrapper runs its mode (its first line)."""
    for node in cluster.running():
        command = list(node.command)
        if "--mode" in command and node.process is not None:
            node.process.wait_for("byzantine.mode", mode=command[command.index("--mode") + 1])


def _index(policy: PolicyDocument, node: Node) -> int:
    index = policy.index_of(node.peer_id)
    assert index is not None, f"{node.name} is not a validator"
    return index


def _first(exec_id: str, step: str, attempt: int, nodes: Sequence[Node]) -> Node:
    """The node that ranks first for a slot of `exec_id` among `nodes`."""
    order = ranking(Slot(parse_cid(exec_id), step, attempt), [n.peer_id for n in nodes])
    return next(n for n in nodes if n.peer_id == order[0])


def _submit_steered(
    cluster: Cluster, via: Node, flow: Path, wanted: Callable[[str], bool], tries: int = 5000
) -> str:
    """Submit `flow` through `via` as `qflow submit` does, with the first nonce whose
    execution id `wanted` accepts (who ranks first for its slots is a hash of it)."""
    paths = RepoPaths(via.repo)
    key = load_node_key(paths)
    loaded = load_flow(flow, store=FileBlockStore(paths.blocks))  # modules into its store
    inputs = json_block(INPUTS)
    ts = time.time_ns() // 1_000_000
    for n in range(tries):
        submission = build_submission(
            key,
            flow=loaded.cid,
            inputs=inputs.cid,
            nonce=n.to_bytes(NONCE_LEN, "big"),
            ts=ts,
            subnet=SUBNET,
        )
        if wanted(submission.cid.encode()):
            break
    else:
        raise RuntimeError(f"no nonce of {tries} gives the wanted ranking")
    blocks = [submission, loaded.compiled.block, inputs]
    call(paths.api_socket, "submit", {"blocks": [_wire(b) for b in blocks]}, timeout=TIMEOUT)
    return submission.cid.encode()


def _wire(block: Block) -> dict[str, str]:
    return {"cid": block.cid.encode(), "data_b64": base64.b64encode(block.data).decode("ascii")}


def _settled(scene: Scene, label: str, exec_id: str, nodes: Sequence[Node]) -> None:
    """Wait until `nodes` hold the same completed ledger of `exec_id`; note the checks
    and the certificates of its `pay`."""
    cluster, outcome = scene.cluster, scene.outcome
    outcome.checks[label] = converged_ledgers(cluster, nodes, exec_id, TIMEOUT, completed=True)
    certificates, certified = set(), True
    for node in nodes:
        for record in _records(node, exec_id):
            cert = record.certificate
            if record.step == "pay" and record.kind == "step.completed" and cert is not None:
                certificates.add(cert.sig)
                slot = Slot(record.exec, "pay", record.attempt)
                certified &= verify_certificate(cert, scene.policy.keys, SUBNET, slot)
    outcome.certificates[label], outcome.certified[label] = certificates, certified


def _records(node: Node, exec_id: str) -> list[Record]:
    paths = RepoPaths(node.repo)
    ledger = LedgerStore(FileBlockStore(paths.blocks), paths)
    exec = parse_cid(exec_id)
    if not ledger.heads(exec):
        return []
    return [record for _cid, record in ledger.replay(exec)]


def _record_value(node: Node, record: Record) -> Any:
    """The record's payload: the JSON of its value (a failure's {kind, message})."""
    return json.loads(FileBlockStore(RepoPaths(node.repo).blocks).get(record.payload))


def _paid(node: Node, exec_id: str) -> int:
    return sum(1 for r in _records(node, exec_id) if r.step == "pay" and r.kind == "step.completed")


def _locks(node: Node) -> list[Lock]:
    return LockJournal(RepoPaths(node.repo).ledger / CRITICAL_LOCKS).load()


def _describe(decision: Decision | None) -> str:
    if decision is None:
        return "none"
    if decision.outcome is None:
        return "abort"
    return f"commit of value {decision.outcome.value}"


def _event(name: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items())


def _refused_signature(kind: str) -> Callable[[dict[str, Any]], bool]:
    """Matches the periodic `envelope.rejected` counts once they hold envelopes of the
    topic `kind` whose signature did not verify."""

    def match(event: dict[str, Any]) -> bool:
        counts = event.get("counts") if event.get("event") == "envelope.rejected" else None
        return isinstance(counts, dict) and f"{kind}/bad_signature" in counts

    return match


def _bad_signatures(events: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The most forged envelopes any honest node refused, by topic kind."""
    most: Counter[str] = Counter()
    for event in events:
        counts = event.get("counts") if event.get("event") == "envelope.rejected" else None
        for key, count in (counts if isinstance(counts, dict) else {}).items():
            if key.endswith("/bad_signature"):
                kind = key.removesuffix("/bad_signature")
                most[kind] = max(most[kind], count)
    return dict(most)


def _wait(
    cluster: Cluster,
    nodes: Sequence[Node],
    match: Callable[[dict[str, Any]], bool],
    *,
    since: float = 0.0,
) -> dict[str, Any]:
    """The first event of one of `nodes` (this run of them) that `match` accepts."""
    processes = {node.process for node in nodes}

    def accept(process: NodeProcess, event: dict[str, Any]) -> bool:
        return process in processes and match(event)

    return cluster.processes.wait_any(accept, TIMEOUT, since=since)[1]


def _events(cluster: Cluster, nodes: Sequence[Node]) -> list[dict[str, Any]]:
    """Every event `nodes` logged (their current runs)."""
    processes = [node.process for node in nodes if node.process is not None]
    with cluster.processes.changed:
        return [dict(e) for p in processes for e in p.events]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep", type=Path, help="run in this (new) directory and keep it: repos, node logs"
    )
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        outcome = run(args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="qflow-chaos-") as tmp:
            outcome = run(Path(tmp))
    print(outcome.summary())
    return 0 if not outcome.problems else 1


if __name__ == "__main__":
    sys.exit(main())
