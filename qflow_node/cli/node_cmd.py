"""`qflow node run|boot-check`: the node daemon and its boot check.

Exit codes (docs/operator.md): 0 stopped cleanly (or the check passed); 2 usage, bad
config, repo or key; 3 boot check failed: IPFS (block store put/get); 4 boot check
failed: libp2p (cannot listen, pubsub not running); 1 an unexpected crash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import click
import trio

from qflow_node.cli.errors import EXIT_USAGE, fail
from qflow_node.cli.node_api import call_node
from qflow_node.cli.options import repo_option
from qflow_node.identity import SigningKey
from qflow_node.identity.store import KeyFileError, load_node_key
from qflow_node.log import configure_logging, get_logger
from qflow_node.repo import RepoError, RepoPaths
from qflow_node.runtime.bootcheck import BootCheckFailed, run_boot_check
from qflow_node.runtime.config import ConfigError, NodeConfig, Overrides, load_config
from qflow_node.runtime.daemon import serve

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (TOML). Default: <repo>/config.toml.",
)
_listen_option = click.option(
    "--listen",
    multiple=True,
    metavar="MULTIADDR",
    help="Listen address, e.g. /ip4/0.0.0.0/tcp/4001 (repeatable; replaces [node] listen).",
)
_ipfs_api_option = click.option(
    "--ipfs-api",
    "ipfs_api",
    metavar="MULTIADDR",
    default=None,
    help="Keep blocks in the Kubo whose RPC API is here, e.g. /ip4/127.0.0.1/tcp/5001 "
    "(replaces [store] ipfs_api).",
)


@click.group("node", context_settings={"help_option_names": ["-h", "--help"]})
def node_group() -> None:
    """Run this machine's Qflow node."""


@node_group.command("run")
@repo_option
@_config_option
@_listen_option
@_ipfs_api_option
@click.option(
    "--bootstrap",
    multiple=True,
    metavar="MULTIADDR",
    help="Peer to dial, ending in /p2p/<peer id> (repeatable; replaces [node] bootstrap).",
)
@click.option(
    "--subnet",
    multiple=True,
    metavar="NAME",
    help="Subnet to join (repeatable; replaces [node] subnets).",
)
@click.pass_context
def run_command(
    ctx: click.Context,
    *,
    repo: Path,
    config_path: Path | None,
    listen: tuple[str, ...],
    bootstrap: tuple[str, ...],
    subnet: tuple[str, ...],
    ipfs_api: str | None,
) -> None:
    """Boot check, then serve until SIGINT/SIGTERM. Logs JSON lines on stderr.

    The node refuses to start (exit 3 or 4) unless the block store answers a real
    put/get round trip and libp2p listens on every address with pubsub running.
    """
    _json_logging(ctx)
    paths, config, key = _prepare(repo, config_path, Overrides(listen, bootstrap, subnet, ipfs_api))
    try:
        trio.run(serve, paths, config, key)
    except BootCheckFailed as exc:
        get_logger("qflow.node", node=key.peer_id).error(
            "boot.failed", part=exc.part, check=exc.name, error=str(exc), exit_code=exc.exit_code
        )
        fail(str(exc), exc.exit_code)


@node_group.command("boot-check")
@repo_option
@_config_option
@_listen_option
@_ipfs_api_option
def boot_check_command(
    repo: Path, config_path: Path | None, listen: tuple[str, ...], ipfs_api: str | None
) -> None:
    """Run the node's boot check alone: IPFS put/get, libp2p listen and pubsub.

    Uses the configured listen addresses, so it fails (exit 4) on a fixed port the
    running node holds; pass --listen /ip4/127.0.0.1/tcp/0 to check a running node's repo.
    """
    paths, config, key = _prepare(repo, config_path, Overrides(listen=listen, ipfs_api=ipfs_api))
    try:
        probes = trio.run(run_boot_check, paths, config, key)
    except BootCheckFailed as exc:
        fail(str(exc), exc.exit_code)
    for probe in probes:
        click.echo(f"ok  {probe.part} {probe.name}: {probe.detail}")


def _prepare(
    repo: Path, config_path: Path | None, overrides: Overrides
) -> tuple[RepoPaths, NodeConfig, SigningKey]:
    paths = RepoPaths(repo.expanduser().absolute())
    try:
        paths.require_initialised()
        key = load_node_key(paths)
    except (RepoError, KeyFileError) as exc:
        fail(str(exc), EXIT_USAGE)
    try:
        config = load_config(config_path or paths.config, overrides)
    except ConfigError as exc:
        fail(f"bad configuration: {exc}", EXIT_USAGE)
    return paths, config, key


def _json_logging(ctx: click.Context) -> None:
    """Daemons log JSON lines; INFO unless `qflow --log-level` was given."""
    root = ctx.find_root()
    source = root.get_parameter_source("log_level")
    explicit = source is not None and source != click.core.ParameterSource.DEFAULT
    level = str(root.params.get("log_level", "INFO")) if explicit else "INFO"
    configure_logging("json", level=level)


_STATUS_TIMEOUT: Final = 10.0


@node_group.command("status")
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def status_command(repo: Path, as_json: bool) -> None:
    """Ask the node running on the repo how it is (over its control API)."""
    status = call_node(repo, "node.status", {}, timeout=_STATUS_TIMEOUT)
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    width = max((len(name) for name in status), default=0) + 2
    for name, value in status.items():
        shown = value if isinstance(value, str) else json.dumps(value)
        click.echo(f"{name:<{width}}{shown}")
