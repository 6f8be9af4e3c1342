"""Every ```yaml example in docs/flows.md compiles, and round-trips like the examples."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from qflow_node.core.flow import compile_flow, parse_source
from qflow_node.core.flow.testing import reversed_keys, to_yaml
from qflow_node.flow_loader import ModuleFiles

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGE = (DOCS / "flows.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```yaml\n(.*?)^```$", PAGE, flags=re.MULTILINE | re.DOTALL)


def test_the_page_has_an_example_per_construct() -> None:
    assert len(BLOCKS) >= 19
    text = "\n".join(BLOCKS)
    for kind in ("run", "transform", "validate", "http", "sleep", "wait_for", "approval", "flow",
                 "if", "parallel", "foreach", "retry", "timeout", "on_error", "compensate",
                 "capabilities", "critical", "with", "output"):  # fmt: skip
        assert re.search(rf"^\s*-? ?{kind}:", text, flags=re.MULTILINE), kind


@pytest.mark.parametrize("block", BLOCKS, ids=[re.search(r"name: (\S+)", b)[1] for b in BLOCKS])  # type: ignore[index]
def test_doc_example_compiles_and_round_trips(block: str) -> None:
    modules = ModuleFiles(DOCS)
    compiled = compile_flow(block, syntax="yaml", resolve_module=modules)
    assert compile_flow(block, syntax="yaml", resolve_module=modules).cid == compiled.cid
    value = parse_source(block, "yaml").value
    as_json = json.dumps(reversed_keys(value))
    assert compile_flow(as_json, syntax="json", resolve_module=modules).cid == compiled.cid
    as_yaml = to_yaml(value, comments=True)
    assert compile_flow(as_yaml, syntax="yaml", resolve_module=modules).cid == compiled.cid


def test_the_template_spellings_in_the_doc_are_one_input() -> None:
    (block,) = [b for b in BLOCKS if "name: templates" in b]
    steps: Any = compile_flow(block, resolve_module=ModuleFiles(DOCS)).ir["steps"]
    assert steps[0]["with"] == steps[1]["with"]
    assert steps[0]["with"] == {
        "user": {"first": "inputs.first", "last": '"Lovelace"'},
        "tags": '["x"]',
    }
