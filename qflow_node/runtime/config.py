"""Node configuration: `<repo>/config.toml` (written by `qflow init`), CLI overrides, checks.

Every value is checked before the node starts, and a bad one is reported with where it
came from (`config.toml [node] listen[0]` or `--listen`) and why. Unknown sections and
keys are errors too: a misspelt key silently ignored is a setting silently not applied.
"""

from __future__ import annotations

import reprlib
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.identity.keys import IdentityError, public_key_from_did
from qflow_node.net.gossip import GossipSettings
from qflow_node.net.host import ConnectionLimits
from qflow_node.net.topics import TopicError, validate_subnet
from qflow_node.runtime.exec_service import ExecSettings
from qflow_node.runtime.heads_service import HeadsSettings
from qflow_node.store.kubo_rpc import KuboAddressError, api_url

# Bitswap peers refuse blocks over 2 MiB (see DEFAULT_CONFIG in qflow_node/cli/init_cmd.py).
MAX_BLOCK_SIZE_LIMIT: Final = 2 << 20
DEFAULT_MAX_BLOCK_SIZE: Final = 1 << 20
DEFAULT_SHUTDOWN_TIMEOUT: Final = 10.0
DEFAULT_HEARTBEAT_INTERVAL: Final = 1.0

# section -> allowed keys
_SCHEMA: Final = {
    "node": {"listen", "bootstrap", "subnets", "shutdown_timeout"},
    "store": {"max_block_size", "ipfs_api"},
    "net": {"max_connections", "max_connections_per_peer", "dial_timeout"},
    "membership": {"heartbeat_interval"},
    "ledger": {"announce_interval", "active_window"},
    "exec": {
        "delta_ms",
        "lease_ms",
        "work_slots",
        "admins",
        "admission_burst",
        "admission_per_s",
        "resume_hold_ms",
    },
    "debug": {"partition_api"},
    "critical": {"policy", "share"},
    "gossip": {
        "heartbeat_interval",
        "degree",
        "degree_low",
        "degree_high",
        "max_messages_per_second",
        "max_message_size",
    },
}


class ConfigError(ValueError):
    """A configuration that cannot be used, with the place and the reason."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    listen: tuple[Multiaddr, ...]
    bootstrap: tuple[Multiaddr, ...] = ()
    subnets: tuple[str, ...] = ("default",)
    max_block_size: int = DEFAULT_MAX_BLOCK_SIZE
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    gossip: GossipSettings = field(default_factory=GossipSettings)
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL  # membership heartbeats, seconds
    ipfs_api: str | None = None  # Kubo RPC API multiaddr; None = the repo's FileBlockStore
    ledger_sync: HeadsSettings = field(default_factory=HeadsSettings)  # heads anti-entropy
    exec: ExecSettings = field(default_factory=ExecSettings)  # claims and leases
    partition_api: bool = False  # serve `debug.partition` (chaos tests only)
    critical: CriticalFiles | None = None  # the subnet policy in force (docs/consensus.md)


@dataclass(frozen=True, slots=True)
class CriticalFiles:
    """`[critical]`: the subnet policy block in force (`qflow subnet create` writes it)
    and, on a validator, its sealed share; paths relative to the repo."""

    policy: Path
    share: Path | None = None


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line values; each one given replaces the config file's list (or value)."""

    listen: Sequence[str] = ()
    bootstrap: Sequence[str] = ()
    subnets: Sequence[str] = ()
    ipfs_api: str | None = None


