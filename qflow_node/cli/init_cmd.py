"""`qflow init`: create a node repository with a fresh node key and a default config.

Running it on a repo that already has a node key changes nothing and exits 2: a node key
is the node's identity on the network and is never replaced. A repo left half-made by an
interrupted init (layout present, no node key yet) is completed, keeping what is there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import click

from qflow_node.cli.errors import CliError
from qflow_node.cli.options import repo_option
from qflow_node.fsio import atomic_write, fsync_dir
from qflow_node.identity.keys import IdentityError, SigningKey
from qflow_node.identity.store import KeyExistsError, create_node_key, ensure_private_dir
from qflow_node.repo import RepoError, RepoPaths

REPO_DIR_MODE: Final = 0o700
CONFIG_MODE: Final = 0o644

DEFAULT_CONFIG: Final = """\
# Qflow node configuration, written by `qflow init`. Edit freely; restart the node to
# apply. Every node of a subnet is equal: there is no server address to configure.

[node]
# libp2p listen addresses (multiaddrs). tcp/0 picks a free port at each start; use a
# fixed port (e.g. /ip4/0.0.0.0/tcp/4001) for a node other machines bootstrap from.
listen = ["/ip4/127.0.0.1/tcp/0"]
# Peers dialled at start, e.g. "/ip4/192.0.2.7/tcp/4001/p2p/12D3KooW...". Any one live
# member of the subnet is enough; empty means wait to be dialled.
bootstrap = []
# Subnets (groups of nodes sharing flows and validators) this node joins.
subnets = ["default"]

[store]
# Largest block stored, accepted or produced, in bytes. Bitswap peers refuse blocks over
# 2 MiB; 1 MiB is the conventional safe maximum.
max_block_size = 1048576
"""


def init_repo(root: Path) -> SigningKey:
    """Create the repo layout at `root` and its node key; return the key.

    Raises RepoError if `root` is already a repo, is not a directory, or holds anything
    that is not part of a repo layout (so a mistyped path never scatters files around).
    """
    paths = RepoPaths(root)
    if paths.node_key.exists() or paths.node_key.is_symlink():
        raise RepoError(f"{root} is already an initialised qflow repo (it has {paths.node_key})")
    _prepare_root(paths)
    for directory in (paths.blocks, paths.ledger):
        directory.mkdir(exist_ok=True)
    ensure_private_dir(paths.keys)
    ensure_private_dir(paths.actors)
    if not paths.config.exists():
        atomic_write(paths.config, DEFAULT_CONFIG.encode(), mode=CONFIG_MODE, sync_dir=False)
    fsync_dir(root)
    # The node key is written last: its presence is what marks the repo as initialised.
    try:
        return create_node_key(paths)
    except KeyExistsError:
        raise RepoError(
            f"{root} is already an initialised qflow repo (a concurrent init?)"
        ) from None


def _prepare_root(paths: RepoPaths) -> None:
    root = paths.root
    if not root.exists():
        root.mkdir(parents=True, mode=REPO_DIR_MODE)
        root.chmod(REPO_DIR_MODE)  # mkdir's mode is filtered by the umask
        fsync_dir(root.parent)
        return
    if not root.is_dir():
        raise RepoError(f"{root} exists and is not a directory")
    layout = {p.name for p in (paths.config, paths.keys, paths.blocks, paths.ledger)}
    foreign = sorted(entry.name for entry in root.iterdir() if entry.name not in layout)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RepoError(
            f"{root} is not empty and is not a qflow repo (found {shown}); "
            "choose a new or empty directory"
        )


@click.command("init")
@repo_option
def init_command(repo: Path) -> None:
    """Create a node repository: node key (the libp2p identity), config, stores."""
    root = repo.expanduser().absolute()
    try:
        key = init_repo(root)
    except (RepoError, IdentityError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot initialise {root}: {exc}") from None
    click.echo(f"initialised qflow repo at {root}")
    click.echo(f"peer id: {key.peer_id}")
