"""Compiled modules on disk, by (module CID, engine fingerprint).

wasmtime trusts the bytes it deserializes (they are machine code), so an artifact is
loaded only if its SHA-256 matches the digest written next to it when Qflow produced it.
A missing, truncated, corrupt or incompatible artifact is a cache miss: the caller
recompiles and the entry is rewritten. Both files are written with `atomic_write`, so a
path always holds a whole file; an artifact is only ever replaced by the same content
(compilation is deterministic), so the file verified is the file deserialized.

Layout: `<root>/<fingerprint>/<cid>.cwasm` and `<cid>.sha256` (hex digest).
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import wasmtime

from qflow_node.codec import CID
from qflow_node.fsio import atomic_write
from qflow_node.log import get_logger
from qflow_node.repo import RepoPaths

log = get_logger("qflow.sandbox.cache")


def default_cache_dir(repo: RepoPaths) -> Path:
    """Where a node keeps compiled modules: `<repo>/cache/wasm`."""
    return repo.root / "cache" / "wasm"


class ModuleCache:
    def __init__(self, root: Path, fingerprint: str) -> None:
        self.dir = Path(root) / fingerprint

    def paths(self, cid: CID) -> tuple[Path, Path]:
        name = cid.encode()
        return self.dir / f"{name}.cwasm", self.dir / f"{name}.sha256"

    def load(self, engine: wasmtime.Engine, cid: CID) -> wasmtime.Module | None:
        """The cached module, or None if there is no trustworthy artifact for it."""
        artifact, sidecar = self.paths(cid)
        try:
            expected = sidecar.read_text(encoding="ascii").strip()
            data = artifact.read_bytes()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("module cache unreadable; recompiling", module=cid.encode(), error=str(exc))
            return None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            log.warning(
                "corrupt compiled module in the cache; recompiling",
                module=cid.encode(),
                path=str(artifact),
                expected_sha256=expected[:64],
                actual_sha256=actual,
            )
            self.discard(cid)
            return None
        try:
            return wasmtime.Module.deserialize_file(engine, str(artifact))
        except wasmtime.WasmtimeError as exc:
            # Verified bytes that this engine still refuses: written by an incompatible
            # engine under our fingerprint (should not happen) or by a wasmtime bug.
            log.warning(
                "cached module refused by the engine; recompiling",
                module=cid.encode(),
                error=str(exc).splitlines()[0],
            )
            self.discard(cid)
            return None

    def store(self, cid: CID, module: wasmtime.Module) -> None:
        """Best effort: a cache that cannot be written only costs a recompile later."""
        artifact, sidecar = self.paths(cid)
        try:
            data = bytes(module.serialize())
            self.dir.mkdir(parents=True, exist_ok=True)
            # Artifact first: a sidecar never names bytes that are not there yet.
            atomic_write(artifact, data, sync_dir=False)
            atomic_write(sidecar, hashlib.sha256(data).hexdigest().encode("ascii"))
        except (OSError, wasmtime.WasmtimeError) as exc:
            log.warning("cannot write the module cache", module=cid.encode(), error=str(exc))

    def discard(self, cid: CID) -> None:
        for path in self.paths(cid):
            with contextlib.suppress(OSError):
                path.unlink()
