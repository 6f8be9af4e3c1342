"""schemas/flow.v1.json is the schema the compiler uses, and plain jsonschema agrees
with it: every example validates, and shape errors of the broken corpus are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from qflow_node.core.flow import FLOW_SCHEMA, SCHEMA_ID, parse_source
from qflow_node.flow_loader import syntax_for

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "schemas" / "flow.v1.json"
REGENERATE = (
    ".venv/bin/python -c 'import json; from qflow_node.core.flow import FLOW_SCHEMA; "
    "print(json.dumps(FLOW_SCHEMA, indent=2, ensure_ascii=False))' > schemas/flow.v1.json"
)
VALIDATOR = Draft202012Validator(json.loads(FILE.read_text(encoding="utf-8")))


def test_the_file_is_the_compilers_schema() -> None:
    assert json.loads(FILE.read_text(encoding="utf-8")) == FLOW_SCHEMA, f"regenerate: {REGENERATE}"
    Draft202012Validator.check_schema(FLOW_SCHEMA)
    assert FLOW_SCHEMA["$id"] == SCHEMA_ID == "urn:qflow:schema:flow.v1"
    assert FLOW_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize(
    "path", sorted((ROOT / "examples" / "flows").glob("*.*")), ids=lambda p: p.name
)
def test_examples_validate_with_plain_jsonschema(path: Path) -> None:
    value = parse_source(path.read_text(encoding="utf-8"), syntax_for(path)).value
    assert list(VALIDATOR.iter_errors(value)) == []


@pytest.mark.parametrize(
    "name",
    [
        "unknown-key",
        "wrong-type",
        "foreach-without-items",
        "max-parallel-zero",
        "retry-zero-attempts",
        "unknown-step-kind",
        "bad-did-key",
        "subflow-not-a-cid",
    ],
)
def test_shape_errors_are_schema_errors(name: str) -> None:
    path = ROOT / "tests" / "flow" / "broken" / f"{name}.yaml"
    assert list(VALIDATOR.iter_errors(parse_source(path.read_text(encoding="utf-8")).value)) != []
