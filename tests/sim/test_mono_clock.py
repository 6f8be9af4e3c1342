"""The monotonic milliseconds every service schedules with."""

from __future__ import annotations

import trio
import trio.testing

from qflow_node.clock import mono_ms


def test_a_wait_until_a_millisecond_ends_reading_that_millisecond() -> None:
    # Found by the simulator (seed 2, 10 nodes, moderate): truncating 16.211 s * 1000
    # gave 16210 ms; the scheduler, woken at its 16211 ms deadline, read 16210 and
    # waited for 16211 again - at once, forever, since virtual time stops exactly there.
    async def main() -> list[int]:
        wrong = []
        for ms in range(1, 30_000, 3):
            await trio.sleep_until(ms / 1000)
            if mono_ms() < ms:
                wrong.append(ms)
        return wrong

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == []
