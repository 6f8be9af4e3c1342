"""The sentinel's boot check: prove IPFS and libp2p work before the node serves.

No degraded mode: if the block store cannot do a real put/get round trip, or the host is
not listening on every configured address with pubsub running, the node refuses to start
with a clear message and a distinct exit code (docs/operator.md, "Exit codes").

What "IPFS works" means: the probe writes a fresh raw block through the node's block
store (so the write really reaches the disk, or the Kubo it is configured to use), reads
it back verified against its CID, compares and deletes it; and bitswap answers on the
host under every protocol id peers use (`/ipfs/bitswap/1.2.0` and older), so Kubo and
Qflow peers can fetch our blocks. Protocols later services need are passed as
`required_protocols` and checked on the host.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import trio
from libp2p.abc import IHost
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.identity.identify.identify import ID as IDENTIFY_PROTOCOL
from multiaddr import Multiaddr

from qflow_node.codec import raw_block
from qflow_node.identity import SigningKey
from qflow_node.net.bitswap import PROTOCOLS as BITSWAP_PROTOCOLS
from qflow_node.net.bitswap import open_bitswap
from qflow_node.net.gossip import Gossip, open_gossip
from qflow_node.net.host import build_host, listening_on
from qflow_node.repo import RepoPaths
from qflow_node.runtime.config import NodeConfig
from qflow_node.store import FileBlockStore, StoreError
from qflow_node.store.kubo_rpc import KuboRpcBlockStore
from qflow_node.store.service import BlockService

EXIT_BOOT_IPFS: Final = 3
EXIT_BOOT_LIBP2P: Final = 4
EXIT_BOOT_REPO: Final = 5
IPFS_PROBE_TIMEOUT: Final = 10.0

Part = Literal["ipfs", "libp2p", "repo"]
_EXIT_CODES: Final = {"ipfs": EXIT_BOOT_IPFS, "libp2p": EXIT_BOOT_LIBP2P, "repo": EXIT_BOOT_REPO}


@dataclass(frozen=True, slots=True)
class Probe:
    """One passed check, for the report and the `ready` log line."""

    part: Part
    name: str
    detail: str


class BootCheckFailed(Exception):
    """A boot check that failed; `exit_code` tells which part."""

    def __init__(self, part: Part, name: str, message: str) -> None:
        super().__init__(f"boot check failed: {part} {name}: {message}")
        self.part = part
        self.name = name
        self.exit_code = _EXIT_CODES[part]


def open_block_store(paths: RepoPaths, config: NodeConfig) -> FileBlockStore | KuboRpcBlockStore:
    """The repo's `FileBlockStore`, or the Kubo at `config.ipfs_api` (not contacted yet)."""
    if config.ipfs_api is not None:
        try:
            return KuboRpcBlockStore(config.ipfs_api, max_block_size=config.max_block_size)
        except StoreError as exc:
            raise BootCheckFailed("ipfs", "block store", str(exc)) from None
    try:
        return FileBlockStore(paths.blocks, max_block_size=config.max_block_size)
    except (StoreError, OSError) as exc:
        raise BootCheckFailed("ipfs", "block store", f"cannot open {paths.blocks}: {exc}") from None


