"""schemas/dkg-plan.v1.json and schemas/dkg-message.v1.json accept what the code writes
(plans; every kind of envelope a real ceremony sends; answers) and refuse broken ones the
parsers refuse too; their bounds are the parsers'."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from qflow_node.codec import RAW, cid_for, decode_dag
from qflow_node.codec.block import encode_dag
from qflow_node.codec.dagjson import parse_dag_json, to_dag_json
from qflow_node.core.dkg import Answer, DkgPlan, MessageError, PlanError, decode_envelope
from qflow_node.core.dkg import plan as plan_module
from qflow_node.core.dkg.testing import Network, WrongShare, ceremonies, make_plan, node_keys
from qflow_node.crypto import seeded_rng

ROOT = Path(__file__).resolve().parents[2] / "schemas"
PLAN_SCHEMA = json.loads((ROOT / "dkg-plan.v1.json").read_text(encoding="utf-8"))
MESSAGE_SCHEMA = json.loads((ROOT / "dkg-message.v1.json").read_text(encoding="utf-8"))
PLAN_CHECK = Draft202012Validator(PLAN_SCHEMA)
MESSAGE_CHECK = Draft202012Validator(MESSAGE_SCHEMA)
ANSWER_CHECK = Draft202012Validator(
    {"$ref": f"{MESSAGE_SCHEMA['$id']}#/$defs/answer"},
    registry=Registry().with_resource(
        MESSAGE_SCHEMA["$id"], Resource.from_contents(MESSAGE_SCHEMA)
    ),
)

KEYS = node_keys(6, seed=70)
DID = KEYS[5].did
MODULE = cid_for(b"\0asm", RAW)
FULL = DkgPlan.create(
    subnet="team-1",
    threshold=3,
    validators=[
        (k.peer_id, [f"/ip4/10.0.0.{i}/tcp/4001", "/dns4/v.example/tcp/4001"])
        for i, k in enumerate(KEYS[:5])
    ],
    start_ms=1_800_000_000_000,
    step_ms=2000,
    members=[KEYS[5].peer_id],
    modules=[MODULE],
    capability_authority=[DID],
    rbac={"approver": [DID]},
)
MINIMAL = make_plan(KEYS[:1], 1)


def test_the_schemas_are_valid_2020_12_and_match_the_parsers() -> None:
    for schema in (PLAN_SCHEMA, MESSAGE_SCHEMA):
        Draft202012Validator.check_schema(schema)
    assert set(PLAN_SCHEMA["required"]) == plan_module.PLAN_FIELDS
    props = PLAN_SCHEMA["properties"]
    assert props["type"]["const"] == plan_module.PLAN_TYPE
    assert props["step_ms"]["minimum"] == plan_module.MIN_STEP_MS
    assert props["step_ms"]["maximum"] == plan_module.MAX_STEP_MS
    assert props["start_ms"]["maximum"] == plan_module.MAX_START_MS
    assert props["validators"]["items"]["properties"]["addrs"]["maxItems"] == plan_module.MAX_ADDRS
    payload = MESSAGE_SCHEMA["$defs"]["payload"]
    assert payload["properties"]["type"]["const"] == "qflow/dkg-message"


@pytest.mark.parametrize("plan", [FULL, MINIMAL], ids=["full", "minimal"])
def test_real_plans_validate_and_read_back(plan: DkgPlan) -> None:
    document = json.loads(plan.to_json())
    PLAN_CHECK.validate(document)
    back = DkgPlan.from_json(json.dumps(document))
    assert back == plan and back.cid == plan.cid


def test_list_order_the_policy_sorts_does_not_change_the_plan() -> None:
    document = json.loads(FULL.to_json())
    document["members"] = [*document["members"], KEYS[0].peer_id][::-1]
    plan = DkgPlan.from_json(json.dumps(document))
    assert (
        plan.cid
        == DkgPlan.from_json(json.dumps({**document, "members": sorted(document["members"])})).cid
    )


Mutation = Callable[[dict[str, Any]], None]


def setting(path: tuple[str | int, ...], value: Any) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        target: Any = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = copy.deepcopy(value)

    return mutate


def dropping(name: str) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        del document[name]

    return mutate


BROKEN_PLANS: dict[str, tuple[Mutation, str]] = {
    "unknown field": (setting(("extra",), 1), "plan: unknown field(s)"),
    "missing step": (dropping("step_ms"), "plan: missing field(s) ['step_ms']"),
    "version 2": (setting(("v",), 2), "plan.v: version 2 is not supported"),
    "other type": (setting(("type",), "qflow/subnet-policy"), "plan.type"),
    "subnet upper case": (setting(("subnet",), "Team"), "plan.subnet"),
    "threshold not a majority": (setting(("threshold",), 2), "plan.threshold: with 5"),
    "threshold a string": (setting(("threshold",), "3"), "plan.threshold: expected an int"),
    "no validators": (setting(("validators",), []), "plan.validators: at least one"),
    "validator a did": (setting(("validators", 0, "peer"), DID), "plan.validators[0].peer"),
    "validator twice": (
        setting(("validators", 1, "peer"), KEYS[0].peer_id),
        "plan.validators[1].peer: 12D3",
    ),
    "no addresses": (setting(("validators", 0, "addrs"), []), "plan.validators[0].addrs"),
    "address with p2p": (
        setting(("validators", 0, "addrs", 0), f"/ip4/1.2.3.4/tcp/1/p2p/{KEYS[0].peer_id}"),
        "plan.validators[0].addrs[0]",
    ),
    "step too short": (setting(("step_ms",), 10), "plan.step_ms: 10 is outside"),
    "start zero": (setting(("start_ms",), 0), "plan.start_ms: 0 is outside"),
    "module dag-cbor": (setting(("modules", 0), "bafyrei" + "a" * 52), "plan"),
    "authority a peer id": (
        setting(("capability_authority", 0), KEYS[0].peer_id),
        "plan: the policy it would make is invalid",
    ),
    "role empty": (setting(("rbac", "approver"), []), "plan: the policy it would make is invalid"),
}


SCHEMA_CANNOT = {"threshold not a majority", "validator twice"}


@pytest.mark.parametrize("name", sorted(BROKEN_PLANS))
def test_broken_plans_are_refused(name: str) -> None:
    mutate, message = BROKEN_PLANS[name]
    document = json.loads(FULL.to_json())
    mutate(document)
    # What the schema's description lists as rules it cannot state, the parser alone refuses.
    assert PLAN_CHECK.is_valid(document) is (name in SCHEMA_CANNOT), name
    with pytest.raises(PlanError) as refused:
        DkgPlan.from_json(json.dumps(document))
    assert str(refused.value).startswith(message), str(refused.value)


def sent_envelopes() -> dict[str, dict[str, Any]]:
    """One envelope of each kind (and a relayed one), as a real ceremony sends them, in
    DAG-JSON: party 5 deals party 2 a bad share, so complaints and justifications too."""

    class Cheat(WrongShare):
        justify = "bad"

    plan = make_plan(KEYS[:5], 3)
    parties = ceremonies(plan, KEYS[:5])
    parties[4] = Cheat(plan, KEYS[4], seeded_rng(b"cheat"))
    network = Network(list(parties))
    network.run()
    found: dict[str, dict[str, Any]] = {}
    for _, _, send, answer in network.answers:
        obj = decode_dag(send.data)
        kind = "relay" if len(obj["sigs"]) > 1 else obj["payload"]["msg"]["kind"]
        found.setdefault(kind, json.loads(json.dumps(to_dag_json(obj))))
        found.setdefault(
            f"answer/{answer.status}",
            json.loads(json.dumps(to_dag_json(decode_dag(answer.to_bytes())))),
        )
    return found


SENT = sent_envelopes()


def test_every_kind_of_envelope_a_ceremony_sends_validates_and_reads_back() -> None:
    kinds = {k for k in SENT if not k.startswith("answer/")}
    assert kinds == {
        "dkg/deal",
        "dkg/share",
        "dkg/complaint",
        "dkg/justification",
        "dkg/confirm",
        "relay",
    }
    for kind in kinds:
        MESSAGE_CHECK.validate(SENT[kind])
        data = encode_dag(parse_dag_json(json.dumps(SENT[kind])))
        assert decode_envelope(data).to_bytes() == data, kind


def test_answers_validate() -> None:
    assert {"answer/accepted", "answer/duplicate"} <= set(SENT)
    for answer in (
        *(SENT[k] for k in SENT if k.startswith("answer/")),
        json.loads(json.dumps(to_dag_json(decode_dag(Answer("refused", "x" * 400).to_bytes())))),
    ):
        ANSWER_CHECK.validate(answer)
    assert not ANSWER_CHECK.is_valid({"status": "maybe", "reason": None})


BROKEN_ENVELOPES: dict[str, tuple[str, Mutation]] = {
    "unknown field": ("dkg/complaint", setting(("extra",), 1)),
    "no signatures": ("dkg/complaint", setting(("sigs",), [])),
    "party 0": ("dkg/complaint", setting(("payload", "from"), 0)),
    "short signature": ("dkg/deal", setting(("sigs", 0, "sig"), {"/": {"bytes": "AAAA"}})),
    "plan as string": ("dkg/deal", setting(("payload", "plan"), "bafyrei" + "a" * 52)),
    "unknown kind": ("dkg/complaint", setting(("payload", "msg", "kind"), "dkg/vote")),
    "share of 31 bytes": (
        "dkg/share",
        setting(("payload", "msg", "share"), {"/": {"bytes": "A" * 42}}),
    ),
    "confirm with a raw policy": (
        "dkg/confirm",
        setting(("payload", "msg", "policy"), {"/": MODULE.encode()}),
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN_ENVELOPES))
def test_broken_envelopes_are_refused_by_both(name: str) -> None:
    kind, mutate = BROKEN_ENVELOPES[name]
    document = copy.deepcopy(SENT[kind])
    mutate(document)
    assert not MESSAGE_CHECK.is_valid(document), name
    with pytest.raises(MessageError):
        decode_envelope(encode_dag(parse_dag_json(json.dumps(document))))
