"""The on-disk layout of a node repository (`qflow init --repo DIR`).

    DIR/config.toml          node configuration
    DIR/keys/node.key        node Ed25519 seed (0600); also the libp2p identity
    DIR/keys/actors/NAME.key actor Ed25519 seeds (0600), did:key identities
    DIR/blocks/              block store (sharded), owned by qflow_node.store
    DIR/ledger/              heads journal (heads.log), owned by the ledger glue
    DIR/run/peers.json       the running node's membership snapshot (`qflow peers`)
    DIR/run/api.sock         the running node's control API socket (docs/api.md)

One place names these paths so every part of the node agrees on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class RepoError(Exception):
    """The repository is missing, incomplete or unreadable."""


@dataclass(frozen=True, slots=True)
class RepoPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def node_key(self) -> Path:
        return self.keys / "node.key"

    @property
    def actors(self) -> Path:
        return self.keys / "actors"

    def actor_key(self, name: str) -> Path:
        return self.actors / f"{name}.key"

    @property
    def blocks(self) -> Path:
        return self.root / "blocks"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def peers_snapshot(self) -> Path:
        return self.run / "peers.json"

    @property
    def api_socket(self) -> Path:
        return self.run / "api.sock"

    def require_initialised(self) -> None:
        if not self.node_key.is_file():
            raise RepoError(
                f"{self.root} is not an initialised qflow repo (no {self.node_key}); "
                f"run `qflow init --repo {self.root}`"
            )
