"""`KuboRpcBlockStore`: the `BlockStore` contract over an external Kubo's HTTP RPC API.

Every Kubo RPC call is a POST to `http://<host>:<port>/api/v0/<command>`; the address is
given as Kubo prints it (`Addresses.API`, e.g. `/ip4/127.0.0.1/tcp/5001`). Only plain
HTTP: Kubo's API has no TLS and no authentication of its own, so it belongs on loopback
or behind a proxy the operator controls.

Kubo is not trusted with integrity: blocks are checked before `put` (the same
`check_block` as the other stores, size limit included), Kubo's CID for a stored block
must equal ours, and `get` re-hashes every answer (`CorruptBlockError` on a mismatch).
Reads pass `offline=true`, so a missing block is an error at once instead of a bitswap
search of the network.

Where Kubo's model differs from the local stores (docs/store.md, "Kubo backend"):

* Kubo (>= 0.12) keys its blockstore by multihash, so `iter_cids` (`refs/local`) yields
  every block as a *raw* CIDv1, whatever codec it was put with; CIDs Qflow cannot hold
  (CIDv0 `Qm…` from older Kubo, dag-pb, other hashes) are skipped. `has`/`get`/`stat`
  take any codec: the multihash finds the block.
* `delete` is refused for any pinned block, indirect ones included (Kubo's `block rm`).
* `pin(recursive=True)` needs the whole DAG present (Kubo walks it, offline).
* `gc` is Kubo's `repo/gc`, which aborts without deleting anything if a pinned DAG is
  incomplete; `GcReport.live` and `.problems` come from the shared mark walk
  (`collect.mark_live`) run afterwards, `freed_bytes` from Kubo's repo size before/after.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from multiaddr import Multiaddr

from qflow_node.codec import CID, MAX_BLOCK_SIZE, Block, CidError, cid_codec, parse_cid
from qflow_node.codec.block import codec_name
from qflow_node.store.collect import mark_live
from qflow_node.store.errors import (
    BlockNotFoundError,
    CorruptBlockError,
    PinnedBlockError,
    StoreError,
)
from qflow_node.store.model import BlockStat, GcReport, PinMode
from qflow_node.store.validate import check_block, corruption, is_storable

DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_READ_TIMEOUT: Final = 30.0
# repo/gc is silent while Kubo marks every pinned DAG, which takes minutes on big repos.
DEFAULT_GC_TIMEOUT: Final = 600.0
# Kubo refuses blocks over 1 MiB unless told otherwise; our own limit (at most 2 MiB,
# runtime.config) was already enforced by check_block.
_KUBO_SOFT_BLOCK_LIMIT: Final = 1 << 20
# Blocks per block/put request in put_many: one round trip for many small blocks, while
# a request stays a few MiB at most.
_PUT_BATCH: Final = 32
_HOST_PROTOCOLS: Final = frozenset({"ip4", "ip6", "dns", "dns4", "dns6"})
# Shows a whole address in errors, but not a megabyte of mistaken input.
_SHORT: Final = reprlib.Repr()
_SHORT.maxstring = 120
_ADDRESS_FORMS: Final = (
    "/ip4/<address>/tcp/<port>, /ip6/<address>/tcp/<port> or /dns4/<name>/tcp/<port>"
)


class KuboAddressError(StoreError, ValueError):
    """An `ipfs_api` multiaddr that does not name a Kubo RPC API we can speak to."""


class KuboRpcError(StoreError):
    """A Kubo RPC call that failed: unreachable, timed out, refused, or a nonsense answer."""

    def __init__(self, api: str, command: str, reason: str, *, kubo_message: str = "") -> None:
        super().__init__(f"Kubo RPC API at {api}: {command}: {reason}")
        self.api = api
        self.command = command
        self.reason = reason
        self.kubo_message = kubo_message  # Kubo's own error text, when it answered one


class KuboCorruptBlockError(CorruptBlockError):
    """Bytes from Kubo's `block/get` that do not hash to the CID asked for."""

    def __init__(self, cid: CID, api: str, reason: str) -> None:
        # Not CorruptBlockError.__init__: there is no file and nothing was quarantined.
        StoreError.__init__(
            self, f"block {cid.encode()} from the Kubo RPC API at {api} is corrupt: {reason}"
        )
        self.cid = cid
        self.path = Path("/api/v0/block/get")  # where the bad bytes came from
        self.reason = reason
        self.quarantined = None
        self.api = api


