"""schemas/subnet-policy.v1.json accepts real policies (as DAG-JSON) and refuses broken ones
that the parser refuses too; its bounds are the parser's."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from qflow_node.codec import RAW, cid_for
from qflow_node.codec.dagjson import parse_dag_json, to_dag_json
from qflow_node.core.policy import POLICY_TYPE, PolicyDocument, PolicyError
from qflow_node.core.policy import document as doc
from qflow_node.crypto import MAX_PARTICIPANTS, dealer_keygen
from qflow_node.identity import SigningKey

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "subnet-policy.v1.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)

PEERS = [SigningKey(bytes([i]) * 32).peer_id for i in range(1, 8)]
DIDS = [SigningKey(bytes([50 + i]) * 32).did for i in range(3)]
MODULE = cid_for(b"\0asm module", RAW)


RNG = random.Random(7).randbytes  # deterministic keys


def make(t: int, n: int, **changes: Any) -> PolicyDocument:
    keys, _ = dealer_keygen(t, n, RNG)
    args: dict[str, Any] = {"subnet": "team-1", "validators": PEERS[:n], "keys": keys}
    args.update(changes)
    return PolicyDocument.create(**args)


FULL = make(
    3,
    4,
    members=PEERS[4:],
    modules=[MODULE],
    capability_authority=DIDS[:2],
    rbac={"approver": DIDS, "admin": [DIDS[0]]},
)
MINIMAL = make(1, 1)
SECOND = FULL.successor(validators=PEERS[:5], keys=dealer_keygen(4, 5, RNG)[0])


def as_json(policy: PolicyDocument) -> dict[str, Any]:
    # Through real JSON text, as another implementation would see it.
    doc_json: dict[str, Any] = json.loads(json.dumps(to_dag_json(policy.to_obj())))
    return doc_json


def test_the_schema_is_valid_2020_12() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["properties"]["type"]["const"] == POLICY_TYPE
    assert set(SCHEMA["required"]) == doc.POLICY_FIELDS


def test_the_schema_bounds_are_the_parsers() -> None:
    props = SCHEMA["properties"]
    assert props["members"]["maxItems"] == doc.MAX_MEMBERS
    assert props["validators"]["maxItems"] == MAX_PARTICIPANTS
    assert props["modules"]["maxItems"] == doc.MAX_MODULES
    assert props["capability_authority"]["maxItems"] == doc.MAX_AUTHORITIES
    assert props["rbac"]["maxProperties"] == doc.MAX_ROLES
    assert props["rbac"]["additionalProperties"]["maxItems"] == doc.MAX_ROLE_MEMBERS
    assert props["rbac"]["propertyNames"]["pattern"] == doc.ROLE_PATTERN.pattern.replace(r"\Z", "$")


@pytest.mark.parametrize("policy", [FULL, MINIMAL, SECOND], ids=["full", "minimal", "successor"])
def test_real_policies_validate_and_read_back(policy: PolicyDocument) -> None:
    document = as_json(policy)
    VALIDATOR.validate(document)
    # The DAG-JSON form is a faithful one: parsed back, it is the same policy (same CID).
    back = PolicyDocument.from_obj(parse_dag_json(json.dumps(document)))
    assert back == policy and back.cid == policy.cid


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


BROKEN: dict[str, Mutation] = {
    "unknown field": setting(("extra",), 1),
    "missing rbac": dropping("rbac"),
    "version 2": setting(("v",), 2),
    "other type": setting(("type",), "qflow/flow"),
    "subnet upper case": setting(("subnet",), "Team"),
    "epoch negative": setting(("epoch",), -1),
    "prev as string": setting(("prev",), "bafyrei" + "a" * 52),
    "prev raw link": setting(("prev",), {"/": MODULE.encode()}),
    "members empty": setting(("members",), []),
    "member a did": setting(("members", 0), DIDS[0]),
    "validator extra field": setting(("validators", 0, "weight"), 1),
    "validator index 0": setting(("validators", 0, "index"), 0),
    "threshold 0": setting(("threshold",), 0),
    "commitment short": setting(("keys", "commitments", 0), {"/": {"bytes": "AAAA"}}),
    "module dag-cbor": setting(("modules", 0), {"/": "bafyrei" + "a" * 52}),
    "authority a peer id": setting(("capability_authority", 0), PEERS[0]),
    "role upper case": setting(("rbac", "Admin"), [DIDS[0]]),
    "role empty": setting(("rbac", "admin"), []),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_policies_are_refused_by_both(name: str) -> None:
    document = as_json(FULL)
    BROKEN[name](document)
    assert not VALIDATOR.is_valid(document), name
    with pytest.raises((PolicyError, ValueError)):
        PolicyDocument.from_obj(parse_dag_json(json.dumps(document)))
