"""`qflow pause|resume|abort EXEC` and `qflow approve|deny EXEC STEP`: signed controls.

The control is signed here with the actor's key - the repo actor named by `--as`
(`qflow id new NAME`), else the node's own key, as for `qflow submit` - and handed to
the running node, which checks the actor may (the submitter or a subnet admin for
pause/resume/abort; the step's approvers or an admin for approve/deny), gossips it to
the subnet, and the execution records it. Exit codes: 0 accepted, 1 refused (the reason
is printed) or no node running, 2 usage error.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Final, Literal

import click

from qflow_node.cli.node_api import call_node, signing_key
from qflow_node.cli.options import repo_option
from qflow_node.codec import CID, parse_cid
from qflow_node.codec.envelope import encode_body
from qflow_node.codec.envelope_bodies import Control
from qflow_node.core.envelopes import sign_control

Action = Literal["pause", "resume", "abort", "approve", "deny"]
_TIMEOUT: Final = 10.0
# Codes meaning "the node understood and said no", not a usage error.
_REFUSED: Final = frozenset({"rejected", "not_found", "unavailable"})


def _exec(text: str) -> CID:
    try:
        return parse_cid(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="EXEC") from None


def _send(repo: Path, actor: str | None, exec_text: str, action: Action, step: str | None) -> None:
    key = signing_key(repo, actor)
    unsigned = Control(
        exec=_exec(exec_text),
        action=action,
        step=step,
        actor=key.did,
        ts=time.time_ns() // 1_000_000,
        nonce=os.urandom(16),
        sig=bytes(64),
    )
    body = base64.b64encode(encode_body(sign_control(key, unsigned))).decode()
    result = call_node(
        repo,
        "control",
        {"body_b64": body},
        timeout=_TIMEOUT,
        refused=_REFUSED,
        say=lambda exc: f"{action} refused: {exc.message}",
    )
    again = " (already given)" if result.get("duplicate") else ""
    target = f"{exec_text} {step}" if step else exec_text
    click.echo(f"{action}: {target}: accepted by the node{again}", err=True)


_as_option = click.option(
    "--as", "actor", metavar="NAME", help="Sign as this repo actor (default: the node key)."
)


def _exec_command(action: Action, summary: str) -> click.Command:
    @click.command(action, help=summary)
    @repo_option
    @_as_option
    @click.argument("exec_text", metavar="EXEC")
    def command(repo: Path, actor: str | None, exec_text: str) -> None:
        _send(repo, actor, exec_text, action, None)

    return command


def _step_command(action: Action, summary: str) -> click.Command:
    @click.command(action, help=summary)
    @repo_option
    @_as_option
    @click.argument("exec_text", metavar="EXEC")
    @click.argument("step")
    def command(repo: Path, actor: str | None, exec_text: str, step: str) -> None:
        _send(repo, actor, exec_text, action, step)

    return command


pause_command = _exec_command("pause", "Pause an execution (the submitter or an admin).")
resume_command = _exec_command("resume", "Resume a paused execution.")
abort_command = _exec_command("abort", "Abort an execution: it compensates and stops.")
approve_command = _step_command("approve", "Approve an approval step waiting for you.")
deny_command = _step_command("deny", "Deny an approval step waiting for you.")