def api_url(address: str) -> str:
    """The base URL (`http://host:port`) of the Kubo RPC API at multiaddr `address`.

    Accepts `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>`, optionally ending in `/http`.
    """
    shown = _SHORT.repr(address)
    try:
        addr = Multiaddr(address)
    except Exception as exc:  # multiaddr raises several unrelated types
        raise KuboAddressError(
            f"{shown} is not a valid multiaddr ({_SHORT.repr(str(exc))})"
        ) from None
    protocols = list(addr.protocols())
    names = [p.name for p in protocols]
    if "https" in names or "tls" in names:
        raise KuboAddressError(f"{shown}: only plain http is supported (Kubo's RPC API)")
    if names[-1:] == ["http"]:
        names = names[:-1]
    if len(names) != 2 or names[0] not in _HOST_PROTOCOLS or names[1] != "tcp":
        raise KuboAddressError(f"{shown} is not a TCP address (expected {_ADDRESS_FORMS})")
    host = str(addr.value_for_protocol(protocols[0].code))
    port = int(addr.value_for_protocol(protocols[1].code))
    if port == 0:
        raise KuboAddressError(f"{shown}: port 0 cannot be dialled")
    return f"http://[{host}]:{port}" if names[0] == "ip6" else f"http://{host}:{port}"


