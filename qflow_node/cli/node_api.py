"""What CLI commands share to talk to the running node and to sign as an actor.

`call_node`: the node's control API (docs/api.md), or exit - 1 when no node runs on the
repo or the node answered with one of the `refused` codes (it understood and said no),
2 for anything else (bad request, node failure, timeout). `signing_key`: the repo actor
named by `--as`, else the node's own key, or exit 2.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from qflow_node.api.client import call
from qflow_node.api.errors import TIMEOUT, ApiError, NodeNotRunning, SocketPathTooLongError
from qflow_node.cli.errors import EXIT_CHECK_FAILED, EXIT_USAGE, fail
from qflow_node.identity import SigningKey
from qflow_node.identity.keys import IdentityError
from qflow_node.identity.store import load_actor_key, load_node_key
from qflow_node.repo import RepoError, RepoPaths


def call_node(
    repo: Path,
    method: str,
    params: dict[str, Any],
    *,
    timeout: float | None,
    refused: Collection[str] = (),
    say: Callable[[ApiError], str] = lambda exc: exc.message,
    patient: bool = False,
) -> Any:
    """The node's answer to `method`. With `patient`, a node too busy to answer within
    `timeout` gives None (ask again) instead of an exit. `say` words an API error."""
    root = repo.expanduser().absolute()
    try:
        return call(RepoPaths(root).api_socket, method, params, timeout=timeout, repo=root)
    except NodeNotRunning as exc:
        fail(str(exc), EXIT_CHECK_FAILED)
    except ApiError as exc:
        if patient and exc.code == TIMEOUT:
            return None
        fail(say(exc), EXIT_CHECK_FAILED if exc.code in refused else EXIT_USAGE)
    except SocketPathTooLongError as exc:
        fail(str(exc))


def signing_key(repo: Path, actor: str | None) -> SigningKey:
    """The key to sign with: repo actor `actor` (`qflow id new`), else the node key."""
    paths = RepoPaths(repo.expanduser().absolute())
    try:
        paths.require_initialised()
        return load_node_key(paths) if actor is None else load_actor_key(paths, actor)
    except (RepoError, IdentityError, OSError) as exc:
        fail(f"--as {actor}: {exc}" if actor is not None else str(exc), EXIT_USAGE)
