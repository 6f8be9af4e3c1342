"""The flow loader: files, local modules, the block store."""

from __future__ import annotations

from pathlib import Path

import pytest

from qflow_node.codec import MAX_BLOCK_SIZE, decode_block, raw_block
from qflow_node.core.flow import MAX_SOURCE_BYTES, FlowCompileError
from qflow_node.flow_loader import FlowFileError, load_flow, syntax_for
from qflow_node.store import MemoryBlockStore

WASM = b"\0asm\x01\0\0\0"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def errors(path: Path, **kwargs: object) -> list[str]:
    with pytest.raises(FlowCompileError) as info:
        load_flow(path, **kwargs)  # type: ignore[arg-type]
    return [str(e) for e in info.value.errors]


def test_modules_resolve_relative_to_the_flow_file(tmp_path: Path) -> None:
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "a.wasm").write_bytes(WASM)
    flow = write(
        tmp_path / "flows" / "f.yaml",
        "name: f\nsteps:\n  - {id: a, run: ../mods/a.wasm}\n  - {id: b, run: ../mods/a.wasm}\n",
    )
    loaded = load_flow(flow)
    assert loaded.modules == {"../mods/a.wasm": raw_block(WASM)}
    assert [s["module"] for s in loaded.compiled.ir["steps"]] == [raw_block(WASM).cid] * 2  # type: ignore[typeddict-item]


def test_with_a_store_everything_is_stored_only_when_the_flow_compiles(tmp_path: Path) -> None:
    (tmp_path / "a.wasm").write_bytes(WASM)
    store = MemoryBlockStore()
    bad = write(
        tmp_path / "bad.yaml",
        "name: f\nsteps:\n  - {id: a, run: ./a.wasm}\n  - {id: b, transform: '1 +'}\n",
    )
    assert len(errors(bad, store=store)) == 1
    assert list(store.iter_cids()) == []
    good = write(tmp_path / "good.yaml", "name: f\nsteps:\n  - {id: a, run: ./a.wasm}\n")
    loaded = load_flow(good, store=store)
    assert set(store.iter_cids()) == {raw_block(WASM).cid, loaded.cid}
    assert decode_block(loaded.cid, store.get(loaded.cid)) == loaded.compiled.ir


def test_module_problems_name_the_path(tmp_path: Path) -> None:
    (tmp_path / "text.wasm").write_bytes(b"hello")
    (tmp_path / "big.wasm").write_bytes(WASM + b"\0" * MAX_BLOCK_SIZE)
    (tmp_path / "dir.wasm").mkdir()
    flow = write(
        tmp_path / "f.yaml",
        "name: f\nsteps:\n"
        "  - {id: a, run: ./missing.wasm}\n"
        "  - {id: b, run: ./text.wasm}\n"
        "  - {id: c, run: ./big.wasm}\n"
        "  - {id: d, run: ./dir.wasm}\n",
    )
    assert errors(flow) == [
        f"3:18: steps[0].run: module file not found: ./missing.wasm ({tmp_path}/missing.wasm)",
        "4:18: steps[1].run: ./text.wasm is not a WebAssembly module (no \\0asm header)",
        f"5:18: steps[2].run: module ./big.wasm is over {MAX_BLOCK_SIZE} bytes, the largest block",
        f"6:18: steps[3].run: cannot read module ./dir.wasm ({tmp_path}/dir.wasm): Is a directory",
    ]


def test_subflows_come_from_the_store(tmp_path: Path) -> None:
    store = MemoryBlockStore()
    child = load_flow(write(tmp_path / "child.yaml", "name: c\nsteps: [{id: x, transform: 1}]\n"))
    parent = write(
        tmp_path / "parent.yaml", f"name: p\nsteps:\n  - {{id: sub, flow: {child.cid.encode()}}}\n"
    )
    assert errors(parent, store=store) == [
        f"3:21: steps[0].flow: sub-flow {child.cid.encode()}: "
        "not in the block store (compile the sub-flow into this repo first)"
    ]
    load_flow(tmp_path / "child.yaml", store=store)
    assert load_flow(parent, store=store).compiled.ir["steps"][0]["flow"] == child.cid  # type: ignore[typeddict-item]
    load_flow(parent)  # without a store: the CID's form only


def test_the_flow_file_itself(tmp_path: Path) -> None:
    with pytest.raises(FlowFileError, match=r"cannot read .*nope\.yaml: No such file or directory"):
        load_flow(tmp_path / "nope.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"name: f\nsteps: [{id: a, transform: '\xe9'}]\n")
    assert errors(tmp_path / "latin1.yaml") == ["2:29: the file is not UTF-8 text"]
    (tmp_path / "big.yaml").write_bytes(b"#" * (MAX_SOURCE_BYTES + 1))
    assert errors(tmp_path / "big.yaml") == [f"1:1: flow file is over {MAX_SOURCE_BYTES} bytes"]


def test_syntax_follows_the_extension(tmp_path: Path) -> None:
    assert [syntax_for(Path(n)) for n in ("a.json", "a.YAML", "a.yml", "a.flow")] == [
        "json",
        "yaml",
        "yaml",
        "auto",
    ]
    text = '{"name": "f", "steps": [{"id": "a", "transform": "1"}]}'
    assert (
        load_flow(write(tmp_path / "a.json", text)).cid
        == load_flow(write(tmp_path / "a.yaml", text)).cid
    )
    assert errors(write(tmp_path / "b.json", "name: f\n")) == [
        "1:1: JSON syntax error: expected a value, got 'n'"
    ]
