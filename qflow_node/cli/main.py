"""The `qflow` command: one click group, subcommands imported only when used.

Lazy loading keeps `qflow sentinel check` (run in every CI) from importing libp2p or
wasmtime. Exit codes across all commands: 0 success, 1 a check failed (findings,
invalid ledger), 2 usage or I/O error.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from qflow_node import __version__
from qflow_node.log import configure_logging

# name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "sentinel": "sentinel.cli:sentinel_group",
    "init": "qflow_node.cli.init_cmd:init_command",
    "id": "qflow_node.cli.id_cmd:id_group",
    "block": "qflow_node.cli.block_cmd:block_group",
    "ledger": "qflow_node.cli.ledger_cmd:ledger_group",
    "step": "qflow_node.cli.step_cmd:step_group",
    "cap": "qflow_node.cli.cap_cmd:cap_group",
    "subnet": "qflow_node.cli.subnet_cmd:subnet_group",
    "flow": "qflow_node.cli.flow_cmd:flow_group",
    "run": "qflow_node.cli.run_cmd:run_command",
    "submit": "qflow_node.cli.submit_cmd:submit_command",
    "node": "qflow_node.cli.node_cmd:node_group",
    "peers": "qflow_node.cli.peers_cmd:peers_command",
    "watch": "qflow_node.cli.exec_cmds:watch_command",
    "status": "qflow_node.cli.exec_cmds:status_command",
    "logs": "qflow_node.cli.exec_cmds:logs_command",
    "pause": "qflow_node.cli.control_cmd:pause_command",
    "resume": "qflow_node.cli.control_cmd:resume_command",
    "abort": "qflow_node.cli.control_cmd:abort_command",
    "approve": "qflow_node.cli.control_cmd:approve_command",
    "deny": "qflow_node.cli.control_cmd:deny_command",
}


class LazyGroup(click.Group):
    """A group whose subcommands live in modules imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self._lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qflow")
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="Readable console lines or JSON lines (for daemons and log shippers).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="WARNING",
    show_default=True,
)
def qflow(log_format: str, log_level: str) -> None:
    """Qflow: a peer-to-peer automation engine with no central server."""
    configure_logging("json" if log_format == "json" else "console", level=log_level)


def main() -> None:
    qflow()
