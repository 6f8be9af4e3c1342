"""The wasmtime engine of a sandbox, its fingerprint, and the shared epoch ticker.

Every setting that makes steps bounded and deterministic is an engine setting, so there
is exactly one place that builds engines. The fingerprint names the engine configuration
in the module cache: an artifact compiled by another configuration (or another wasmtime
or CPU architecture) is never looked up, let alone loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import platform
import threading
from collections.abc import Iterator
from typing import Any, Final

import wasmtime

# Bump when the way Qflow compiles or caches modules changes.
_CACHE_FORMAT: Final = 1


def engine_settings(max_wasm_stack: int) -> dict[str, Any]:
    return {
        # Deterministic CPU bound, and a wall-clock bound driven by the ticker.
        "consume_fuel": True,
        "epoch_interruption": True,
        # Bit-identical float results on every node.
        "cranelift_nan_canonicalization": True,
        "wasm_relaxed_simd_deterministic": True,
        # Shared memory and threads would make steps racy; WASI p1 has no threads anyway.
        "wasm_threads": False,
        "max_wasm_stack": max_wasm_stack,
    }


def build_engine(max_wasm_stack: int) -> tuple[wasmtime.Engine, str]:
    """A new engine and the fingerprint of its configuration."""
    settings = engine_settings(max_wasm_stack)
    config = wasmtime.Config()
    for name, value in settings.items():
        setattr(config, name, value)
    return wasmtime.Engine(config), fingerprint(settings)


def fingerprint(settings: dict[str, Any]) -> str:
    described = {
        "format": _CACHE_FORMAT,
        "wasmtime": importlib.metadata.version("wasmtime"),
        "machine": platform.machine(),
        "system": platform.system(),
        "settings": settings,
    }
    text = json.dumps(described, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class EpochTicker:
    """One thread that advances the engine's epoch every `interval` seconds.

    Each store's deadline is a number of ticks, so one ticker serves every step of the
    engine, however many run at once.
    """

    def __init__(self, engine: wasmtime.Engine, interval: float) -> None:
        self._engine = engine
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Ticks only while a store runs (`active`): an idle ticker woke its thread (and
        # took the GIL from the event loop) 200 times a second for nothing.
        self._busy = threading.Condition()
        self._active = 0

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the epoch ticker is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="qflow-epoch-ticker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        with self._busy:
            self._busy.notify_all()
        thread.join(timeout=max(1.0, 10 * self.interval))

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Around running a store: its deadline counts ticks while this is held."""
        with self._busy:
            self._active += 1
            self._busy.notify_all()
        try:
            yield
        finally:
            with self._busy:
                self._active -= 1

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._busy:
                while self._active == 0 and not self._stop.is_set():
                    self._busy.wait()
            if self._stop.wait(self.interval):
                return
            self._engine.increment_epoch()
