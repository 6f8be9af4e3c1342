"""Real `qflow node run` processes for multi-process tests and benchmarks.

Each node is a subprocess; its JSON log lines (stderr) are read by a thread into a
list, and callers wait for specific events with deadlines - no sleeps. `NodeSet` kills
every process it started, whatever happened (use it as a context manager or fixture).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from qflow_node.cli.init_cmd import init_repo

# `qflow ...` through the real entry point (the lazy command group included).
QFLOW: Final = [sys.executable, "-c", "from qflow_node.cli.main import main; main()"]
NODE_CMD: Final = [*QFLOW, "node"]
LOOPBACK: Final = "/ip4/127.0.0.1/tcp/0"
BOOT_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 15.0


class NodeProcess:
    def __init__(
        self,
        args: list[str],
        changed: threading.Condition | None = None,
        log_file: Path | None = None,
        command: Sequence[str] = NODE_CMD,
    ) -> None:
        """`changed`: a condition shared by several processes, notified on every line
        any of them logs (NodeSet shares one, so callers can wait on all at once).
        `log_file`: where its stderr is also written, line by line (kept for a post-mortem
        when a multi-process test fails). `command`: what runs `qflow node` (a wrapper
        may stand in, e.g. `chaos/byzantine_node.py`)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [*command, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.events: list[dict[str, Any]] = []  # every JSON log event, in order
        self._changed = changed if changed is not None else threading.Condition()
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        self._log = log_file.open("a", encoding="utf-8") if log_file is not None else None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr, True)),
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout, False)),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, lines: list[str], parse: bool) -> None:
        log = self._log if parse else None
        for line in stream:
            lines.append(line)
            if log is not None:
                log.write(line)
                log.flush()
            event = json_object(line) if parse else None
            with self._changed:
                if event is not None:
                    self.events.append(event)
                self._changed.notify_all()
        if log is not None:
            log.close()
        with self._changed:
            self._changed.notify_all()  # EOF: the process is exiting

    def wait_for(self, name: str, timeout: float = BOOT_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """The first log event `name` whose fields match (seen already or arriving
        within `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if event.get("event") == name and all(
                        event.get(k) == v for k, v in fields.items()
                    ):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {name} {fields} within {timeout}s:\n{self.output()}")
                if self.proc.poll() is not None and not any(r.is_alive() for r in self._readers):
                    raise AssertionError(
                        f"node exited ({self.proc.returncode}) before {name}:\n{self.output()}"
                    )
                self._changed.wait(timeout=min(remaining, 0.5))

    def finish(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for exit (bounded) and for the readers to drain; the exit code."""
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def output(self) -> str:
        return "".join(self.stderr[-40:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)


def event_time(event: dict[str, Any]) -> float:
    """A log event's wall-clock time (epoch seconds), from its ISO `timestamp`."""
    stamp = str(event.get("timestamp", "")).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return 0.0


def json_object(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class NodeSet:
    """Processes started by one test; `kill_all` (or leaving the `with`) stops them."""

    def __init__(self) -> None:
        self.started: list[NodeProcess] = []
        self.changed = threading.Condition()  # notified by every line of every process

    def __call__(
        self, *args: str, log_file: Path | None = None, command: Sequence[str] = NODE_CMD
    ) -> NodeProcess:
        node = NodeProcess(list(args), self.changed, log_file, command)
        self.started.append(node)
        return node

    def wait_any(
        self,
        match: Callable[[NodeProcess, dict[str, Any]], bool],
        timeout: float,
        since: float = 0.0,
    ) -> tuple[NodeProcess, dict[str, Any]]:
        """The first (process, event) `match` accepts, among events any process logged
        (or logs within `timeout` s); with `since`, only events after that many seconds
        of the epoch (their `timestamp`)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for process in self.started:
                    for event in process.events:
                        if since and event_time(event) <= since:
                            continue
                        if match(process, event):
                            return process, event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching event within {timeout}s")
                self.changed.wait(timeout=min(remaining, 0.5))

    def kill_all(self) -> None:
        for node in self.started:
            node.kill()

    def __enter__(self) -> NodeSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_all()


def make_repo(tmp_path: Path, name: str) -> Path:
    repo = tmp_path / name
    init_repo(repo)
    return repo
