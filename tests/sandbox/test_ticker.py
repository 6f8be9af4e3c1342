"""The epoch ticker advances the engine's epoch only while a store runs."""

from __future__ import annotations

import threading

from qflow_node.sandbox.engine import EpochTicker


class CountingEngine:
    """Counts epoch increments (the real engine's epoch cannot be read back; the real
    path - a step's timeout firing - is covered by tests/sandbox/test_limits.py)."""

    def __init__(self) -> None:
        self.ticks = 0
        self.ticked = threading.Event()

    def increment_epoch(self) -> None:
        self.ticks += 1
        self.ticked.set()


def test_an_idle_ticker_does_not_tick_and_an_active_one_does() -> None:
    engine = CountingEngine()
    ticker = EpochTicker(engine, 0.001)  # type: ignore[arg-type]  # counts ticks
    ticker.start()
    try:
        assert not engine.ticked.wait(0.05)  # nothing runs: no tick
        with ticker.active():
            assert engine.ticked.wait(5.0)
        engine.ticked.clear()
        engine.ticked.wait(0.05)  # at most the one tick in flight when `active` ended
        engine.ticked.clear()
        settled = engine.ticks
        assert not engine.ticked.wait(0.05)  # then idle again
        assert engine.ticks == settled
    finally:
        ticker.stop()
    assert not ticker.running


def test_stop_wakes_an_idle_ticker() -> None:
    ticker = EpochTicker(CountingEngine(), 10.0)  # type: ignore[arg-type]  # counts ticks
    ticker.start()
    thread = ticker._thread
    ticker.stop()
    assert thread is not None and not thread.is_alive()
