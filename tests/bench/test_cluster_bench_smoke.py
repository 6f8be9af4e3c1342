"""The cluster benchmark (bench/cluster.py) end to end in its quick form, without the
launcher kills: 3 real node processes, flows submitted through the control API. Only
that it produced figures is checked; timings are the benchmark's to print, not to
assert."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cluster.py"


def load_bench() -> ModuleType:
    """bench/ is not a package: load the script as a module of its own name."""
    name = "qflow_bench_cluster"
    spec = importlib.util.spec_from_file_location(name, BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def test_the_quick_cluster_benchmark_produces_figures(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    figures = bench.main(["--quick", "--skip-kills"])
    printed = capsys.readouterr().out
    print(printed)  # shown with -s, and on failure
    assert figures.produced
    assert figures.e2e_ms and all(math.isfinite(v) and v > 0 for v in figures.e2e_ms)
    assert len(figures.per_step_ms) == len(figures.e2e_ms)
    assert figures.flows_done > 0 and math.isfinite(figures.steps_per_s)
    assert sum(figures.steps_by_node.values()) > 0
    assert not figures.kills  # --skip-kills
    for heading in ("per-step overhead", "steps/s", "step slots done per node"):
        assert heading in printed
