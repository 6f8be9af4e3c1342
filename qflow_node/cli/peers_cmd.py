"""`qflow peers`: the running node's live set, read from its membership snapshot.

There is no control API yet: the node rewrites `<repo>/run/peers.json` every half
heartbeat interval and removes it when it stops. Missing file: no node is running.
A snapshot older than `STALE_INTERVALS` heartbeat intervals: the node probably died.
Exit codes: 0 a fresh snapshot was shown, 1 no node running or stale snapshot, 2 usage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Final

import click

from qflow_node.cli.errors import EXIT_CHECK_FAILED, fail
from qflow_node.cli.options import repo_option
from qflow_node.repo import RepoPaths

STALE_INTERVALS: Final = 5
MIN_STALE_SECONDS: Final = 3.0


@click.command("peers")
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
def peers_command(repo: Path, as_json: bool) -> None:
    """Show the peers the running node hears heartbeats from, and their state."""
    path = RepoPaths(repo.expanduser().absolute()).peers_snapshot
    snapshot = _read(path)
    age = max(0.0, time.time() - float(snapshot["updated_at"]))
    stale = age > max(MIN_STALE_SECONDS, STALE_INTERVALS * float(snapshot["heartbeat_interval"]))
    if as_json:
        click.echo(json.dumps({**snapshot, "age": round(age, 3), "stale": stale}, indent=2))
    else:
        _print_table(snapshot)
    if stale:
        fail(f"the snapshot {path} is {age:.1f} s old (node not running?)", EXIT_CHECK_FAILED)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        fail(f"no node is running on this repo (no snapshot at {path})", EXIT_CHECK_FAILED)
    except (OSError, ValueError) as exc:
        fail(f"cannot read the snapshot {path}: {exc}")
    if not isinstance(data, dict) or not {"updated_at", "heartbeat_interval", "peers"} <= set(data):
        fail(f"{path} is not a peers snapshot")
    return data


def _print_table(snapshot: dict[str, Any]) -> None:
    click.echo(f"node {snapshot['node']}  subnets {','.join(snapshot.get('subnets', []))}")
    peers = snapshot["peers"]
    if not peers:
        click.echo("no peers heard yet")
        return
    now = time.time()
    click.echo(f"{'PEER':<54} {'STATE':<8} {'SEEN':>7} {'LOAD':>5} {'ENGINE':<18} SUBNETS")
    for peer in peers:
        manifest = peer["manifest"]
        seen = f"{max(0.0, now - float(peer['last_seen'])):.1f}s"
        click.echo(
            f"{peer['node']:<54} {peer['state']:<8} {seen:>7} {manifest['load']:>5} "
            f"{manifest['wasm_engine']:<18} {','.join(peer['subnets'])}"
        )