class KuboRpcBlockStore:
    """Blocks, pins and gc in an external Kubo, through its RPC API (sync httpx client)."""

    def __init__(
        self,
        api: str,
        *,
        max_block_size: int = MAX_BLOCK_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        gc_timeout: float = DEFAULT_GC_TIMEOUT,
    ) -> None:
        self._api = api
        self._url = api_url(api)
        self._max = max_block_size
        self._gc_timeout = httpx.Timeout(gc_timeout, connect=connect_timeout)
        self._client = httpx.Client(
            base_url=f"{self._url}/api/v0/",
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        )

    def __repr__(self) -> str:
        return f"KuboRpcBlockStore({self._api!r})"

    @property
    def api(self) -> str:
        """The API multiaddr this store was opened with."""
        return self._api

    @property
    def location(self) -> str:
        """Where the blocks live, for messages."""
        return f"Kubo RPC API at {self._api}"

    @property
    def max_block_size(self) -> int:
        return self._max

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> KuboRpcBlockStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- blocks -------------------------------------------------------------------------

    def put(self, block: Block) -> None:
        check_block(block, self._max)
        self._put_batch([block])

    def put_many(self, blocks: Iterable[Block]) -> None:
        batch = list(blocks)
        for block in batch:  # refuse the whole batch before sending any of it
            check_block(block, self._max)
        by_codec: dict[int, list[Block]] = {}
        for block in batch:  # cid-codec is one per request
            by_codec.setdefault(block.codec, []).append(block)
        for group in by_codec.values():
            for start in range(0, len(group), _PUT_BATCH):
                self._put_batch(group[start : start + _PUT_BATCH])

    def get(self, cid: CID) -> bytes:
        if not is_storable(cid):
            raise BlockNotFoundError(cid)
        data = self._read("block/get", {"arg": cid.encode(), "offline": "true"}, cid=cid)
        reason = corruption(cid, data, self._max)
        if reason is not None:
            raise KuboCorruptBlockError(cid, self._api, reason)
        return data

    def has(self, cid: CID) -> bool:
        if not is_storable(cid):
            return False
        try:
            self._block_stat(cid)
        except BlockNotFoundError:
            return False
        return True

    def stat(self, cid: CID) -> BlockStat:
        if not is_storable(cid):
            raise BlockNotFoundError(cid)
        size = self._block_stat(cid).get("Size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise self._nonsense("block/stat", f"Size {size!r}")
        return BlockStat(cid, size, cid_codec(cid))  # Kubo does not know the codec

    def delete(self, cid: CID) -> bool:
        if not is_storable(cid):
            return False
        command = "block/rm"
        try:
            lines = self._json_lines(command, {"arg": cid.encode(), "offline": "true"})
        except KuboRpcError as exc:
            if _not_found(exc.kubo_message):
                return False
            raise
        error = next((str(line.get("Error") or "") for line in lines), "")
        if not error:
            return True
        if "pinned" in error:  # "pinned: recursive", "pinned via <root>", "pinned: direct"
            raise PinnedBlockError(cid)
        if _not_found(error):
            return False
        raise KuboRpcError(self._api, command, error, kubo_message=error)

    def iter_cids(self) -> Iterator[CID]:
        command = "refs/local"
        for line in self._stream_lines(command, {}):
            if line.get("Err"):
                raise KuboRpcError(self._api, command, str(line["Err"]))
            try:
                yield parse_cid(str(line.get("Ref", "")))
            except CidError:
                continue  # not a Qflow CID: CIDv0, dag-pb, another hash (module docstring)

    # -- pins ---------------------------------------------------------------------------

    def pin(self, cid: CID, recursive: bool = True) -> None:
        # Checked first so a missing root is BlockNotFoundError, as in the other stores,
        # and not confused with a missing block deeper in the DAG.
        if not self.has(cid):
            raise BlockNotFoundError(cid)
        try:
            self._pin_add(cid, recursive)
        except KuboRpcError as exc:
            if recursive or "already pinned recursively" not in exc.kubo_message:
                raise
            # Kubo will not add a direct pin beside a recursive one; re-pinning sets the
            # mode here, so drop the recursive pin first. (A gc in between could collect
            # the block: the BlockService serialises gc with pin changes.)
            self.unpin(cid)
            self._pin_add(cid, recursive)

    def unpin(self, cid: CID) -> bool:
        if not is_storable(cid):
            return False
        try:
            # recursive=true removes a direct pin too; offline: resolving never searches.
            self._json("pin/rm", {"arg": cid.encode(), "recursive": "true", "offline": "true"})
        except KuboRpcError as exc:
            if "not pinned" in exc.kubo_message:
                return False
            raise
        return True

    def pins(self) -> dict[CID, PinMode]:
        result: dict[CID, PinMode] = {}
        for mode in (PinMode.DIRECT, PinMode.RECURSIVE):  # recursive wins if both
            keys = self._json("pin/ls", {"type": mode.value}).get("Keys") or {}
            if not isinstance(keys, dict):
                raise self._nonsense("pin/ls", f"Keys {keys!r}")
            for text in keys:
                try:
                    result[parse_cid(str(text))] = mode
                except CidError:
                    continue  # someone else's pin (CIDv0, dag-pb…): not ours to report
        return result

    def gc(self) -> GcReport:
        size_before = self._repo_size()
        removed = 0
        link_errors: list[str] = []
        other_errors: list[str] = []
        command = "repo/gc"
        params = {"stream-errors": "true"}
        for line in self._stream_lines(command, params, timeout=self._gc_timeout):
            error = str(line.get("Error") or "")
            if not error:
                removed += 1 if line.get("Key") else 0
            elif error.startswith("could not retrieve links for "):
                link_errors.append(error)
            elif not error.startswith("garbage collection"):  # not the summary line
                other_errors.append(error)
        if other_errors:
            raise KuboRpcError(
                self._api,
                command,
                f"removed {removed} blocks, then failed: {'; '.join(other_errors[:3])}",
                kubo_message=other_errors[0],
            )
        freed = max(0, size_before - self._repo_size())
        # Kubo reports neither what stays nor which pin a broken block belongs to: the
        # shared mark walk answers both (Qflow pins, dag-cbor links), as in other stores.
        live, problems = mark_live(self.pins(), self.has, self.get, max_block_size=self._max)
        if link_errors and not problems:
            # A broken DAG under a pin that is not a Qflow CID: nothing of ours to report,
            # but Kubo deleted nothing, and the caller must know.
            raise KuboRpcError(self._api, command, f"Kubo aborted gc: {'; '.join(link_errors[:3])}")
        return GcReport(
            removed=removed, freed_bytes=freed, live=len(live), problems=tuple(problems)
        )

    # -- internals ----------------------------------------------------------------------

    def _put_batch(self, blocks: list[Block]) -> None:
        command = "block/put"
        params = {
            "cid-codec": codec_name(blocks[0].codec),
            "mhtype": "sha2-256",
            "pin": "false",
        }
        if any(len(b.data) > _KUBO_SOFT_BLOCK_LIMIT for b in blocks):
            params["allow-big-block"] = "true"
        # One multipart file per block; Kubo answers one {"Key", "Size"} line for each.
        files = [
            ("file", (f"block{i}", b.data, "application/octet-stream"))
            for i, b in enumerate(blocks)
        ]
        lines = self._json_lines(command, params, files=files)
        stored: set[CID] = set()
        for line in lines:
            try:
                stored.add(parse_cid(str(line.get("Key", ""))))
            except CidError as exc:
                raise self._nonsense(command, f"Key: {exc}") from None
        # Parsed CIDs, not strings: one CID has several spellings (base32, base58…).
        missing = [b.cid.encode() for b in blocks if b.cid not in stored]
        if missing or len(lines) != len(blocks):
            raise KuboRpcError(
                self._api,
                command,
                f"Kubo stored {len(lines)} of {len(blocks)} blocks under other CIDs than "
                f"asked for (missing {', '.join(missing[:3]) or 'none'})",
            )

    def _pin_add(self, cid: CID, recursive: bool) -> None:
        params = {"arg": cid.encode(), "recursive": str(recursive).lower(), "offline": "true"}
        self._json("pin/add", params)

    def _block_stat(self, cid: CID) -> dict[str, Any]:
        return self._json("block/stat", {"arg": cid.encode(), "offline": "true"}, cid=cid)

    def _repo_size(self) -> int:
        size = self._json("repo/stat", {"size-only": "true"}).get("RepoSize")
        if not isinstance(size, int) or isinstance(size, bool):
            raise self._nonsense("repo/stat", f"RepoSize {size!r}")
        return size

    def _read(self, command: str, params: dict[str, str], *, cid: CID | None = None) -> bytes:
        """The body of a successful call, at most `max_block_size + 1` bytes of it."""
        limit = self._max + 1  # one more, so an oversized answer is seen as such
        try:
            with self._client.stream("POST", command, params=params) as response:
                self._check(command, response, cid)
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) >= limit:
                        break
                return bytes(data[:limit])
        except httpx.HTTPError as exc:
            raise self._transport_error(command, exc) from None

    def _json(
        self, command: str, params: dict[str, str], *, cid: CID | None = None
    ) -> dict[str, Any]:
        try:
            response = self._client.post(command, params=params)
        except httpx.HTTPError as exc:
            raise self._transport_error(command, exc) from None
        self._check(command, response, cid)
        return self._object(command, response.text)

    def _json_lines(
        self, command: str, params: dict[str, str], *, files: Any = None
    ) -> list[dict[str, Any]]:
        """A (possibly multi-object) JSON answer, read whole: for short answers."""
        try:
            response = self._client.post(command, params=params, files=files)
        except httpx.HTTPError as exc:
            raise self._transport_error(command, exc) from None
        self._check(command, response, None)
        return [self._object(command, line) for line in response.text.splitlines() if line]

    def _stream_lines(
        self, command: str, params: dict[str, str], *, timeout: httpx.Timeout | None = None
    ) -> Iterator[dict[str, Any]]:
        """An NDJSON answer, one object at a time: refs/local and repo/gc can be huge."""
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            with self._client.stream("POST", command, params=params, **extra) as response:
                self._check(command, response, None)
                for line in response.iter_lines():
                    if line.strip():
                        yield self._object(command, line)
        except httpx.HTTPError as exc:
            raise self._transport_error(command, exc) from None

    def _check(self, command: str, response: httpx.Response, cid: CID | None) -> None:
        """Raise the StoreError an unsuccessful answer means."""
        if response.status_code == 200:
            return
        response.read()
        message = _kubo_message(response)
        if cid is not None and _not_found(message):
            raise BlockNotFoundError(cid)
        raise KuboRpcError(
            self._api, command, f"HTTP {response.status_code}: {message}", kubo_message=message
        )

    def _object(self, command: str, text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except ValueError:
            raise self._nonsense(command, f"not JSON: {_clip(text)}") from None
        if not isinstance(value, dict):
            raise self._nonsense(command, f"not a JSON object: {_clip(text)}")
        return value

    def _transport_error(self, command: str, exc: httpx.HTTPError) -> KuboRpcError:
        if isinstance(exc, httpx.TimeoutException):
            what = {
                httpx.ConnectTimeout: "no connection within the connect timeout",
                httpx.ReadTimeout: "no answer within the read timeout",
                httpx.WriteTimeout: "could not send the request within the write timeout",
            }.get(type(exc), "timed out")
            return KuboRpcError(self._api, command, f"{what} ({self._url})")
        if isinstance(exc, httpx.ConnectError):
            return KuboRpcError(self._api, command, f"cannot connect to {self._url}: {exc}")
        return KuboRpcError(self._api, command, f"{type(exc).__name__} from {self._url}: {exc}")

    def _nonsense(self, command: str, what: str) -> KuboRpcError:
        return KuboRpcError(self._api, command, f"unexpected answer: {what}")


def _not_found(message: str) -> bool:
    # Kubo: "block was not found locally (offline): ipld: could not find <cid>".
    return "could not find" in message or "not found" in message


def _kubo_message(response: httpx.Response) -> str:
    """Kubo's error text: `{"Message": …, "Code": …, "Type": "error"}`, else the body."""
    try:
        body = json.loads(response.text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("Message"), str):
        return str(body["Message"])
    path = urlsplit(str(response.request.url)).path
    return _clip(response.text.strip()) or f"empty answer to {path}"


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"
