"""`qflow run FLOW`: run a flow on this node alone (no network) and print its output.

Exit codes: 0 the execution completed; 1 it failed, was aborted, or is still waiting
(see --max-wait); 2 usage or I/O error (bad flow file, bad input, no repo).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from qflow_node.cli.errors import EXIT_CHECK_FAILED, fail, open_block_store
from qflow_node.cli.flowfile import load_flow_or_exit
from qflow_node.cli.options import repo_option
from qflow_node.core.flow.values import duration_ms
from qflow_node.identity.keys import SigningKey
from qflow_node.identity.store import load_actor_key
from qflow_node.repo import RepoPaths


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json(text: str) -> Any:
    """Strict JSON: no NaN or Infinity, which records cannot hold."""
    return json.loads(text, parse_constant=_no_constant)


def _inputs(pairs: tuple[str, ...], inputs_json: str | None) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    if inputs_json is not None:
        try:
            loaded = _json(inputs_json)
        except ValueError as exc:
            fail(f"--inputs is not JSON: {exc}")
        if not isinstance(loaded, dict):
            fail("--inputs must be a JSON object")
        inputs.update(loaded)
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            fail(f"--input {pair!r}: expected NAME=VALUE")
        try:
            inputs[name] = _json(text)  # numbers, booleans, objects…
        except ValueError:
            inputs[name] = text  # anything else is a string
    return inputs


def _events(pairs: tuple[str, ...]) -> dict[str, list[Any]]:
    events: dict[str, list[Any]] = {}
    for pair in pairs:
        topic, sep, text = pair.partition("=")
        try:
            value = _json(text)
        except ValueError:
            value = None
            sep = ""
        if not sep or not topic:
            fail(f"--event {pair!r}: expected TOPIC=JSON")
        events.setdefault(topic, []).append(value)
    return events


def _approvers(repo: Path, names: tuple[str, ...]) -> dict[str, SigningKey]:
    keys = {}
    for name in names:
        try:
            key = load_actor_key(RepoPaths(repo), name)
        except Exception as exc:
            fail(f"--approve {name}: {exc}")
        keys[key.did] = key
    return keys


def _max_wait(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return duration_ms(text)
    except ValueError as exc:
        fail(f"--max-wait: {exc}")


@click.command("run")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--input", "-i", "pairs", multiple=True, help="NAME=VALUE (VALUE as JSON, else a string)."
)
@click.option("--inputs", "inputs_json", help="All inputs as one JSON object.")
@click.option("--event", "events", multiple=True, help="TOPIC=JSON: an event for wait_for steps.")
@click.option(
    "--approve",
    "approvers",
    multiple=True,
    help="Approve approval steps with this repo actor key (qflow id); repeatable.",
)
@click.option("--max-wait", help="Stop instead of waiting longer than this for a timer (e.g. 30s).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object; no progress.")
@repo_option
def run_command(
    file: Path,
    *,
    pairs: tuple[str, ...],
    inputs_json: str | None,
    events: tuple[str, ...],
    approvers: tuple[str, ...],
    max_wait: str | None,
    as_json: bool,
    repo: Path,
) -> None:
    """Run the flow in FILE here, with every record signed and stored in the repo."""
    from qflow_node.runtime.local import Inbox, RunError
    from qflow_node.runtime.progress import Progress
    from qflow_node.runtime.session import local_runner

    inputs = _inputs(pairs, inputs_json)
    store = open_block_store(repo)
    loaded = load_flow_or_exit(file, store)
    keys = _approvers(repo, approvers)
    wait = _max_wait(max_wait)
    ir = loaded.compiled.ir
    progress = None if as_json else Progress(ir, sys.stderr)
    inbox = Inbox(events=_events(events), approvers=keys)
    try:
        with local_runner(
            repo,
            ir,
            inbox=inbox,
            max_wait_ms=wait,
            on_event=None if progress is None else progress.update,
        ) as runner:
            try:
                result = runner.run(loaded.cid, ir, inputs)
            finally:
                if progress is not None:
                    progress.stop()
    except RunError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot use the repo {repo}: {exc}")
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False, sort_keys=True))
    else:
        click.echo(json.dumps(result.output, ensure_ascii=False, indent=2))
        click.echo(f"exec {result.exec.encode()}: {result.status}", err=True)
        if result.error is not None:
            click.echo(f"error: {result.error['kind']}: {result.error['message']}", err=True)
        click.echo(f"heads {' '.join(h.encode() for h in result.heads)}", err=True)
    if result.status != "completed":
        raise SystemExit(EXIT_CHECK_FAILED)
