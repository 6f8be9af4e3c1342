"""The subnet policy: the module whitelist is checked before anything is read or
compiled; limits parse as flow authors write them."""

from __future__ import annotations

import pytest

from qflow_node.codec import CID, raw_block
from qflow_node.sandbox import (
    FailureKind,
    Limits,
    Sandbox,
    SubnetPolicy,
    parse_duration,
    parse_size,
)
from qflow_node.sandbox.testing import command
from qflow_node.store import MemoryBlockStore

OK = command("")


class RecordingStore(MemoryBlockStore):
    def __init__(self) -> None:
        super().__init__()
        self.read: list[CID] = []

    def get(self, cid: CID) -> bytes:
        self.read.append(cid)
        return super().get(cid)


def test_module_outside_the_whitelist_is_refused_before_compilation() -> None:
    blocks = RecordingStore()
    allowed, other = raw_block(OK), raw_block(command("", output=b"[]"))
    blocks.put_many([allowed, other])
    policy = SubnetPolicy(allowed_modules=frozenset({allowed.cid}))
    with Sandbox(blocks, policy=policy) as sandbox:
        result = sandbox.run(other.cid, b"{}")
        assert result.failure is not None
        assert (result.failure.kind, result.failure.message) == (
            FailureKind.MODULE_NOT_ALLOWED,
            f"module {other.cid.encode()} is not in this subnet's whitelist of step modules",
        )
        assert blocks.read == []  # never read, so never compiled
        assert sandbox.preload(other.cid) == result.failure
        assert blocks.read == []
        assert sandbox.run(allowed.cid, b"{}").output == b"{}"
        assert blocks.read == [allowed.cid]


def test_even_garbage_outside_the_whitelist_is_just_not_allowed() -> None:
    blocks = MemoryBlockStore()
    garbage = raw_block(b"\x00asm\x01\x00\x00\x00not wasm")
    blocks.put(garbage)
    with Sandbox(blocks, policy=SubnetPolicy(allowed_modules=frozenset())) as sandbox:
        result = sandbox.run(garbage.cid, b"{}")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.MODULE_NOT_ALLOWED


def test_the_whitelist_can_change_but_not_the_stack() -> None:
    blocks = MemoryBlockStore()
    block = raw_block(OK)
    blocks.put(block)
    with Sandbox(blocks, policy=SubnetPolicy(allowed_modules=frozenset())) as sandbox:
        assert sandbox.preload(block.cid) is not None
        sandbox.set_policy(SubnetPolicy(allowed_modules=frozenset({block.cid})))
        assert sandbox.preload(block.cid) is None
        assert sandbox.run(block.cid, b"{}").ok
        with pytest.raises(ValueError, match="max_wasm_stack is an engine setting"):
            sandbox.set_policy(SubnetPolicy(max_wasm_stack=1 << 20))


def test_preload_reports_invalid_modules() -> None:
    blocks = MemoryBlockStore()
    bad = raw_block(b"not wasm at all")
    blocks.put(bad)
    with Sandbox(blocks) as sandbox:
        failure = sandbox.preload(bad.cid)
    assert failure is not None
    assert failure.kind is FailureKind.INVALID_MODULE


def test_dag_cbor_cids_are_not_modules() -> None:
    from qflow_node.codec import dag_block

    blocks = MemoryBlockStore()
    block = dag_block({"not": "a module"})
    blocks.put(block)
    with Sandbox(blocks) as sandbox:
        result = sandbox.run(block.cid, b"{}")
    assert result.failure is not None
    assert result.failure.message.endswith("step modules are raw blocks (CID codec 0x55)")


@pytest.mark.parametrize(
    ("text", "size"),
    [("65536", 65536), ("64MiB", 64 << 20), ("64 MiB", 64 << 20), ("512KiB", 512 << 10),
     ("1GB", 10**9), ("1.5KiB", 1536), ("2m", 2_000_000), ("7b", 7)],
)  # fmt: skip
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "-1", "64XB", "0.5B", "1e9"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2.0), ("500ms", 0.5), ("1.5", 1.5), ("1m", 60.0), ("3 min", 180.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "2h", "-1s", "fast"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_limits_describe_themselves() -> None:
    limits = Limits(fuel=1_000_000, memory=64 << 20, timeout=0.25, output=1536)
    assert [limits.describe(n) for n in ("fuel", "memory", "timeout", "output")] == [
        "1,000,000", "64 MiB", "250 ms", "1.5 KiB",
    ]  # fmt: skip
