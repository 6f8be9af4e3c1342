"""`qflow watch|status|logs`: executions as the running node sees them, through its
control API (`exec.status`, `exec.list`, `exec.records`; docs/operations.md).

Imports stay light (the API client, click, rich): these commands poll a node, they
never load the engine, libp2p or wasmtime.

Exit codes: watch (and logs --follow) 0 the execution completed, 1 it failed or was
aborted, its submission was rejected, --timeout passed, the node does not know the
execution, or no node is running; status 0 shown, 1 a rejected submission, unknown
execution or no node running; logs 0 shown, 1 unknown execution or no node running;
all 2 usage or a failed call.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from qflow_node.api.errors import (
    NOT_FOUND,
)
from qflow_node.cli.errors import EXIT_CHECK_FAILED, cid_argument, fail
from qflow_node.cli.node_api import call_node
from qflow_node.cli.options import repo_option

TERMINAL: Final = frozenset({"completed", "failed", "aborted", "rejected"})
REJECTED: Final = "rejected"  # the submission was refused: there is no execution
_CALL_TIMEOUT: Final = 30.0  # seconds for one API call
_SUMMARY_CHARS: Final = 100  # of a payload in a log line
_STYLE: Final = {
    "completed": "green",
    "failed": "red",
    "aborted": "red",
    "rejected": "red",
    "retry": "yellow",
    "started": "cyan",
    "running": "cyan",
    "paused": "yellow",
}

_interval_option = click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=0.2,
    show_default=True,
    metavar="SECONDS",
    help="Time between two polls of the node.",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout.")


# -- calling the node ---------------------------------------------------------------------


def _call(
    repo: Path,
    method: str,
    params: dict[str, Any],
    *,
    patient: bool = False,
    timeout: float = _CALL_TIMEOUT,
) -> Any:
    """The node's answer, or exit: 1 no node running or unknown execution, 2 otherwise.
    `patient`: a node too busy to answer in time is asked again (None), not given up on."""
    return call_node(repo, method, params, timeout=timeout, refused={NOT_FOUND}, patient=patient)


def _exec_id(text: str) -> str:
    return cid_argument(text).encode()  # a bad CID is a usage error before any call


def _poll_status(repo: Path, exec: str, left: float | None) -> dict[str, Any] | None:
    """`exec.status`, or None if the node did not answer within the time `left`."""
    wait = _CALL_TIMEOUT if left is None else max(0.01, min(left, _CALL_TIMEOUT))
    status: dict[str, Any] | None = _call(
        repo, "exec.status", {"exec": exec}, patient=True, timeout=wait
    )
    return status


# -- formatting -----------------------------------------------------------------------------


def short_peer(peer: str | None) -> str:
    """The tail of a peer id: every Ed25519 peer id starts with the same `12D3KooW`."""
    return "-" if not peer else f"…{peer[-6:]}"


def format_ms(ms: int | float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{int(ms)} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_ts(ts: int | None) -> str:
    if ts is None:
        return "-"
    moment = datetime.fromtimestamp(ts / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _duration(row: dict[str, Any], now_ms: int) -> str:
    if row["duration_ms"] is not None:
        return format_ms(row["duration_ms"])
    if row["started_at"] is not None and row["status"] not in ("completed", "failed"):
        # Still going: elapsed by this machine's clock (the writer's may differ).
        return format_ms(max(0, now_ms - row["started_at"])) + "…"
    return ""


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    return f"{error.get('kind', '?')}: {error.get('message', '')}"


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def steps_table(status: dict[str, Any]) -> Table:
    """The rich table of an `exec.status` result: one row per step instance."""
    title = f"{status['exec'][:16]}…: [{_STYLE.get(status['status'], '')}]{status['status']}[/]"
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("step", overflow="fold")
    table.add_column("status")
    table.add_column("node")
    table.add_column("attempt", justify="right")
    table.add_column("duration", justify="right")
    errors = any(row["error"] for row in status["steps"])
    if errors:  # a retrying or failed step says why
        table.add_column("error", overflow="fold")
    now = time.time_ns() // 1_000_000
    for row in status["steps"]:
        style = _STYLE.get(row["status"], "")
        cells = [
            row["step"],
            f"[{style}]{row['status']}[/]",
            short_peer(row["node"]),
            str(row["attempt"]),
            _duration(row, now),
        ]
        table.add_row(*cells, *([_error_text(row["error"])] if errors else []))
    return table


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _console() -> Console:
    return Console(highlight=False)  # sys.stdout when it prints (CliRunner swaps it)


# -- qflow watch ----------------------------------------------------------------------------


class _Changes:
    """`watch` off a terminal: a line (or, with --json, a JSON object) per change."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.status: str | None = None
        self.rows: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> _Changes:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def show(self, status: dict[str, Any]) -> None:
        for row in status["steps"]:
            if self.rows.get(row["step"]) != row:
                self.rows[row["step"]] = row
                self._emit(row, self._step_line(row))
        if status["status"] != self.status:
            self.status = status["status"]
            change = {"exec": status["exec"], "status": status["status"]}
            self._emit(change, f"exec {status['exec']}: {status['status']}")

    def _emit(self, obj: dict[str, Any], line: str) -> None:
        click.echo(_compact(obj) if self.as_json else line)

    @staticmethod
    def _step_line(row: dict[str, Any]) -> str:
        parts = [f"attempt {row['attempt']}", f"node {short_peer(row['node'])}"]
        if row["duration_ms"] is not None:
            parts.append(format_ms(row["duration_ms"]))
        error = _error_text(row["error"])
        detail = f"  {error}" if error else ""
        return f"{row['step']}: {row['status']} ({', '.join(parts)}){detail}"


