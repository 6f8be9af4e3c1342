"""`make demo`'s cluster part (examples/cluster_demo.py) end to end, and its shop
(examples/shop.py): real node processes on loopback, the launcher `kill -9`ed mid-flow,
the flow completed by the others, verified ledgers, every step exactly once, a clean
stop. Every wait in the demo is bounded; every process it starts is killed here too."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str) -> ModuleType:
    """An example by path (site-packages has a package named `examples` of its own)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


demo = _load("cluster_demo")
shop_module = _load("shop")


@pytest.fixture
def clusters(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The clusters the demo starts; every process of them is killed at teardown."""
    started: list[Any] = []
    original = demo.local_cluster

    @contextmanager
    def recording(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with original(*args, **kwargs) as cluster:
            started.append(cluster)
            yield cluster

    monkeypatch.setattr(demo, "local_cluster", recording)
    try:
        yield started
    finally:
        for cluster in started:
            cluster.processes.kill_all()


def _run(tmp_path: Path, workload: Any) -> tuple[Any, str]:
    lines: list[str] = []
    outcome = demo.run(tmp_path, workload=workload, say=demo.Console(lines.append))
    return outcome, "\n".join(lines)


def _stopped_cleanly(clusters: list[Any], outcome: Any) -> None:
    assert len(clusters) == 1
    assert all(node.process.proc.poll() is not None for node in clusters[0].nodes)
    assert outcome.exit_codes and set(outcome.exit_codes.values()) == {0}
    assert outcome.launcher not in outcome.exit_codes  # killed, not stopped


@pytest.mark.slow
def test_the_demo_flow_survives_its_launcher(tmp_path: Path, clusters: list[Any]) -> None:
    outcome, output = _run(tmp_path, demo.DEFAULT)
    assert outcome.ok, output
    assert outcome.status == "completed", output
    assert len(outcome.checks) == 2  # both survivors checked
    for name, check in outcome.checks.items():
        assert check.verified, (name, output)
        assert check.status == "completed", (name, output)
        assert set(check.completions) >= outcome.required, (name, output)
        assert set(check.completions.values()) == {1}, (name, output)  # exactly once
    assert len({check.heads for check in outcome.checks.values()}) == 1
    assert f"!! kill -9 {outcome.launcher}" in output
    _stopped_cleanly(clusters, outcome)


@pytest.mark.slow
def test_the_order_flow_survives_its_launcher(tmp_path: Path, clusters: list[Any]) -> None:
    outcome, output = _run(tmp_path, demo.ORDER_FLOW)
    for name, check in outcome.checks.items():
        assert check.verified, (name, output)
        assert check.status == "completed", (name, output)
        assert set(check.completions) >= outcome.required, (name, output)
    assert outcome.charges == 1, output  # a retried charge is deduplicated by the shop
    _stopped_cleanly(clusters, outcome)
    assert outcome.exactly_once, output
    assert outcome.ok, output


def _post(url: str, body: dict[str, Any], key: str) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "idempotency-key": key},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


def test_the_shop_charges_once_per_idempotency_key() -> None:
    said: list[str] = []
    with shop_module.Shop(charge_delay=0.2, delay=0.0, say=said.append) as shop:
        answers: list[dict[str, Any]] = []
        body = {"order": "o-1", "amount": 12.5}
        threads = [
            threading.Thread(
                target=lambda: answers.append(_post(f"{shop.url}/payments/charge", body, "o-1"))
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        other = _post(f"{shop.url}/payments/charge", {"order": "o-2", "amount": 1}, "o-2")
    assert len(answers) == 2 and answers[0] == answers[1]
    assert answers[0]["charge"] != other["charge"]
    assert sum(line.startswith("charge o-1 accepted") for line in said) == 1
    assert sum(line.startswith("charge o-1 deduplicated") for line in said) == 1
