"""schemas/record.v1.json accepts real records (as DAG-JSON) and refuses broken ones."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from qflow_node.codec import dag_block, raw_block
from qflow_node.codec.dagjson import to_dag_json
from qflow_node.core.critical import Decision, Outcome
from qflow_node.core.critical.testing import certify, committee
from qflow_node.core.ledger import KINDS
from qflow_node.core.ledger.testing import KEYS, SUBMISSION, Replica, World
from qflow_node.core.scheduling import Slot

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "record.v1.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_the_schema_is_valid_2020_12() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(SCHEMA["properties"]["kind"]["enum"]) == KINDS


def world_with_every_kind() -> World:
    world = World()
    a, b = Replica(KEYS[0]), Replica(KEYS[1])
    world.append(a)
    state = raw_block(b"crdt update")
    world.put(state)
    for kind in sorted(KINDS - {"exec.started"}):
        world.append(a, kind, state=state.cid if kind == "step.completed" else None)
    world.sync(b, a)
    world.append(b, "timer.fired", step=None)
    world.append(a, "step.failed", step="retry-me", attempt=3)
    world.sync(a, b)
    world.append(a, "exec.completed")  # a merge: two prev links
    return world


def as_json(world: World) -> list[dict[str, Any]]:
    # Through real JSON text, as another implementation would see it.
    return [
        json.loads(json.dumps(to_dag_json(world.records[cid].to_obj()))) for cid in world.appended
    ]


def test_real_records_validate() -> None:
    documents = as_json(world_with_every_kind())
    assert {doc["kind"] for doc in documents} == KINDS
    assert any(len(doc["prev"]) == 2 for doc in documents)
    assert any(doc["state"] is not None for doc in documents)
    for doc in documents:
        VALIDATOR.validate(doc)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.sampled_from(sorted(KINDS - {"exec.started"})), max_size=8),
    st.integers(min_value=0, max_value=2**63 - 1),
)
def test_generated_records_validate(kinds: list[str], ts: int) -> None:
    world = World(ts=ts - 20 if ts > 20 else ts)
    replica = Replica(KEYS[0])
    world.append(replica)
    for kind in kinds:
        world.append(replica, kind)
    for doc in as_json(world):
        VALIDATOR.validate(doc)


def started() -> dict[str, Any]:
    return as_json(world_with_every_kind())[0]


def completed() -> dict[str, Any]:
    documents = as_json(world_with_every_kind())
    return next(d for d in documents if d["kind"] == "step.completed")


Mutation = Callable[[dict[str, Any]], None]


def set_field(name: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        doc[name] = copy.deepcopy(value)

    return mutate


def drop(name: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        del doc[name]

    return mutate


def sig_bytes(text: str) -> Mutation:
    return set_field("sig", {"/": {"bytes": text}})


GOOD_SIG = "A" * 85 + "Q"

BROKEN: dict[str, tuple[Callable[[], dict[str, Any]], Mutation]] = {
    "unknown field": (completed, set_field("extra", 1)),
    "missing ts": (completed, drop("ts")),
    "version 2": (completed, set_field("v", 2)),
    "unknown kind": (completed, set_field("kind", "step.exploded")),
    "exec is raw": (completed, set_field("exec", {"/": "bafkrei" + "a" * 52})),
    "exec as string": (completed, set_field("exec", "bafyrei" + "a" * 52)),
    "cidv0 payload": (completed, set_field("payload", {"/": "Qm" + "a" * 44})),
    "link with extra key": (completed, set_field("payload", {"/": "bafkrei" + "a" * 52, "x": 1})),
    "empty step": (completed, set_field("step", "")),
    "negative attempt": (completed, set_field("attempt", -1)),
    "fractional ts": (completed, set_field("ts", 1.5)),
    "negative ts": (completed, set_field("ts", -1)),
    "ts over 2^63": (completed, set_field("ts", 2**63)),
    "zero clock entry": (completed, set_field("clock", {KEYS[0].peer_id: 0})),
    "empty clock": (completed, set_field("clock", {})),
    "clock key not a peer id": (completed, set_field("clock", {"node-a": 1})),
    "node is a did": (completed, set_field("node", KEYS[0].did)),
    "actor is a peer id": (completed, set_field("actor", KEYS[0].peer_id)),
    "quorum set": (completed, set_field("quorum", {"/": {"bytes": ""}})),
    "sig 63 bytes": (completed, sig_bytes("A" * 84)),
    "sig padded": (completed, sig_bytes(GOOD_SIG + "==")),
    "sig stray bits": (completed, sig_bytes("A" * 85 + "B")),
    "sig as string": (completed, set_field("sig", GOOD_SIG)),
    "duplicate prev": (completed, lambda d: d["prev"].append(d["prev"][0])),
    "step record without step": (completed, set_field("step", None)),
    "exec.started with prev": (started, lambda d: d["prev"].append(d["exec"])),
    "later record without prev": (completed, set_field("prev", [])),
    "exec record with a step": (completed, set_field("kind", "exec.completed")),
    "pause without actor": (
        started,
        lambda d: d.update(kind="exec.paused", prev=[d["exec"]], actor=None),
    ),
    "attempt without step": (
        started,
        lambda d: d.update(kind="exec.failed", prev=[d["exec"]], attempt=1),
    ),
}


def test_the_good_signature_pattern_is_good() -> None:
    doc = completed()
    sig_bytes(GOOD_SIG)(doc)
    VALIDATOR.validate(doc)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_records_do_not_validate(case: str) -> None:
    make, mutate = BROKEN[case]
    doc = make()
    VALIDATOR.validate(doc)  # the base is valid: the mutation alone breaks it
    mutate(doc)
    assert not VALIDATOR.is_valid(doc), case


# -- the quorum certificate of a critical step ---------------------------------------------

GROUP = committee(3, 4)
CRITICAL_SLOT = Slot(SUBMISSION.cid, "pay", 1)


def critical_world() -> World:
    """A commit-certified completion and an abort-certified failure of step `pay`."""
    world = World()
    replica = Replica(KEYS[0])
    world.append(replica)
    value = dag_block({"paid": 10}).cid
    outcome = Outcome(SUBMISSION.cid, "pay", 1, "completed", value)
    aborted = certify(GROUP, CRITICAL_SLOT, Decision.abort())
    world.append(replica, "step.failed", step="pay", attempt=1, quorum=aborted)
    commit = certify(GROUP, CRITICAL_SLOT, Decision.commit(outcome))
    world.append(replica, "step.completed", step="pay", attempt=1, quorum=commit)
    decision = dag_block({"kind": "timer.fired", "actor": None, "value": {"due": 5}}).cid
    decided = Outcome(SUBMISSION.cid, "wait", 1, "decided", decision)
    timeout = certify(GROUP, Slot(SUBMISSION.cid, "wait", 1), Decision.commit(decided))
    world.append(replica, "timer.fired", step="wait", attempt=1, quorum=timeout)
    return world


def certified(kind: str) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        return next(d for d in as_json(critical_world()) if d["kind"] == kind)

    return make


def test_records_with_a_certificate_validate() -> None:
    documents = as_json(critical_world())
    decisions = [d["quorum"]["decision"] for d in documents if d["quorum"]]
    assert decisions == ["abort", "commit", "commit"]
    for doc in documents:
        VALIDATOR.validate(doc)


def set_quorum(change: Callable[[dict[str, Any]], Any]) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        change(doc["quorum"])

    return mutate


CERTIFIED_BROKEN: dict[str, tuple[Callable[[], dict[str, Any]], Mutation]] = {
    "quorum on another kind": (certified("step.completed"), set_field("kind", "step.started")),
    "abort on a completion": (certified("step.failed"), set_field("kind", "step.completed")),
    "commit without outcome": (
        certified("step.completed"),
        set_quorum(lambda q: q.update(outcome=None)),
    ),
    "abort with an outcome": (
        certified("step.completed"),
        set_quorum(lambda q: q.update(decision="abort")),
    ),
    "unknown decision": (certified("step.failed"), set_quorum(lambda q: q.update(decision="veto"))),
    "raw policy": (
        certified("step.failed"),
        set_quorum(lambda q: q.update(policy={"/": "bafkrei" + "a" * 52})),
    ),
    "sig of 64 bytes": (
        certified("step.failed"),
        set_quorum(lambda q: q.update(sig={"/": {"bytes": GOOD_SIG}})),
    ),
    "extra field": (certified("step.failed"), set_quorum(lambda q: q.update(t=3))),
    "outcome missing error": (
        certified("step.completed"),
        set_quorum(lambda q: q["outcome"].pop("error")),
    ),
    "completed with an error": (
        certified("step.completed"),
        set_quorum(lambda q: q["outcome"].update(error='{"kind":"t","message":""}')),
    ),
    "decided without its decision": (
        certified("timer.fired"),
        set_quorum(lambda q: q["outcome"].update(value=None)),
    ),
    "decided with a delta": (
        certified("timer.fired"),
        set_quorum(lambda q: q["outcome"].update(delta=q["outcome"]["value"])),
    ),
    "failed with a value": (
        certified("step.completed"),
        set_quorum(lambda q: q["outcome"].update(status="failed", error="x")),
    ),
}


@pytest.mark.parametrize("case", sorted(CERTIFIED_BROKEN))
def test_broken_certificates_do_not_validate(case: str) -> None:
    make, mutate = CERTIFIED_BROKEN[case]
    doc = make()
    VALIDATOR.validate(doc)
    mutate(doc)
    assert not VALIDATOR.is_valid(doc), case