class _LiveTable:
    """`watch` on a terminal: the step table, redrawn in place."""

    def __init__(self) -> None:
        self.live = Live(console=_console(), refresh_per_second=10, auto_refresh=False)

    def __enter__(self) -> _LiveTable:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def show(self, status: dict[str, Any]) -> None:
        self.live.update(steps_table(status), refresh=True)


@click.command(
    "watch",
    epilog="Exit codes: 0 completed; 1 failed, aborted, rejected (an invalid submission), "
    "--timeout passed, unknown execution or no node running; 2 usage or a failed call.",
)
@repo_option
@_interval_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Give up (exit 1) if the execution has not ended within SECONDS.",
)
@_json_option
@click.argument("exec_text", metavar="EXEC")
def watch_command(
    repo: Path, interval: float, timeout: float | None, as_json: bool, exec_text: str
) -> None:
    """Follow EXEC live until it ends, then print its output (or error).

    On a terminal: a table of its steps (status, node, attempt, duration). Otherwise, or
    with --json: a line (a JSON object) per change, then the result (the final
    `exec.status` object). Exit 0 if it completed, 1 if it failed, was aborted,
    its submission was rejected (the reason is shown) or --timeout passed.
    """
    exec = _exec_id(exec_text)
    deadline = None if timeout is None else time.monotonic() + timeout
    display: _Changes | _LiveTable = (
        _Changes(as_json) if as_json or not _stdout_is_terminal() else _LiveTable()
    )
    status: dict[str, Any] | None = None
    with display:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            polled = _poll_status(repo, exec, left)
            if polled is not None:
                status = polled
                display.show(status)
                if status["status"] in TERMINAL:
                    break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            time.sleep(interval if left is None else min(interval, left))
    if status is not None and as_json:
        click.echo(_compact(status))
    if status is None or status["status"] not in TERMINAL:
        still = "has not answered" if status is None else f"is still {status['status']}"
        fail(f"timed out after {timeout:g} s: execution {exec} {still}", EXIT_CHECK_FAILED)
    if not as_json:
        _print_result(status)
    if status["status"] != "completed":
        raise SystemExit(EXIT_CHECK_FAILED)


def _print_result(status: dict[str, Any]) -> None:
    """As `qflow run`: the output on stdout, the verdict (and error) on stderr."""
    if status["status"] == "completed":
        click.echo(json.dumps(status["output"], ensure_ascii=False, indent=2))
    click.echo(f"exec {status['exec']}: {status['status']}{_rejected_by(status)}", err=True)
    if status["error"]:
        click.echo(f"error: {_error_text(status['error'])}", err=True)


def _rejected_by(status: dict[str, Any]) -> str:
    """` by …abcdef` for a rejected submission: which node refused it."""
    return f" by {short_peer(status.get('by'))}" if status["status"] == REJECTED else ""


# -- qflow status ---------------------------------------------------------------------------


@click.command(
    "status",
    epilog="Exit codes: 0 shown; 1 a rejected submission (shown, with the reason), unknown "
    "execution or no node running; 2 usage or a failed call.",
)
@repo_option
@click.option(
    "--all", "show_all", is_flag=True, help="Every execution this node holds, however old."
)
@_json_option
@click.argument("exec_text", metavar="[EXEC]", required=False)
def status_command(repo: Path, show_all: bool, as_json: bool, exec_text: str | None) -> None:
    """Without EXEC: the executions the node is running or finished in the last hour.
    With EXEC: that execution's status and steps, or why its submission was rejected."""
    if exec_text is None:
        listing = _call(repo, "exec.list", {"all": show_all})
        if as_json:
            click.echo(_compact(listing))
        else:
            _print_listing(listing["executions"])
        return
    if show_all:
        fail("--all lists executions; it does not go with EXEC")
    status = _call(repo, "exec.status", {"exec": _exec_id(exec_text)})
    if as_json:
        click.echo(_compact(status))
    else:
        _print_status(status)
    if status["status"] == REJECTED:  # no execution exists: as for an unknown one
        raise SystemExit(EXIT_CHECK_FAILED)


