"""The disk cache of compiled modules: reused across sandboxes, never trusted blindly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import wasmtime

from qflow_node.codec import CID
from qflow_node.sandbox import ModuleCache, Sandbox, SubnetPolicy, default_cache_dir
from qflow_node.sandbox.engine import build_engine
from qflow_node.sandbox.testing import INPUT, Modules, command
from qflow_node.store import MemoryBlockStore

ECHO = command(f"(call $out (i32.const {INPUT}) (call $read_input))", output=None)


class CountingStore(MemoryBlockStore):
    """Counts reads of each block: a module read from the store is a module compiled."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[CID, int] = {}

    def get(self, cid: CID) -> bytes:
        self.reads[cid] = self.reads.get(cid, 0) + 1
        return super().get(cid)


def artifact_paths(sandbox: Sandbox, cache_dir: Path, cid: CID) -> tuple[Path, Path]:
    return ModuleCache(cache_dir, sandbox.fingerprint).paths(cid)


def test_compiled_once_then_loaded_from_disk(tmp_path: Path) -> None:
    blocks = CountingStore()
    cid = Modules(blocks).add(ECHO)
    with Sandbox(blocks, cache_dir=tmp_path) as first:
        assert first.run(cid, b"1").output == b"1"
        assert first.run(cid, b"2").output == b"2"
        artifact, sidecar = artifact_paths(first, tmp_path, cid)
    assert blocks.reads == {cid: 1}
    assert sidecar.read_text() == hashlib.sha256(artifact.read_bytes()).hexdigest()
    with Sandbox(blocks, cache_dir=tmp_path) as second:  # a restarted node
        assert second.run(cid, b"3").output == b"3"
    assert blocks.reads == {cid: 1}  # loaded from disk, not compiled again


def test_a_corrupt_artifact_is_recompiled(tmp_path: Path) -> None:
    blocks = CountingStore()
    cid = Modules(blocks).add(ECHO)
    with Sandbox(blocks, cache_dir=tmp_path) as first:
        first.run(cid, b"1")
        artifact, sidecar = artifact_paths(first, tmp_path, cid)
    good = artifact.read_bytes()
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2] ^= 0xFF
    artifact.write_bytes(bytes(corrupt))
    with Sandbox(blocks, cache_dir=tmp_path) as second:
        assert second.run(cid, b"[1]").output == b"[1]"
    assert blocks.reads == {cid: 2}  # the corrupt artifact was not used: recompiled
    assert artifact.read_bytes() == good  # and rewritten
    assert sidecar.read_text() == hashlib.sha256(good).hexdigest()


def test_a_truncated_artifact_or_missing_digest_is_a_miss(tmp_path: Path) -> None:
    blocks = CountingStore()
    cid = Modules(blocks).add(ECHO)
    with Sandbox(blocks, cache_dir=tmp_path) as sandbox:
        sandbox.run(cid, b"1")
        artifact, sidecar = artifact_paths(sandbox, tmp_path, cid)
    artifact.write_bytes(artifact.read_bytes()[:100])
    with Sandbox(blocks, cache_dir=tmp_path) as sandbox:
        assert sandbox.run(cid, b"2").output == b"2"
    sidecar.unlink()
    with Sandbox(blocks, cache_dir=tmp_path) as sandbox:
        assert sandbox.run(cid, b"3").output == b"3"
    assert blocks.reads == {cid: 3}


def test_artifacts_of_another_engine_config_are_not_used(tmp_path: Path) -> None:
    blocks = CountingStore()
    cid = Modules(blocks).add(ECHO)
    with Sandbox(blocks, cache_dir=tmp_path) as default:
        default.run(cid, b"1")
    small_stack = SubnetPolicy(max_wasm_stack=256 * 1024)
    with Sandbox(blocks, cache_dir=tmp_path, policy=small_stack) as other:
        assert other.fingerprint != default.fingerprint
        assert other.run(cid, b"2").output == b"2"
    assert blocks.reads == {cid: 2}  # compiled again for the other configuration
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [default.fingerprint, other.fingerprint]
    )


def test_a_verified_artifact_the_engine_refuses_is_recompiled(tmp_path: Path) -> None:
    # Bytes whose digest matches but which another configuration compiled (here: no fuel
    # metering) must be refused by the engine and recompiled, never run.
    blocks = CountingStore()
    cid = Modules(blocks).add(ECHO)
    foreign = wasmtime.Module(wasmtime.Engine(), ECHO).serialize()
    _, fingerprint = build_engine(SubnetPolicy().max_wasm_stack)
    artifact, sidecar = ModuleCache(tmp_path, fingerprint).paths(cid)
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(foreign)
    sidecar.write_text(hashlib.sha256(foreign).hexdigest())
    with Sandbox(blocks, cache_dir=tmp_path) as sandbox:
        assert sandbox.run(cid, b"7").output == b"7"
    assert blocks.reads == {cid: 1}
    assert artifact.read_bytes() != foreign


def test_an_unwritable_cache_only_costs_compilation(tmp_path: Path) -> None:
    blocks = CountingStore()
    cid = Modules(blocks).add(ECHO)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with Sandbox(blocks, cache_dir=not_a_dir) as sandbox:
        assert sandbox.run(cid, b"1").output == b"1"


def test_default_cache_dir_is_in_the_repo(tmp_path: Path) -> None:
    from qflow_node.repo import RepoPaths

    assert default_cache_dir(RepoPaths(tmp_path)) == tmp_path / "cache" / "wasm"


def test_fingerprint_follows_the_configuration() -> None:
    _, a = build_engine(512 * 1024)
    _, b = build_engine(512 * 1024)
    _, c = build_engine(1024 * 1024)
    assert a == b != c
    assert len(a) == 32
