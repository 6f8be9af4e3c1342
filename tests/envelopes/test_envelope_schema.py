"""schemas/envelope.v1.json accepts real envelopes (JSON form) and refuses broken ones."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from qflow_node.codec.envelope import KINDS, decode_envelope, json_form
from qflow_node.core.envelopes import Verified, open_envelope

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "envelope.v1.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA)
SUBNET = "dao-1"


def test_the_schema_is_valid_2020_12() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert set(SCHEMA["properties"]["kind"]["enum"]) == KINDS


def documents(sealed: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    out = {}
    for kind, data in sealed.items():
        result = open_envelope(data, subnet=SUBNET)
        assert isinstance(result, Verified)
        # Through real JSON text, as another implementation would see it.
        out[kind] = json.loads(json.dumps(json_form(decode_envelope(data), result.body)))
    return out


def test_real_envelopes_validate(sealed: dict[str, bytes]) -> None:
    docs = documents(sealed)
    assert set(docs) == KINDS
    for doc in docs.values():
        VALIDATOR.validate(doc)
    assert docs["claim"]["body"]["rank"] == 1
    assert [e["exec"]["/"][:7] for e in docs["heads"]["body"]["entries"]] == ["bafyrei"] * 2


Mutation = Callable[[dict[str, Any]], None]


def body_set(**changes: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        doc["body"].update(copy.deepcopy(changes))

    return mutate


def top_set(**changes: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        doc.update(copy.deepcopy(changes))

    return mutate


def manifest_set(**changes: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        doc["body"]["manifest"].update(changes)

    return mutate


def entry_set(**changes: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        doc["body"]["entries"][0].update(copy.deepcopy(changes))

    return mutate


RAW = {"/": "bafkrei" + "a" * 52}
BROKEN: dict[str, tuple[str, Mutation]] = {
    "version 2": ("claim", top_set(v=2)),
    "unknown kind": ("claim", top_set(kind="gossip")),
    "unknown top field": ("claim", top_set(extra=1)),
    "from is a did": ("claim", top_set(**{"from": "did:key:z6Mk" + "a" * 44})),
    "negative seq": ("claim", top_set(seq=-1)),
    "short sig": ("claim", top_set(sig={"/": {"bytes": "AAAA"}})),
    "body of another kind": ("claim", lambda d: d.update(kind="heads")),
    "unknown body field": ("claim", body_set(extra=1)),
    "rank 1024": ("claim", body_set(rank=1024)),
    "lease 0": ("claim", body_set(lease_ms=0)),
    "empty step": ("claim", body_set(step="")),
    "exec raw": ("claim", body_set(exec=RAW)),
    "load 1001": ("heartbeat", manifest_set(load=1001)),
    "tokens negative": ("heartbeat", manifest_set(free_work_tokens=-1)),
    "no subnets": ("heartbeat", body_set(subnets=[])),
    "bad subnet": ("heartbeat", body_set(subnets=["a/b"])),
    "node is a did": ("heartbeat", body_set(node="did:key:z6Mk" + "a" * 44)),
    "no heads": ("heads", entry_set(heads=[])),
    "raw head": ("heads", entry_set(heads=[RAW])),
    "raw exec in an entry": ("heads", entry_set(exec=RAW)),
    "unknown entry field": ("heads", entry_set(extra=1)),
    "no entries": ("heads", body_set(entries=[])),
    "257 entries": ("heads", lambda d: d["body"].update(entries=d["body"]["entries"] * 129)),
    "one execution's old form": ("heads", lambda d: d.update(body=d["body"]["entries"][0])),
    "one claim in claims": ("claims", lambda d: d["body"].update(claims=d["body"]["claims"][:1])),
    "65 claims": ("claims", lambda d: d["body"].update(claims=d["body"]["claims"] * 33)),
    "a bad claim in claims": ("claims", lambda d: d["body"]["claims"][1].update(rank=-1)),
    "one record in records": (
        "records",
        lambda d: d["body"].update(records=d["body"]["records"][:1]),
    ),
    "a raw record in records": ("records", lambda d: d["body"]["records"][1].update(record=RAW)),
    "nine blocks": ("record", lambda d: d["body"].update(blocks=d["body"]["blocks"] * 9)),
    "pause with step": ("control", body_set(action="pause")),
    "approve without step": ("control", body_set(step=None)),
    "actor is a peer id": ("control", lambda d: d["body"].update(actor=d["from"])),
    "short nonce": ("control", body_set(nonce={"/": {"bytes": "AAAA"}})),
    "rejection without message": ("rejection", lambda d: d["body"].pop("message")),
    "rejection message of 513": ("rejection", body_set(message="m" * 513)),
    "rejection message with an escape": ("rejection", body_set(message="a\x1b[2Jb")),
    "rejection reason in capitals": ("rejection", body_set(reason="BAD")),
    "rejection reason a number": ("rejection", body_set(reason=3)),
    "rejection of a raw exec": ("rejection", body_set(exec=RAW)),
    "rejection unknown field": ("rejection", body_set(by="me")),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_envelopes_do_not_validate(sealed: dict[str, bytes], case: str) -> None:
    kind, mutate = BROKEN[case]
    doc = documents(sealed)[kind]
    VALIDATOR.validate(doc)  # the base is valid: the mutation alone breaks it
    mutate(doc)
    assert not VALIDATOR.is_valid(doc), case
