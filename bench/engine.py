"""Engine benchmark: the pure engine's overhead per step, and the local runner end to end.

    .venv/bin/python bench/engine.py [--runs 20]

Figures:
  sequential 1000   a flow of 1000 run steps, each reading the previous one's output:
                    per step, `apply` of its completion + `next_actions` (what a live
                    driver pays), and `fold` of the whole recorded history (replay)
  parallel 100      one parallel step of 100 single-step branches (join all): the same,
                    next_actions after every completion
  foreach 100 ∥     a foreach over 100 items with max_parallel 100
  local 10 steps    `LocalRunner.run` of 10 trivial wasm steps (examples/steps/transform.wasm)
                    in a fresh repo on disk: engine, sandbox, every record signed, every
                    block and the heads index fsynced; modules already compiled (warm)

The step executors in the engine figures answer instantly, so they measure the engine
alone. Each figure is the median of a few runs; the machine is shared (±15%).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from qflow_node.cli.init_cmd import init_repo
from qflow_node.core.engine import Event, ExecState, RunStep, apply, fold, initial, next_actions
from qflow_node.core.engine.testing import flow
from qflow_node.core.flow import FlowIR
from qflow_node.flow_loader import load_flow
from qflow_node.runtime.session import local_runner
from qflow_node.store import FileBlockStore

ROOT = Path(__file__).resolve().parent.parent


def sequential(n: int) -> FlowIR:
    lines = ["name: seq", "steps:", "  - {id: s0, run: m.wasm, with: {i: '0'}}"]
    lines += [
        f"  - {{id: s{i}, run: m.wasm, with: {{i: steps.s{i - 1}.output.n}}}}" for i in range(1, n)
    ]
    return flow("\n".join(lines) + "\n")


def parallel(n: int) -> FlowIR:
    """The language allows 64 branches (docs/flows.md, Limits); the engine has no limit,
    so the 100-branch IR is the compiled 1-branch one with its branch copied."""
    ir = flow("name: par\nsteps:\n  - id: fan\n    parallel:\n      branches:\n"
              "        b0: [{id: s0, run: m.wasm, with: {i: '0'}}]\n")  # fmt: skip
    fan = ir["steps"][0]
    assert fan["kind"] == "parallel"
    template = fan["branches"]["b0"][0]
    fan["branches"] = {f"b{i}": [{**template, "id": f"s{i}"}] for i in range(n)}  # type: ignore[list-item]
    fan["join"] = n
    return ir


def foreach(n: int) -> FlowIR:
    items = "[" + ", ".join(str(i) for i in range(n)) + "]"
    return flow(
        f"name: each\nsteps:\n  - id: each\n    foreach:\n      items: '{items}'\n"
        f"      max_parallel: {n}\n      steps: [{{id: s, run: m.wasm, with: {{v: item}}}}]\n"
    )


def drive(ir: FlowIR) -> tuple[float, int, list[Event]]:
    """Run to the end with instant executors; seconds spent in apply + next_actions."""
    events = [Event("exec.started", ts=1, value={"flow": "", "inputs": {}})]
    start = time.perf_counter()
    first = apply(initial(ir, "bafyexec"), events[0])
    assert isinstance(first, ExecState)
    state = first
    steps = 0
    while True:
        actions = next_actions(state, 1)
        if not actions:
            break
        action = actions[0]
        if isinstance(action, RunStep):
            steps += 1
            event = Event("step.completed", action.instance, action.attempt, 1, {"n": steps})
        elif hasattr(action, "output") and hasattr(action, "instance"):
            event = Event("step.completed", action.instance, 1, 1, action.output)
        else:
            event = Event("exec.completed", ts=1, value=getattr(action, "output", None))
        result = apply(state, event)
        assert isinstance(result, ExecState), str(result)
        state = result
        events.append(event)
    assert state.status == "completed", state.status
    return time.perf_counter() - start, steps, events


def engine_figures(label: str, ir: FlowIR, runs: int) -> None:
    live: list[float] = []
    replays: list[float] = []
    steps = 0
    for _ in range(runs):
        seconds, steps, events = drive(ir)
        live.append(seconds)
        start = time.perf_counter()
        state, rejected = fold(ir, "bafyexec", events)
        replays.append(time.perf_counter() - start)
        assert not rejected and state.status == "completed"
    per_live = statistics.median(live) / steps * 1e6
    per_fold = statistics.median(replays) / steps * 1e6
    print(f"  {label:<18} live {per_live:7.1f} µs/step   replay (fold) {per_fold:7.1f} µs/step")


def local_figures(runs: int) -> None:
    steps = "\n".join(
        f"  - id: s{i}\n    run: {ROOT}/examples/steps/transform.wasm\n"
        f"    with: {{user: {{first: '\"s{i}\"'}}, tags: '[{i}]'}}"
        for i in range(10)
    )
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        init_repo(repo)
        source = Path(tmp) / "ten.yaml"
        source.write_text(f"name: ten\nsteps:\n{steps}\n", encoding="utf-8")
        loaded = load_flow(source, store=FileBlockStore(repo / "blocks"))
        ir = loaded.compiled.ir
        times: list[float] = []
        with local_runner(repo, ir) as runner:
            runner.run(loaded.cid, ir, {})  # warm: modules compiled and cached
            for _ in range(runs):
                start = time.perf_counter()
                result = runner.run(loaded.cid, ir, {})
                times.append(time.perf_counter() - start)
                assert result.status == "completed"
        blocks = result.records * 2 + 1  # records, payloads, submission + inputs
        print(
            f"  {'local 10 steps':<18} median {statistics.median(times) * 1e3:6.1f} ms   "
            f"best {min(times) * 1e3:6.1f} ms   ({result.records} records, ~{blocks} blocks)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print("engine overhead per step (apply + next_actions; target ≤ 100 µs):", flush=True)
    engine_figures("sequential 1000", sequential(1000), max(3, args.runs // 4))
    engine_figures("parallel 100", parallel(100), args.runs)
    engine_figures("foreach 100 ∥", foreach(100), args.runs)
    print("local runner (target ≤ 50 ms):", flush=True)
    local_figures(args.runs)


if __name__ == "__main__":
    main()
