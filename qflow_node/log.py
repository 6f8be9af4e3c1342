"""Structured logging, configured once per process.

Daemons log JSON lines (one object per line, machine-readable); the CLI logs readable
console lines to stderr. Context such as `node`, `exec` and `step` is bound with
`bind(...)` / `bound(...)` and rides along on every line from that task: structlog's
contextvars are copied into each trio task, so a binding in one task never leaks into
its siblings.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["json", "console"]

_configured: LogFormat | None = None


def configure_logging(
    fmt: LogFormat = "console", *, level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Set up structlog for this process. Calling it again replaces the setup."""
    global _configured  # noqa: PLW0603 - process-wide logging setup is a singleton by nature
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r} (use DEBUG, INFO, WARNING, ERROR)")
    out = stream if stream is not None else sys.stderr
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _configured = fmt


def get_logger(name: str | None = None, **context: Any) -> Any:
    """A logger carrying `context` (and `logger=name` when given) on every line."""
    if _configured is None:
        configure_logging()
    log = structlog.get_logger()
    if name is not None:
        context = {"logger": name, **context}
    return log.bind(**context) if context else log


def bind(**context: Any) -> None:
    """Bind context (e.g. node=…, exec=…, step=…) for the current task and its children."""
    structlog.contextvars.bind_contextvars(**context)


@contextmanager
def bound(**context: Any) -> Iterator[None]:
    """Bind context for the duration of a block, then restore what was there."""
    tokens = structlog.contextvars.bind_contextvars(**context)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
