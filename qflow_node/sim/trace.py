"""What happened in one simulated run: a bounded ring of events for the report of a
failing seed, and a running hash of all of them, so two runs of one seed can be
compared exactly (the determinism check)."""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Final, TextIO

import structlog
import trio

KEPT: Final = 20_000  # events kept for the report
SHOWN: Final = 200  # of them, printed before a violation


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class Trace:
    def __init__(self, full: TextIO | None = None) -> None:
        self.events: deque[tuple[float, str, str, dict[str, Any]]] = deque(maxlen=KEPT)
        self.count = 0
        self._hash = hashlib.sha256()
        self._full = full

    def add(self, node: str, event: str, /, **fields: Any) -> None:
        now = trio.current_time()
        plain = {k: _plain(v) for k, v in sorted(fields.items())}
        self.events.append((now, node, event, plain))
        self.count += 1
        line = json.dumps([round(now, 6), node, event, plain], sort_keys=True)
        self._hash.update(line.encode())
        if self._full is not None:
            self._full.write(line + "\n")

    def digest(self) -> str:
        return self._hash.hexdigest()[:16]

    def tail(self, n: int = SHOWN) -> list[str]:
        shown = list(self.events)[-n:]
        return [f"{t:10.3f} {node:>4} {event} {json.dumps(f)}" for t, node, event, f in shown]


# Node logs go into the trace of the running world (one world per process at a time).
_current: list[tuple[Trace, Callable[[str, str], None]]] = []
_LOGGED: Final = frozenset({"warning", "error", "critical", "exception"})
_ERRORS: Final = frozenset({"error", "critical", "exception"})
_KEPT_INFO: Final = frozenset(
    {
        "exec.started",
        "exec.finished",
        "exec.resumed",
        "exec.rewound",
        "slot.superseded",
        "exec.opened",
        "control.accepted",
        "peer.suspect",
        "peer.dead",
        "peer.alive",
        "critical.decided",
        "critical.round_failed",
    }
)


def _to_trace(_logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    if _current:
        name = str(event.get("event", ""))
        if method in _LOGGED or name in _KEPT_INFO:
            node = str(event.pop("sim_node", "?"))
            fields = {
                k: v
                for k, v in event.items()
                if k not in ("event", "node", "timestamp", "logger", "level")
            }
            trace, on_error = _current[-1]
            trace.add(node, f"log.{method}:{name}", **fields)
            if method in _ERRORS:
                on_error(node, name)
    raise structlog.DropEvent


@contextmanager
def capturing_logs(trace: Trace, on_error: Callable[[str, str], None]) -> Iterator[None]:
    """Route every structlog event of the node code into `trace` (warnings and up, and
    a few protocol milestones), printing nothing; `on_error(node, event)` for errors."""
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, _to_trace],
        wrapper_class=structlog.make_filtering_bound_logger(20),  # info and up
        cache_logger_on_first_use=False,
    )
    _current.append((trace, on_error))
    try:
        yield
    finally:
        _current.pop()
        structlog.configure(**saved)