def _print_listing(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("no executions (--all shows those that finished over an hour ago)")
        return
    now = time.time_ns() // 1_000_000
    click.echo(f"{'EXEC':<60} {'STATUS':<10} {'RECORDS':>7}  UPDATED")
    for row in rows:
        updated = "-" if row["updated_at"] is None else format_ms(max(0, now - row["updated_at"]))
        records = "-" if row["records"] is None else row["records"]
        ago = f"{updated} ago" if row["updated_at"] is not None else updated
        click.echo(f"{row['exec']:<60} {row['status']:<10} {records:>7}  {ago}")


def _print_status(status: dict[str, Any]) -> None:
    took = ""
    if status["started_at"] is not None and status["finished_at"] is not None:
        took = f" ({format_ms(max(0, status['finished_at'] - status['started_at']))})"
    for name, value in (
        ("exec", status["exec"]),
        ("flow", status["flow"] or "-"),
        ("status", status["status"] + _rejected_by(status)),
        ("records", status["records"]),
        ("started", format_ts(status["started_at"])),
        ("finished", format_ts(status["finished_at"]) + took),
    ):
        click.echo(f"{name:<9}{value}")
    if status["steps"]:
        _console().print(steps_table(status))
    if status["status"] == "completed":
        click.echo(f"{'output':<9}{json.dumps(status['output'], ensure_ascii=False)}")
    if status["error"]:
        click.echo(f"{'error':<9}{_error_text(status['error'])}")


# -- qflow logs -----------------------------------------------------------------------------


def log_line(record: dict[str, Any]) -> str:
    """`time node kind step#attempt payload-summary`."""
    where = "-" if record["step"] is None else f"{record['step']}#{record['attempt']}"
    payload = record["payload"]
    if isinstance(payload, dict) and set(payload) == {"cid", "size"}:
        size = "not here" if payload["size"] is None else f"{payload['size']} B"
        summary = f"<{payload['cid']} {size}>"
    else:
        summary = _compact(payload)
        if len(summary) > _SUMMARY_CHARS:
            summary = summary[: _SUMMARY_CHARS - 1] + "…"
    if record["actor"]:
        summary += f" by {record['actor']}"
    return (
        f"{format_ts(record['ts'])} {short_peer(record['node']):<7} {record['kind']:<16} "
        f"{where} {summary}"
    )


class _Records:
    """The records of an execution in replay order, each once; `status` is the
    execution's status at the last poll."""

    def __init__(self, repo: Path, exec: str, interval: float) -> None:
        self.repo, self.exec, self.interval = repo, exec, interval
        self.status: str | None = None

    def read(self, *, follow: bool) -> Iterator[dict[str, Any]]:
        """Every record there is; with `follow`, then every new one until the end."""
        after = -1
        at_after: str | None = None  # the CID of the record at index `after`
        seen: set[str] = set()
        while True:
            params = {"exec": self.exec, "after": after}
            result = _call(self.repo, "exec.records", params, patient=follow)
            if result is None:
                time.sleep(self.interval)
                continue
            if after >= 0 and result["after_cid"] != at_after:
                # A concurrent record sorted in before `after`: read everything again
                # and show only what was not shown.
                after, at_after = -1, None
                continue
            self.status = result["status"]
            for record in result["records"]:
                if record["cid"] not in seen:
                    seen.add(record["cid"])
                    yield record
                after, at_after = record["index"], record["cid"]
            if result["more"]:
                continue
            if not follow or self.status in TERMINAL:
                return
            time.sleep(self.interval)


@click.command("logs")
@repo_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records until EXEC ends.")
@_interval_option
@_json_option
@click.argument("exec_text", metavar="EXEC")
def logs_command(repo: Path, follow: bool, interval: float, as_json: bool, exec_text: str) -> None:
    """The records of EXEC's ledger in replay order, one line each:
    `time node kind step#attempt payload`.

    --follow keeps polling for new records until the execution ends, then exits 0 if it
    completed, 1 otherwise. --json: one JSON object per record.
    """
    records = _Records(repo, _exec_id(exec_text), interval)
    for record in records.read(follow=follow):
        click.echo(_compact(record) if as_json else log_line(record))
    if follow and records.status != "completed":
        raise SystemExit(EXIT_CHECK_FAILED)
