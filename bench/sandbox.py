"""Sandbox costs: compiling a ~100 KB C step, a cold step (compiled artifact on disk,
nothing in memory), a warm step (compiled module in memory, fresh instance), and one
host-call round trip. Prints medians and the targets; asserts nothing.

    .venv/bin/python bench/sandbox.py [--functions 370] [--warm 2000] [--cold 300]

The step is generated C (a table of small hashing functions behind a stdin/stdout JSON
main), built with `python -m ziglang cc -target wasm32-wasi -O2 -s`; the zig cache lives
in the temp dir, so only the first run pays ~20 s for wasi-libc.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime

from qflow_node.codec import CID
from qflow_node.log import configure_logging
from qflow_node.sandbox import Authorizer, Sandbox
from qflow_node.sandbox.testing import Modules, RuleAuthorizer, command, host_import
from qflow_node.store import MemoryBlockStore

WORK = Path(tempfile.gettempdir()) / "qflow-bench-sandbox"
INPUT = b'{"user": {"first": "Ada", "last": "Lovelace"}, "tags": ["a", "b"], "n": 12345}'
HOST_CALLS = 1000


def generate_c(functions: int) -> str:
    """A C step with `functions` distinct functions (about 210 bytes of wasm each)."""
    parts = ["#include <stdint.h>", "#include <stdio.h>", ""]
    for i in range(functions):
        a, b, c = (i * 2654435761) % 97 + 3, (i * 40503) % 31 + 1, i % 7 + 2
        rot = b % 13 + 1
        parts.append(f"""static uint64_t f{i}(uint64_t x, const char *s, size_t n) {{
    uint64_t acc = x ^ {i}ULL;
    for (size_t j = 0; j < n && j < {16 + i % 48}; j++) {{
        switch ((s[j] + j) % {c + 3}) {{
        case 0: acc = acc * {a}ULL + (uint64_t)s[j]; break;
        case 1: acc ^= acc >> {b}; acc += {a * 7}ULL; break;
        case 2: acc = (acc << {rot}) | (acc >> {64 - rot}); break;
        case 3: acc -= (uint64_t)s[j] * {c}ULL; break;
        default: acc += j * {a + b}ULL; break;
        }}
    }}
    return acc % {c} == 0 ? acc / {c} + {i}ULL : acc;
}}""")
    table = ", ".join(f"f{i}" for i in range(functions))
    parts.append(f"static uint64_t (*const table[])(uint64_t, const char *, size_t) = {{{table}}};")
    parts.append(r"""int main(void) {
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, stdin);
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)buf[i]) * 1099511628211ULL;
    uint64_t acc = h;
    for (int k = 0; k < 8; k++)
        acc = table[(acc >> 7) % (sizeof table / sizeof *table)](acc, buf, n);
    printf("{\"bytes\": %zu, \"hash\": %llu, \"acc\": %llu}\n", n, (unsigned long long)h,
           (unsigned long long)acc);
    return 0;
}""")
    return "\n".join(parts) + "\n"


def build_step(functions: int) -> bytes:
    WORK.mkdir(parents=True, exist_ok=True)
    source = WORK / f"step{functions}.c"
    target = WORK / f"step{functions}.wasm"
    source.write_text(generate_c(functions))
    env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": str(WORK / "zig-cache")}
    command_line = [sys.executable, "-m", "ziglang", "cc", "-target", "wasm32-wasi", "-O2", "-s",
                    "-Wl,-z,stack-size=65536", str(source), "-o", str(target)]  # fmt: skip
    subprocess.run(command_line, env=env, check=True, timeout=600)
    return target.read_bytes()


def median_of(runs: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(label: str, seconds: float, target: float | None = None) -> None:
    figure = f"{seconds * 1e6:10.1f} µs" if seconds < 0.01 else f"{seconds * 1e3:10.1f} ms"
    verdict = ""
    if target is not None:
        shown = f"{target * 1e6:.0f} µs" if target < 0.001 else f"{target * 1e3:g} ms"
        verdict = f"  (target ≤ {shown}: {'ok' if seconds <= target else 'MISSED'})"
    print(f"  {label:<52}{figure}{verdict}")


def host_call_cost(sandbox: Sandbox, modules: Modules, authorizer: Authorizer) -> float:
    """Per-call time of qflow.state_get (authorized, 4-byte result) in a guest loop."""

    def looping(calls: int) -> CID:
        body = f"""(local $i i32)
          (block $done (loop $again
            (br_if $done (i32.ge_u (local.get $i) (i32.const {calls})))
            (drop (call $state_get (i32.const 1024) (i32.const 6) (i32.const 2048) (i32.const 64)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $again)))"""
        wasm = command(body, imports=[host_import("state_get")], data={1024: b"flow.x"})
        return modules.add(wasm)

    none, many = looping(0), looping(HOST_CALLS)
    for cid in (none, many):
        result = sandbox.run(cid, b"{}", authorizer=authorizer)
        assert result.ok, result.failure
    base = median_of(50, lambda: sandbox.run(none, b"{}", authorizer=authorizer))
    full = median_of(50, lambda: sandbox.run(many, b"{}", authorizer=authorizer))
    return (full - base) / HOST_CALLS


def biscuit_authorizer() -> Authorizer | None:
    try:
        from qflow_node.core.capability import Grants, StepAuthorizer, issue, parse_token
        from qflow_node.core.capability.testing import AUTHORITY, JAN_2026, JAN_2027
    except ImportError:
        return None
    text = issue(AUTHORITY, Grants.build(["state.get"], key_prefixes=["flow."]), expires=JAN_2027)
    token = parse_token(text, AUTHORITY.public_key)
    return StepAuthorizer.for_step(token, now=JAN_2026)


def stdin_file_cost(sandbox: Sandbox) -> float:
    """What a temp file per step would cost for stdin (the runner serves it from memory)."""

    def per_step() -> None:
        with tempfile.NamedTemporaryFile(dir=WORK) as fh:
            fh.write(INPUT)
            fh.flush()
            config = wasmtime.WasiConfig()
            config.stdin_file = fh.name
            store = wasmtime.Store(sandbox.engine)
            store.set_wasi(config)

    return median_of(500, per_step) - median_of(
        500, lambda: wasmtime.Store(sandbox.engine).set_wasi(wasmtime.WasiConfig())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", type=int, default=370, help="size of the C step")
    parser.add_argument("--warm", type=int, default=2000, help="warm steps to time")
    parser.add_argument("--cold", type=int, default=300, help="cold steps to time")
    args = parser.parse_args()
    configure_logging(level="WARNING")  # no "compiled step module" lines in the figures

    wasm = build_step(args.functions)
    blocks = MemoryBlockStore()
    modules = Modules(blocks)
    cid = modules.add(wasm)
    version = importlib.metadata.version("wasmtime")
    print(f"sandbox: a {len(wasm) / 1000:.0f} KB C step (wasm32-wasi, zig -O2), "
          f"{os.cpu_count()} CPUs, wasmtime {version}")  # fmt: skip
    with (
        tempfile.TemporaryDirectory(dir=WORK) as cache,
        Sandbox(blocks, cache_dir=Path(cache)) as sandbox,
    ):
        report("compile (fuel + epoch + NaN canonicalization)",
               median_of(7, lambda: wasmtime.Module(sandbox.engine, wasm)))  # fmt: skip
        first = sandbox.run(cid, INPUT)
        assert first.ok, first.failure
        print(f"  (output {first.output!r}, {first.usage.fuel:,} fuel)")

        def cold() -> None:
            sandbox.evict(cid)
            sandbox.run(cid, INPUT)

        report("cold step (artifact on disk, verified, deserialized)",
               median_of(args.cold, cold), 0.002)  # fmt: skip
        report("warm step (module in memory, fresh instance)",
               median_of(args.warm, lambda: sandbox.run(cid, INPUT)), 0.0005)  # fmt: skip
        rules = RuleAuthorizer({"state.get": {"key": "flow.*"}})
        report("host call round trip (state.get, dict rules)",
               host_call_cost(sandbox, modules, rules), 50e-6)  # fmt: skip
        biscuit = biscuit_authorizer()
        if biscuit is not None:
            report("host call round trip (state.get, Biscuit token)",
                   host_call_cost(sandbox, modules, biscuit), 50e-6)  # fmt: skip
        report("stdin from a temp file instead (extra per step)", stdin_file_cost(sandbox))


if __name__ == "__main__":
    main()
