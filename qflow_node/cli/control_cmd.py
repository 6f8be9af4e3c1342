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

from qflow_node.api.client import call
from qflow_node.api.errors import ApiError, NodeNotRunning, SocketPathTooLongError
from qflow_node.cli.errors import EXIT_CHECK_FAILED, EXIT_USAGE, fail
from qflow_node.cli.options import repo_option
from qflow_node.codec import CID, parse_cid
from qflow_node.codec.envelope import encode_body
from qflow_node.codec.envelope_bodies import Control
from qflow_node.core.envelopes import sign_control
from qflow_node.identity import SigningKey
from qflow_node.identity.keys import IdentityError
from qflow_node.identity.store import load_actor_key, load_node_key
from qflow_node.repo import RepoError, RepoPaths

Action = Literal["pause", "resume", "abort", "approve", "deny"]
_TIMEOUT: Final = 10.0
# Codes meaning "the node understood and said no", not a usage error.
_REFUSED: Final = frozenset({"rejected", "not_found", "unavailable"})


def _actor(repo: Path, name: str | None) -> SigningKey:
    paths = RepoPaths(repo.expanduser().absolute())
    try:
        paths.require_initialised()
        return load_node_key(paths) if name is None else load_actor_key(paths, name)
    except (RepoError, IdentityError, OSError) as exc:
        fail(f"--as {name}: {exc}" if name is not None else str(exc), EXIT_USAGE)


def _exec(text: str) -> CID:
    try:
        return parse_cid(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="EXEC") from None


def _send(repo: Path, actor: str | None, exec_text: str, action: Action, step: str | None) -> None:
    key = _actor(repo, actor)
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
    root = repo.expanduser().absolute()
    try:
        result = call(
            RepoPaths(root).api_socket, "control", {"body_b64": body}, timeout=_TIMEOUT, repo=root
        )
    except NodeNotRunning as exc:
        fail(str(exc), EXIT_CHECK_FAILED)
    except ApiError as exc:
        code = EXIT_CHECK_FAILED if exc.code in _REFUSED else EXIT_USAGE
        fail(f"{action} refused: {exc.message}", code)
    except SocketPathTooLongError as exc:
        fail(str(exc), EXIT_USAGE)
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
