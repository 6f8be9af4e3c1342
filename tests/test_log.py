from __future__ import annotations

import io
import json

import pytest
import trio
import trio.lowlevel

from qflow_node.log import bind, bound, configure_logging, get_logger


@pytest.fixture(autouse=True)
def _reset_logging() -> object:
    yield
    configure_logging("console", level="WARNING")


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_bound_context() -> None:
    out = io.StringIO()
    configure_logging("json", level="INFO", stream=out)
    log = get_logger("runtime", node="12D3KooWnode")
    with bound(exec="bafyexec", step="fetch"):
        log.info("step.started", attempt=0)
    log.info("idle")
    first, second = lines(out)
    assert first["event"] == "step.started"
    assert (first["node"], first["exec"], first["step"], first["attempt"]) == (
        "12D3KooWnode",
        "bafyexec",
        "fetch",
        0,
    )
    assert first["logger"] == "runtime" and first["level"] == "info" and "timestamp" in first
    assert "exec" not in second and second["node"] == "12D3KooWnode"


def test_level_filters_and_bad_level_is_refused() -> None:
    out = io.StringIO()
    configure_logging("json", level="WARNING", stream=out)
    get_logger().info("hidden")
    get_logger().warning("shown")
    assert [entry["event"] for entry in lines(out)] == ["shown"]
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        configure_logging("json", level="LOUD")


def test_console_format_is_readable() -> None:
    out = io.StringIO()
    configure_logging("console", level="INFO", stream=out)
    get_logger(node="n1").info("ready", peer="12D3KooW")
    text = out.getvalue()
    assert "ready" in text and "node=n1" in text and not text.startswith("{")


async def test_context_bound_in_one_trio_task_does_not_leak_to_siblings() -> None:
    out = io.StringIO()
    configure_logging("json", level="INFO", stream=out)

    async def worker(step: str) -> None:
        bind(step=step)
        await trio.lowlevel.checkpoint()
        get_logger().info("tick")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker, "a")
        nursery.start_soon(worker, "b")
    assert sorted(str(entry["step"]) for entry in lines(out)) == ["a", "b"]
    get_logger().info("after")
    assert "step" not in lines(out)[-1]
