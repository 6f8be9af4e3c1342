"""`qflow id`: show the node's identity, create and show actor identities (did:key)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from qflow_node.cli.errors import CliError
from qflow_node.cli.options import repo_option
from qflow_node.identity.keys import IdentityError, SigningKey
from qflow_node.identity.store import (
    create_actor_key,
    list_actors,
    load_actor_key,
    load_node_key,
)
from qflow_node.repo import RepoError, RepoPaths

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (one line) instead of text."
)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn expected failures (bad repo, bad key file, bad name) into exit 2, one line."""
    try:
        yield
    except (RepoError, IdentityError, OSError) as exc:
        raise CliError(str(exc)) from None


def _open_repo(repo: Path) -> RepoPaths:
    paths = RepoPaths(repo.expanduser().absolute())
    paths.require_initialised()
    return paths


def _node_info(paths: RepoPaths, key: SigningKey) -> dict[str, Any]:
    return {
        "kind": "node",
        "peer_id": key.peer_id,
        "did": key.did,
        "public_key": key.public_key.hex(),
        "repo": str(paths.root),
    }


def _actor_info(name: str, key: SigningKey) -> dict[str, Any]:
    return {"kind": "actor", "name": name, "did": key.did, "public_key": key.public_key.hex()}


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value))


@click.group("id")
def id_group() -> None:
    """Node and actor identities: libp2p peer ids and did:key."""


@id_group.command("show")
@repo_option
@json_option
@click.argument("name", required=False)
def show_command(repo: Path, as_json: bool, name: str | None) -> None:
    """Show the node's peer id and did:key, or actor NAME's did:key."""
    with _user_errors():
        paths = _open_repo(repo)
        if name is None:
            key = load_node_key(paths)
            info = _node_info(paths, key)
        else:
            key = load_actor_key(paths, name)
            info = _actor_info(name, key)
    if as_json:
        _emit_json(info)
    elif name is None:
        click.echo(f"peer id: {info['peer_id']}")
        click.echo(f"did: {info['did']}")
    else:
        click.echo(info["did"])


@id_group.command("new")
@repo_option
@json_option
@click.argument("name")
def new_command(repo: Path, as_json: bool, name: str) -> None:
    """Create a key for actor NAME (a did:key identity) and print its did."""
    with _user_errors():
        paths = _open_repo(repo)
        key = create_actor_key(paths, name)
    if as_json:
        _emit_json(_actor_info(name, key))
    else:
        click.echo(key.did)


@id_group.command("list")
@repo_option
@json_option
def list_command(repo: Path, as_json: bool) -> None:
    """List the actor identities in the repo: name and did."""
    with _user_errors():
        paths = _open_repo(repo)
        infos = [_actor_info(name, load_actor_key(paths, name)) for name in list_actors(paths)]
    if as_json:
        _emit_json(infos)
    else:
        for info in infos:
            click.echo(f"{info['name']}\t{info['did']}")
