"""Steps in many threads at once: each gets its own input, output, limits and failure."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pycrdt

from qflow_node.codec import CID
from qflow_node.sandbox import FailureKind, Limits, Sandbox, StepResult
from qflow_node.sandbox.testing import INPUT, Modules, RuleAuthorizer, command, host_import
from qflow_node.store import MemoryBlockStore

ECHO = command(f"(call $out (i32.const {INPUT}) (call $read_input))", output=None)
LOOP = command("(loop $forever (br $forever))", output=None)
# Echoes its input after storing it in state under "k": state and output must match.
STATEFUL = command(
    f"""(local $n i32)
    (local.set $n (call $read_input))
    (drop (call $state_set (i32.const 1024) (i32.const 1) (i32.const {INPUT}) (local.get $n)))
    (call $out (i32.const {INPUT}) (local.get $n))""",
    imports=[host_import("state_set")],
    data={1024: b"k"},
    output=None,
)
WORKERS = 8
RUNS = 25


class CountingStore(MemoryBlockStore):
    """Counts module reads; a read is a compilation."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self._count_lock = threading.Lock()

    def get(self, cid: CID) -> bytes:
        with self._count_lock:
            self.reads += 1
        return super().get(cid)


def test_parallel_steps_do_not_interfere(sandbox: Sandbox, modules: Modules) -> None:
    echo, loop, stateful = modules.add(ECHO), modules.add(LOOP), modules.add(STATEFUL)
    token = RuleAuthorizer({"state.set": {}})

    def work(worker: int) -> list[tuple[str, bytes, StepResult]]:
        done = []
        for i in range(RUNS):
            payload = b'{"worker": %d, "i": %d}' % (worker, i)
            if i % 5 == 4:
                result = sandbox.run(loop, payload, limits=Limits(fuel=200_000 + worker))
                done.append(("loop", payload, result))
            elif i % 2:
                done.append(("echo", payload, sandbox.run(echo, payload)))
            else:
                result = sandbox.run(stateful, payload, authorizer=token)
                done.append(("state", payload, result))
        return done

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        outcomes = [r for batch in pool.map(work, range(WORKERS), timeout=120) for r in batch]
    assert len(outcomes) == WORKERS * RUNS
    for kind, payload, result in outcomes:
        if kind == "loop":
            assert result.failure is not None
            assert result.failure.kind is FailureKind.OUT_OF_FUEL
            worker = int(payload.split(b":")[1].split(b",")[0])
            assert result.usage.fuel == 200_000 + worker
        else:
            assert result.failure is None, result.failure
            assert result.output == payload
            if kind == "state":
                doc: pycrdt.Doc[Any] = pycrdt.Doc()
                assert result.state_delta is not None
                doc.apply_update(result.state_delta)
                assert doc.get("vars", type=pycrdt.Map)["k"] == payload.decode()


def test_concurrent_first_runs_compile_once() -> None:
    blocks = CountingStore()
    cid = Modules(blocks).add(ECHO)
    blocks.reads = 0
    with Sandbox(blocks) as sandbox, ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(lambda i: sandbox.run(cid, b"%d" % i), range(32), timeout=60))
    assert [r.output for r in results] == [b"%d" % i for i in range(32)]
    assert blocks.reads == 1


def test_timeouts_in_parallel_share_one_ticker(sandbox: Sandbox, modules: Modules) -> None:
    loop, echo = modules.add(LOOP), modules.add(ECHO)
    limits = Limits(fuel=50_000_000_000, timeout=0.3)
    with ThreadPoolExecutor(max_workers=4) as pool:
        slow = [pool.submit(sandbox.run, loop, b"{}", limits=limits) for _ in range(3)]
        fast = pool.submit(sandbox.run, echo, b"[42]")
        assert fast.result(timeout=30).output == b"[42]"
        for future in slow:
            result = future.result(timeout=30)
            assert result.failure is not None
            assert result.failure.kind is FailureKind.TIMEOUT
            assert result.usage.wall_time < 5


def test_wasm_runs_without_the_gil(sandbox: Sandbox, modules: Modules) -> None:
    # While a step spins in another thread, this thread keeps running Python: the
    # longest pause it sees is far shorter than the step (holding the GIL, it would
    # be the whole step).
    loop = modules.add(LOOP)
    done = threading.Event()
    outcome: list[StepResult] = []

    def spin() -> None:
        outcome.append(sandbox.run(loop, b"{}", limits=Limits(fuel=400_000_000)))
        done.set()

    worker = threading.Thread(target=spin)
    started = last = time.monotonic()
    worker.start()
    longest = 0.0
    while not done.wait(0):
        now = time.monotonic()
        longest = max(longest, now - last)
        last = now
    worker.join(timeout=30)
    elapsed = time.monotonic() - started
    assert outcome[0].failure is not None
    assert outcome[0].failure.kind is FailureKind.OUT_OF_FUEL
    assert elapsed > 0.1
    assert longest < elapsed / 2
