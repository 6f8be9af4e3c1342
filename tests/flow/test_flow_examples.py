"""Every flow in examples/flows/ compiles, and round-trips: compile → CID → compile
again gives the same CID, as does the same flow rewritten (JSON, other key order,
comments, another YAML layout); the stored block decodes to the IR."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qflow_node.codec import decode_block, iter_links, parse_cid
from qflow_node.core.flow import Syntax, compile_flow, parse_source, step_index, subflow_links
from qflow_node.core.flow.testing import reversed_keys, to_yaml
from qflow_node.flow_loader import ModuleFiles, load_flow, syntax_for
from qflow_node.store import MemoryBlockStore

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "flows"
FLOWS = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".json"))


def rewrites(path: Path) -> dict[str, str]:
    """The same flow written five other ways."""
    value = parse_source(path.read_text(encoding="utf-8"), syntax_for(path)).value
    return {
        "json": json.dumps(value, ensure_ascii=False),
        "json reversed": json.dumps(reversed_keys(value), indent="\t"),
        "yaml": to_yaml(value),
        "yaml reversed, comments": to_yaml(reversed_keys(value), comments=True),
        "yaml flow style": "# JSON is YAML too\n" + json.dumps(value, indent=1) + "\n",
    }


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.name)
def test_example_round_trips(path: Path) -> None:
    first = load_flow(path)
    assert load_flow(path).cid == first.cid
    assert decode_block(first.cid, first.compiled.block.data) == first.compiled.ir
    for how, text in rewrites(path).items():
        syntax: Syntax = "json" if how.startswith("json") else "yaml"
        again = compile_flow(text, syntax=syntax, resolve_module=ModuleFiles(path.parent))
        assert again.cid == first.cid, how


def test_the_json_example_is_the_yaml_example() -> None:
    assert load_flow(EXAMPLES / "greet.json").cid == load_flow(EXAMPLES / "greet.yaml").cid


def test_subflow_example_names_the_current_greet_cid() -> None:
    greet = load_flow(EXAMPLES / "greet.yaml").cid
    sub = load_flow(EXAMPLES / "subflow.yaml").compiled.ir
    assert subflow_links(sub) == [greet, greet], "update the CID in subflow.yaml and docs/flows.md"


def test_compile_into_a_store_keeps_modules_and_subflows_reachable() -> None:
    store = MemoryBlockStore()
    greet = load_flow(EXAMPLES / "greet.yaml", store=store)
    sub = load_flow(EXAMPLES / "subflow.yaml", store=store)
    order = load_flow(EXAMPLES / "order-processing.yaml", store=store)
    assert set(order.modules) == {
        "../steps/transform.wasm",
        "../steps/aggregate.wasm",
        "../steps/fetch_store.wasm",
    }
    for loaded in (greet, sub, order):
        assert store.has(loaded.cid)
        for link in iter_links(loaded.compiled.ir):
            assert store.has(link)
    module = (EXAMPLES.parent / "steps" / "transform.wasm").read_bytes()
    assert store.get(order.modules["../steps/transform.wasm"].cid) == module


def test_order_processing_uses_every_promised_construct() -> None:
    nodes: dict[str, Any] = step_index(load_flow(EXAMPLES / "order-processing.yaml").compiled.ir)
    kinds = {node["kind"] for node in nodes.values()}
    assert kinds >= {
        "validate",
        "run",
        "if",
        "approval",
        "transform",
        "parallel",
        "http",
        "foreach",
    }
    assert nodes["reserve"]["join"] == 2
    assert nodes["labels"]["max_parallel"] == 4
    assert nodes["total"]["retry"]["max_attempts"] == 3
    assert nodes["confirm"]["on_error"] == "compensate"
    assert {sid for sid, node in nodes.items() if node["compensate"] is not None} == {
        "charge",
        "stock_level",
    }
    assert sorted(nodes) == sorted(
        [
            "check_order", "customer", "total", "approval_gate", "manager_approval",
            "auto_approval", "reserve", "charge", "charge/compensate", "stock_level",
            "stock_level/compensate", "labels", "label", "confirm",
        ]
    )  # fmt: skip


def test_every_construct_has_a_small_example() -> None:
    kinds: set[str] = set()
    for path in FLOWS:
        if path.stem != "order-processing":
            kinds |= {n["kind"] for n in step_index(load_flow(path).compiled.ir).values()}
    assert kinds == {
        "run", "transform", "validate", "http", "sleep", "wait_for", "approval", "flow",
        "if", "parallel", "foreach",
    }  # fmt: skip
    assert parse_cid("bafyreidy63ak75ge5w3uujyzmic5pe6ycij6fpzh4sszncacdth4stmcmq")
