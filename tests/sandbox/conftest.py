"""Fixtures of the sandbox tests: a started sandbox over a memory block store, and C guest
modules built with zig (`python -m ziglang cc`) once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qflow_node.sandbox import Sandbox
from qflow_node.sandbox.testing import Modules
from qflow_node.store import MemoryBlockStore

GUESTS = Path(__file__).resolve().parent / "guests"
# A cold zig cache compiles wasi-libc first (~20 s); later builds take about a second.
ZIG_TIMEOUT = 300


@pytest.fixture
def blocks() -> MemoryBlockStore:
    return MemoryBlockStore()


@pytest.fixture
def sandbox(blocks: MemoryBlockStore, tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(blocks, cache_dir=tmp_path / "wasm-cache") as sb:
        yield sb


@pytest.fixture
def modules(blocks: MemoryBlockStore) -> Modules:
    return Modules(blocks)


@pytest.fixture(scope="session")
def zig_env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Environment for every zig build of the session: $ZIG_GLOBAL_CACHE_DIR if set, else
    pytest's cache directory `qflow-zig` (warm after the first run), else a session dir."""
    configured = os.environ.get("ZIG_GLOBAL_CACHE_DIR")
    if configured:
        cache_dir = Path(configured)
    else:
        cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
        cache_dir = (
            cache.mkdir("qflow-zig") if cache is not None else tmp_path_factory.mktemp("zig")
        )
    return {**os.environ, "ZIG_GLOBAL_CACHE_DIR": str(cache_dir)}


@pytest.fixture(scope="session")
def c_guests(tmp_path_factory: pytest.TempPathFactory, zig_env: dict[str, str]) -> dict[str, bytes]:
    """Every tests/sandbox/guests/*.c built to a wasm32-wasi command module, by stem."""
    out_dir = tmp_path_factory.mktemp("guests")
    env = {**zig_env, "ZIG_LOCAL_CACHE_DIR": zig_env["ZIG_GLOBAL_CACHE_DIR"]}

    def build(source: Path) -> tuple[str, bytes]:
        target = out_dir / f"{source.stem}.wasm"
        command = [
            sys.executable, "-m", "ziglang", "cc", "-target", "wasm32-wasi", "-O2", "-s",
            "-Wl,-z,stack-size=65536", str(source), "-o", str(target),
        ]  # fmt: skip
        done = subprocess.run(
            command, env=env, capture_output=True, timeout=ZIG_TIMEOUT, check=False
        )
        assert done.returncode == 0, f"zig cc {source.name} failed:\n{done.stderr.decode()}"
        return source.stem, target.read_bytes()

    sources = sorted(GUESTS.glob("*.c"))
    # The first build fills the zig cache (wasi-libc); the others then run in parallel.
    built = dict([build(sources[0])])
    with ThreadPoolExecutor(max_workers=2) as pool:
        built.update(pool.map(build, sources[1:]))
    return built