def load_config(path: Path, overrides: Overrides | None = None) -> NodeConfig:
    """Read `path` (TOML), apply `overrides`, validate. Raises ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, source=path.name, overrides=overrides)


def parse_config(
    data: dict[str, Any], *, source: str = "config", overrides: Overrides | None = None
) -> NodeConfig:
    overrides = overrides or Overrides()
    _check_schema(data, source)
    node, store = data.get("node", {}), data.get("store", {})
    net, gossip = data.get("net", {}), data.get("gossip", {})

    def where(section: str, key: str) -> str:
        return f"{source} [{section}] {key}"

    listen = _strings_or_override(node, "listen", overrides.listen, where("node", "listen"))
    bootstrap = _strings_or_override(
        node, "bootstrap", overrides.bootstrap, where("node", "bootstrap"), default=[]
    )
    subnets = _strings_or_override(
        node, "subnets", overrides.subnets, where("node", "subnets"), default=["default"]
    )
    if not listen[1]:
        raise ConfigError(f"{listen[0]}: at least one listen address is required")
    if not subnets[1]:
        raise ConfigError(f"{subnets[0]}: at least one subnet is required")
    n, g = _Section(net, f"{source} [net]"), _Section(gossip, f"{source} [gossip]")
    d = GossipSettings()
    try:
        limits = ConnectionLimits(
            max_connections=n.integer("max_connections", 200, 1),
            max_connections_per_peer=n.integer("max_connections_per_peer", 2, 1),
            dial_timeout=n.number("dial_timeout", 10.0, 0.1),
        )
        gossip_settings = GossipSettings(
            heartbeat_interval=g.integer("heartbeat_interval", d.heartbeat_interval, 1),
            degree=g.integer("degree", d.degree, 1),
            degree_low=g.integer("degree_low", d.degree_low, 1),
            degree_high=g.integer("degree_high", d.degree_high, 1),
            max_messages_per_second=g.number(
                "max_messages_per_second", d.max_messages_per_second, 0.0
            ),
            max_message_size=g.integer("max_message_size", d.max_message_size, 1),
        )
    except ConfigError:
        raise
    except ValueError as exc:  # cross-field checks of the settings classes
        raise ConfigError(f"{source}: {exc}") from None
    max_block_size = _Section(store, f"{source} [store]").integer(
        "max_block_size", DEFAULT_MAX_BLOCK_SIZE, 1
    )
    if max_block_size > MAX_BLOCK_SIZE_LIMIT:
        raise ConfigError(
            f"{where('store', 'max_block_size')}: {max_block_size} exceeds "
            f"{MAX_BLOCK_SIZE_LIMIT} (bitswap peers refuse larger blocks)"
        )
    shutdown_timeout = _Section(node, f"{source} [node]").number(
        "shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT, 0.1
    )
    heartbeat_interval = _Section(data.get("membership", {}), f"{source} [membership]").number(
        "heartbeat_interval", DEFAULT_HEARTBEAT_INTERVAL, 0.05
    )
    lg, dl = _Section(data.get("ledger", {}), f"{source} [ledger]"), HeadsSettings()
    ledger_sync = HeadsSettings(
        announce_interval=lg.number("announce_interval", dl.announce_interval, 0.05),
        active_window=lg.number("active_window", dl.active_window, 1.0),
    )
    ex, de = _Section(data.get("exec", {}), f"{source} [exec]"), ExecSettings()
    exec_settings = ExecSettings(
        delta_ms=ex.integer("delta_ms", de.delta_ms, 1),
        lease_ms=ex.integer("lease_ms", de.lease_ms, 30),
        work_slots=ex.integer("work_slots", de.work_slots, 1),
        admission_burst=ex.integer("admission_burst", de.admission_burst, 1),
        admission_per_s=ex.number("admission_per_s", de.admission_per_s, 0.001),
        resume_hold_ms=_resume_hold(ex, ledger_sync, heartbeat_interval),
        admins=_admins(data.get("exec", {}).get("admins", []), where("exec", "admins")),
    )
    if overrides.ipfs_api is not None:
        ipfs_api = _ipfs_api(overrides.ipfs_api, "--ipfs-api")
    elif "ipfs_api" in store:
        ipfs_api = _ipfs_api(store["ipfs_api"], where("store", "ipfs_api"))
    else:
        ipfs_api = None
    return NodeConfig(
        listen=tuple(_listen_addr(a, f"{listen[0]}[{i}]") for i, a in enumerate(listen[1])),
        bootstrap=tuple(
            _bootstrap_addr(a, f"{bootstrap[0]}[{i}]") for i, a in enumerate(bootstrap[1])
        ),
        subnets=_subnets(subnets[1], subnets[0]),
        max_block_size=max_block_size,
        shutdown_timeout=shutdown_timeout,
        limits=limits,
        gossip=gossip_settings,
        heartbeat_interval=heartbeat_interval,
        ipfs_api=ipfs_api,
        ledger_sync=ledger_sync,
        exec=exec_settings,
        partition_api=_flag(
            data.get("debug", {}), "partition_api", where("debug", "partition_api")
        ),
        critical=_critical(data.get("critical"), f"{source} [critical]"),
    )


def _critical(section: dict[str, Any] | None, where: str) -> CriticalFiles | None:
    if section is None:
        return None
    paths: dict[str, Path] = {}
    for key in ("policy", "share"):
        value = section.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} {key}: must be a path (a string), got {value!r}")
        paths[key] = Path(value)
    if "policy" not in paths:
        raise ConfigError(f"{where} policy: missing (the subnet policy block file)")
    return CriticalFiles(paths["policy"], paths.get("share"))


def _resume_hold(section: _Section, sync: HeadsSettings, heartbeat_s: float) -> int:
    """Default: two heads announcements (the records missed while down arrive) and three
    heartbeats (the others count the node alive again before it claims anything)."""
    default = int(2000 * sync.announce_interval + 3000 * heartbeat_s) + 250
    return section.integer("resume_hold_ms", default, 0)


def _flag(section: dict[str, Any], key: str, place: str) -> bool:
    value = section.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{place}: must be true or false, got {value!r}")
    return value


def _admins(value: object, place: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{place}: must be a list of did:key strings")
    for did in value:
        try:
            public_key_from_did(did)
        except IdentityError as exc:
            raise ConfigError(f"{place}: {did!r} is not an Ed25519 did:key: {exc}") from None
    return tuple(value)


def _check_schema(data: dict[str, Any], source: str) -> None:
    for section, body in data.items():
        if section not in _SCHEMA:
            known = ", ".join(f"[{s}]" for s in _SCHEMA)
            raise ConfigError(f"{source}: unknown section [{section}] (known: {known})")
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: {section} must be a table ([{section}])")
        for key in body:
            if key not in _SCHEMA[section]:
                known = ", ".join(sorted(_SCHEMA[section]))
                raise ConfigError(f"{source} [{section}]: unknown key {key!r} (known: {known})")


def _strings_or_override(
    table: dict[str, Any],
    key: str,
    override: Sequence[str],
    where: str,
    default: list[str] | None = None,
) -> tuple[str, list[str]]:
    """(where the list came from, the list)."""
    if override:
        return f"--{key.removesuffix('s')}", list(override)
    if key not in table:
        if default is None:
            raise ConfigError(f"{where}: missing (a list of strings)")
        return where, default
    value = table[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of strings, got {value!r}")
    return where, value


class _Section:
    """Typed reads from one TOML table, with errors naming the key."""

    def __init__(self, table: dict[str, Any], where: str) -> None:
        self._table = table
        self._where = where

    def integer(self, key: str, default: int, minimum: int) -> int:
        return int(self._read(key, default, minimum, integer=True))

    def number(self, key: str, default: float, minimum: float) -> float:
        return float(self._read(key, default, minimum, integer=False))

    def _read(self, key: str, default: float, minimum: float, *, integer: bool) -> float:
        if key not in self._table:
            return default
        value = self._table[key]
        # bool is an int in Python; `true` is never a count or a duration.
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            expected = "an integer" if integer else "a number"
            raise ConfigError(f"{self._where} {key}: must be {expected}, got {value!r}")
        if value < minimum:
            raise ConfigError(f"{self._where} {key}: must be at least {minimum}, got {value!r}")
        return float(value) if not integer else value


def _multiaddr(text: str, where: str) -> Multiaddr:
    try:
        return Multiaddr(text)
    except Exception as exc:  # multiaddr raises several unrelated types
        # reprlib keeps a hostile or mistaken value from flooding the one-line error.
        raise ConfigError(
            f"{where}: {reprlib.repr(text)} is not a valid multiaddr ({reprlib.repr(str(exc))})"
        ) from None


def _listen_addr(text: str, where: str) -> Multiaddr:
    addr = _multiaddr(text, where)
    names = [p.name for p in addr.protocols()]
    if len(names) != 2 or names[0] not in {"ip4", "ip6"} or names[1] != "tcp":
        raise ConfigError(
            f"{where}: {text!r} is not a TCP listen address "
            "(expected /ip4/<address>/tcp/<port> or /ip6/<address>/tcp/<port>)"
        )
    return addr


def _bootstrap_addr(text: str, where: str) -> Multiaddr:
    addr = _multiaddr(text, where)
    names = [p.name for p in addr.protocols()]
    if not names or names[-1] != "p2p" or "tcp" not in names:
        raise ConfigError(
            f"{where}: {text!r} must be a TCP address ending in the peer id, "
            "e.g. /ip4/192.0.2.7/tcp/4001/p2p/12D3KooW..."
        )
    try:
        info_from_p2p_addr(addr)
    except Exception as exc:
        raise ConfigError(f"{where}: {text!r} has an invalid peer id ({exc})") from None
    return addr


def _ipfs_api(value: object, where: str) -> str:
    """A Kubo RPC API multiaddr, checked the way `KuboRpcBlockStore` will read it."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string (a multiaddr), got {reprlib.repr(value)}")
    try:
        api_url(value)
    except KuboAddressError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return value


def _subnets(names: list[str], where: str) -> tuple[str, ...]:
    seen: list[str] = []
    for i, name in enumerate(names):
        try:
            validate_subnet(name)
        except TopicError as exc:
            raise ConfigError(f"{where}[{i}]: {exc}") from None
        if name not in seen:
            seen.append(name)
    return tuple(seen)
