"""schemas/submission.v1.json accepts real submissions (as DAG-JSON) and refuses broken ones."""

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

from qflow_node.codec import dag_block, decode_dag
from qflow_node.codec.dagjson import to_dag_json
from qflow_node.core.engine.records import json_block
from qflow_node.core.submission import FIELDS, PRIORITIES, build_submission
from qflow_node.identity.keys import SigningKey

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "submission.v1.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
KEY = SigningKey(bytes([5]) * 32)
FLOW = dag_block({"format": "qflow.flow/1"}).cid
INPUTS = json_block({"who": "Ada"}).cid


def test_the_schema_is_valid_2020_12() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(SCHEMA["required"]) == FIELDS
    assert tuple(SCHEMA["properties"]["priority"]["enum"]) == PRIORITIES


def as_json(**overrides: Any) -> dict[str, Any]:
    """A built submission through real DAG-JSON text, as another implementation sees it."""
    args: dict[str, Any] = {"flow": FLOW, "inputs": INPUTS, "nonce": bytes(16), "ts": 1000}
    block = build_submission(KEY, **(args | overrides))
    loaded: dict[str, Any] = json.loads(json.dumps(to_dag_json(decode_dag(block.data))))
    return loaded


def test_built_submissions_validate() -> None:
    VALIDATOR.validate(as_json())
    VALIDATOR.validate(
        as_json(priority="high", deadline=2000, subnet="team-a_1", caps=[b"\x01", b"t" * 1000])
    )


@settings(max_examples=30, deadline=None)
@given(
    ts=st.integers(min_value=0, max_value=2**63 - 2),
    nonce=st.binary(min_size=16, max_size=16),
    priority=st.sampled_from(PRIORITIES),
    caps=st.lists(st.binary(min_size=1, max_size=64), max_size=16),
    subnet=st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,63}\Z"),
)
def test_generated_submissions_validate(
    ts: int, nonce: bytes, priority: str, caps: list[bytes], subnet: str
) -> None:
    doc = as_json(ts=ts, nonce=nonce, priority=priority, caps=caps, subnet=subnet, deadline=ts + 1)
    VALIDATOR.validate(doc)


Mutation = Callable[[dict[str, Any]], None]


def set_field(name: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        doc[name] = copy.deepcopy(value)

    return mutate


def drop(name: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        del doc[name]

    return mutate


def b64(name: str, text: str) -> Mutation:
    return set_field(name, {"/": {"bytes": text}})


BROKEN: dict[str, Mutation] = {
    "unknown field": set_field("extra", 1),
    "missing sig": drop("sig"),
    "missing caps": drop("caps"),
    "format v0": set_field("format", "qflow.submission/0"),
    "flow is raw": set_field("flow", {"/": "bafkrei" + "a" * 52}),
    "inputs is dag-cbor": set_field("inputs", {"/": "bafyrei" + "a" * 52}),
    "flow as string": set_field("flow", "bafyrei" + "a" * 52),
    "submitter is a peer id": set_field("submitter", KEY.peer_id),
    "submitter null": set_field("submitter", None),
    "nonce 15 bytes": b64("nonce", "A" * 20),
    "nonce 17 bytes": b64("nonce", "A" * 23),
    "nonce as string": set_field("nonce", "AAAA"),
    "negative ts": set_field("ts", -1),
    "fractional ts": set_field("ts", 1.5),
    "ts over 2^63": set_field("ts", 2**63),
    "unknown priority": set_field("priority", "urgent"),
    "deadline as string": set_field("deadline", "5m"),
    "bad subnet": set_field("subnet", "Team/A"),
    "empty subnet": set_field("subnet", ""),
    "caps not a list": set_field("caps", {}),
    "cap as string": set_field("caps", ["token"]),
    "empty cap": set_field("caps", [{"/": {"bytes": ""}}]),
    "17 caps": set_field("caps", [{"/": {"bytes": "AQ"}}] * 17),
    "sig 63 bytes": b64("sig", "A" * 84),
    "sig padded": b64("sig", "A" * 85 + "Q=="),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_submissions_do_not_validate(case: str) -> None:
    doc = as_json()
    VALIDATOR.validate(doc)  # the base is valid: the mutation alone breaks it
    BROKEN[case](doc)
    assert not VALIDATOR.is_valid(doc), case