async def check_ipfs(store: FileBlockStore | KuboRpcBlockStore) -> list[Probe]:
    """A real block put + get round trip; raises BootCheckFailed."""
    where = str(store.root) if isinstance(store, FileBlockStore) else store.location
    # Unique content: an existing block would make `put` a no-op and prove nothing.
    block = raw_block(b"qflow boot check " + os.urandom(16) + str(time.time_ns()).encode())
    started = time.perf_counter()

    def round_trip() -> bytes:
        store.put(block)
        try:
            return store.get(block.cid)
        finally:
            store.delete(block.cid)

    try:
        with trio.fail_after(IPFS_PROBE_TIMEOUT):
            # abandon_on_cancel: a hung disk must not hang the boot; the thread is left.
            # (the installed trio-stubs predate abandon_on_cancel; trio 0.35 has it.)
            data = await trio.to_thread.run_sync(round_trip, abandon_on_cancel=True)  # type: ignore[call-arg]
    except trio.TooSlowError:
        raise BootCheckFailed(
            "ipfs", "put/get", f"no answer from {where} within {IPFS_PROBE_TIMEOUT:g} s"
        ) from None
    except (StoreError, OSError) as exc:
        # Kubo's errors already name the API address; say where only if they do not.
        detail = str(exc) if where in str(exc) else f"{where}: {exc}"
        raise BootCheckFailed("ipfs", "put/get", detail) from None
    if data != block.data:
        raise BootCheckFailed("ipfs", "put/get", f"{where} returned different bytes")
    ms = (time.perf_counter() - started) * 1000
    return [
        Probe("ipfs", "put/get", f"round trip of {block.cid.encode()} via {where} in {ms:.1f} ms"),
    ]


def check_bitswap(host: IHost) -> Probe:
    """Bitswap answers on the host (every protocol id Kubo and Qflow peers open)."""
    handlers = set(host.get_mux().handlers)
    missing = [p for p in BITSWAP_PROTOCOLS if p not in handlers]
    if missing:
        raise BootCheckFailed("ipfs", "bitswap", f"no handler for {', '.join(missing)}")
    return Probe("ipfs", "bitswap", f"serving {', '.join(BITSWAP_PROTOCOLS)}")


def check_libp2p(
    host: IHost,
    gossip: Gossip,
    listen: Sequence[Multiaddr],
    required_protocols: Sequence[str] = (),
) -> list[Probe]:
    """Listening on every configured address, pubsub running, protocols registered."""
    addrs, failed = listening_on(host, listen)
    if failed or not addrs:
        shown = ", ".join(failed or [str(a) for a in listen])
        raise BootCheckFailed(
            "libp2p",
            "listen",
            f"cannot listen on {shown} (address in use, or not an address of this machine)",
        )
    if not gossip.running:
        raise BootCheckFailed("libp2p", "pubsub", "the pubsub service or GossipSub router stopped")
    handlers = set(host.get_mux().handlers)
    wanted = [IDENTIFY_PROTOCOL, PING_PROTOCOL, *gossip.router.get_protocols(), *required_protocols]
    missing = [p for p in wanted if p not in handlers]
    if missing:
        raise BootCheckFailed("libp2p", "protocols", f"no handler for {', '.join(missing)}")
    return [
        Probe("libp2p", "listen", " ".join(str(a) for a in addrs)),
        Probe(
            "libp2p", "pubsub", f"GossipSub running ({', '.join(gossip.router.get_protocols())})"
        ),
    ]


async def run_boot_check(
    paths: RepoPaths,
    config: NodeConfig,
    key: SigningKey,
    required_protocols: Sequence[str] = (),
) -> list[Probe]:
    """The daemon's boot check on its own (`qflow node boot-check`): start, check, stop."""
    store = open_block_store(paths, config)
    probes = await check_ipfs(store)
    host = build_host(key, config.listen, config.limits)
    try:
        async with (
            host.run(listen_addrs=list(config.listen)),
            open_bitswap(host, BlockService(store).local),
            open_gossip(host, config.gossip) as gossip,
        ):
            probes.append(check_bitswap(host))
            probes += check_libp2p(host, gossip, config.listen, required_protocols)
    except BaseExceptionGroup as group:
        failed = boot_failure(group)
        if failed is None:
            raise
        raise failed from None
    return probes


def boot_failure(group: BaseExceptionGroup[BaseException]) -> BootCheckFailed | None:
    """The BootCheckFailed a nursery wrapped in `group`, if that is what it holds."""
    matched, _rest = group.split(BootCheckFailed)
    if matched is None:
        return None
    leaves: list[BaseException] = [matched]
    while isinstance(leaves[0], BaseExceptionGroup):
        leaves = list(leaves[0].exceptions)
    first = leaves[0]
    return first if isinstance(first, BootCheckFailed) else None
