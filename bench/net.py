"""Network benchmark: gossip latency, fan-out, sustained rate, and a node's idle RSS.

    .venv/bin/python bench/net.py

Figures (loopback only; prints, asserts nothing; every wait has a deadline):
  one-hop       p50/p95 from publish to delivery between two connected nodes, >= 500
                paced samples; in-process (both hosts on one trio loop) and, if the
                child starts, between two OS processes
  fan-out       5 fully connected in-process nodes: time until the last of 4 receivers
                has a message, p50/p95
  sustained     5000 small envelopes published as fast as `Gossip.publish` allows
                (it waits on the rate limit and on py-libp2p's per-peer outbound
                queue), counted at the other node (msg/s, loss, every drop counter of
                both ends: `Gossip.stats`); then paced at 1000 msg/s; in one process
                and across two
  idle RSS      a real `qflow node run` (temp repo from `qflow init --repo`), VmRSS after
                ~2 s idle past its `ready` line

Every message is a real signed wire envelope (a `claim` on the subnet's exec topic)
that the receiver's topic validator opens (`open_envelope`, Ed25519 verify). Its `seq`
is the sender's CLOCK_MONOTONIC in ns at sealing time, so latency = arrival - seq
(seal + libp2p sign + send + verify + delivery), in one process or across two.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Empty, Queue
from typing import Any, Final

import trio
from bitswap import one_run as bitswap_fetch_rate  # bench/bitswap.py, next to this file
from libp2p.abc import IHost
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.codec import dag_block
from qflow_node.codec.envelope import decode_envelope
from qflow_node.codec.envelope_bodies import Claim
from qflow_node.core.envelopes import Verified, open_envelope, seal_envelope
from qflow_node.identity import SigningKey
from qflow_node.net.gossip import Gossip, GossipMessage, GossipSettings, GossipStats, open_gossip
from qflow_node.net.host import build_host
from qflow_node.net.topics import topic
from qflow_node.runtime.testing import QFLOW

LOOPBACK: Final = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
SUBNET: Final = "bench"
TOPIC: Final = topic(SUBNET, "exec")
CLAIM: Final = Claim(
    exec=dag_block({"bench": "net"}).cid, step="fetch", attempt=1, lease_ms=30_000, rank=0
)
MESH_TIMEOUT: Final = 10.0
ONE_HOP_SAMPLES: Final = 500
FANOUT_SAMPLES: Final = 300
FANOUT_PACE_S: Final = 0.02  # 50 msg/s (before the gossip work 5 hosts saturated a core)
SUSTAINED_N: Final = 5000
PACE_S: Final = 0.004  # 250 msg/s for latency samples: well under any rate limit
KEPT_PACE_S: Final = 0.1  # paced run kept up: last arrival within this of the last publish
QUIET_S: Final = 2.0
CHILD_LIMIT_S: Final = 60.0  # no arrival for this long after the last publish = done
THIS: Final = Path(__file__).resolve()
ROOT: Final = THIS.parent.parent

TARGET_P95_MS: Final = 5.0
TARGET_RATE: Final = 1000.0
TARGET_RSS_MB: Final = 150.0


class LibDrops(logging.Handler):
    """Counts py-libp2p's drops from its own log records (and keeps them off stderr), a
    cross-check of `Gossip.stats`: `outbound` - a message RPC refused by a full per-peer
    outbound queue (32 slots); `subscription` - a message refused by py-libp2p's
    subscription channel (32 slots; `Gossip` no longer routes messages through it)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Dropping outbound RPC") and "publish=0" not in text:
            self.counts["outbound"] += 1
        elif text.startswith("fail to deliver message to subscription"):
            self.counts["subscription"] += 1

    def install(self) -> None:
        for name, level in (
            ("libp2p.pubsub.rpc_queue", logging.DEBUG),
            ("libp2p.pubsub.pubsub", logging.WARNING),
        ):
            lib_logger = logging.getLogger(name)
            lib_logger.setLevel(level)
            lib_logger.addHandler(self)
            lib_logger.propagate = False


DROPS: Final = LibDrops()


@dataclass
class Node:
    key: SigningKey
    host: IHost
    gossip: Gossip
    seq_seen: dict[int, int] = field(default_factory=dict)  # seq -> arrival (ns)


def valid(data: bytes) -> bool:
    return isinstance(open_envelope(data, subnet=SUBNET, channel="exec"), Verified)


def seal(key: SigningKey) -> bytes:
    return seal_envelope(key, subnet=SUBNET, seq=time.monotonic_ns(), body=CLAIM)


TEARDOWN_ERRORS: Final[list[str]] = []


@asynccontextmanager
async def running_node(settings: GossipSettings | None = None) -> AsyncIterator[Node]:
    """A host with gossip. An error py-libp2p raises while stopping, after the body
    finished, is recorded (printed at the end) rather than losing the figures."""
    key = SigningKey.generate()
    host = build_host(key, LOOPBACK)
    finished = False
    try:
        async with host.run(listen_addrs=LOOPBACK), open_gossip(host, settings) as gossip:
            yield Node(key, host, gossip)
            finished = True
    except* Exception as group:
        if not finished:
            raise
        TEARDOWN_ERRORS.extend(repr(exc) for exc in _leaves(group))


def _leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    found: list[Exception] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


async def disconnect_all(nodes: list[Node]) -> None:
    """Close every connection first, so no peer is still sending to a stopping pubsub
    (py-libp2p then fails with "Nursery is closed to new arrivals")."""
    with trio.move_on_after(5):
        for node in nodes:
            for peer in list(node.host.get_network().connections):
                await node.host.disconnect(peer)


async def connect(a: Node, b: Node) -> None:
    await a.host.connect(info_from_p2p_addr(b.host.get_addrs()[0]))


async def record(node: Node, channel: trio.MemoryReceiveChannel[GossipMessage]) -> None:
    """Arrival time of every delivered message, by seq (the send timestamp)."""
    async for message in channel:
        node.seq_seen[decode_envelope(message.data).seq] = time.monotonic_ns()


@asynccontextmanager
async def cluster(size: int, settings: GossipSettings | None = None) -> AsyncIterator[list[Node]]:
    """`size` nodes, all connected to each other, each subscribed and recording; node 0
    (the publisher) has every other node in its mesh."""
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(running_node(settings)) for _ in range(size)]
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(record, node, await node.gossip.subscribe(TOPIC, valid))
            with trio.fail_after(MESH_TIMEOUT):
                for i, a in enumerate(nodes):
                    for b in nodes[i + 1 :]:
                        await connect(a, b)
                for peer in nodes[1:]:
                    await nodes[0].gossip.pubsub.wait_for_mesh(
                        peer.host.get_id(), TOPIC, timeout=MESH_TIMEOUT
                    )
            try:
                yield nodes
            finally:
                await disconnect_all(nodes)
                nursery.cancel_scope.cancel()


def pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(ns: float) -> float:
    return ns / 1e6


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


async def publish_paced(node: Node, count: int, interval: float) -> list[int]:
    """Publish `count` envelopes, one every `interval` s (0 = back to back, as fast as
    `Gossip.publish` lets us); their seqs."""
    sent: list[int] = []
    start = trio.current_time()
    for i in range(count):
        if interval > 0:
            await trio.sleep_until(start + i * interval)
        data = seal(node.key)
        sent.append(decode_envelope(data).seq)
        await node.gossip.publish(TOPIC, data)
    return sent


async def settle(receivers: list[Node], sent: list[int], limit: float) -> None:
    """Until every receiver has every seq, or nothing new arrived for QUIET_S, or `limit`."""
    deadline = trio.current_time() + limit
    last_total, last_change = -1, trio.current_time()
    wanted = set(sent)
    while trio.current_time() < deadline:
        total = sum(len(wanted.intersection(r.seq_seen)) for r in receivers)
        if total == len(wanted) * len(receivers):
            return
        if total != last_total:
            last_total, last_change = total, trio.current_time()
        elif trio.current_time() - last_change > QUIET_S:
            return
        await trio.sleep(0.05)


def latency_line(label: str, lat_ns: Sequence[float], sent: int, target: float | None) -> str:
    lost = sent - len(lat_ns)
    if not lat_ns:
        return f"{label}: nothing arrived ({sent} sent)"
    p50, p95 = ms(pct(lat_ns, 0.5)), ms(pct(lat_ns, 0.95))
    line = (
        f"{label}: p50 {p50:.2f} ms  p95 {p95:.2f} ms  max {ms(max(lat_ns)):.2f} ms"
        f"  (n={len(lat_ns)}, lost {lost})"
    )
    if target is not None:
        line += f"   target p95 <= {target:g} ms: {verdict(p95 <= target)}"
    return line


async def one_hop_in_process() -> None:
    async with cluster(2) as (a, b):
        await publish_paced(a, 20, PACE_S)  # warm-up, discarded
        await settle([b], [], 0)
        b.seq_seen.clear()
        sent = await publish_paced(a, ONE_HOP_SAMPLES, PACE_S)
        await settle([b], sent, 15)
        lat = [b.seq_seen[s] - s for s in sent if s in b.seq_seen]
    print(latency_line("1. one-hop, in-process (2 hosts, 1 loop)", lat, len(sent), TARGET_P95_MS))


async def fan_out() -> None:
    async with cluster(5) as nodes:
        publisher, receivers = nodes[0], nodes[1:]
        await publish_paced(publisher, 20, FANOUT_PACE_S)
        await settle(receivers, [], 0)
        for r in receivers:
            r.seq_seen.clear()
        sent = await publish_paced(publisher, FANOUT_SAMPLES, FANOUT_PACE_S)
        await settle(receivers, sent, 15)
        lat = [
            max(r.seq_seen[s] for r in receivers) - s
            for s in sent
            if all(s in r.seq_seen for r in receivers)
        ]
    label = f"2. fan-out to last of 4 (5 nodes, full mesh, in-process, {1 / FANOUT_PACE_S:g}/s)"
    print(latency_line(label, lat, len(sent), None))


def drops_text(sender: GossipStats, receiver: dict[str, int] | GossipStats) -> str:
    r = receiver if isinstance(receiver, dict) else asdict(receiver)
    return (
        f"publisher waited {sender.publish_waits}x ({sender.publish_wait_timeouts} timeouts);"
        f" drops: outbound queue {sender.outbound_dropped_messages}"
        f" (py-libp2p log {DROPS.counts['outbound']}),"
        f" receiver subscription {r['subscription_dropped']}, buffer {r['buffer_dropped']}"
    )


def rate_verdict(
    rate: float, lost: int, interval: float, last_arrival_s: float, publish_s: float
) -> str:
    if interval > 0:  # paced at the target rate: it keeps up if nothing lags behind
        kept = lost == 0 and last_arrival_s - publish_s <= KEPT_PACE_S
        return f"   keeps pace with {1 / interval:g} msg/s, no loss: {verdict(kept)}"
    return (
        f"   target >= {TARGET_RATE:g} msg/s, no loss: {verdict(rate >= TARGET_RATE and not lost)}"
    )


async def sustained(label: str, settings: GossipSettings, interval: float) -> None:
    async with cluster(2, settings) as (a, b):
        await publish_paced(a, 20, PACE_S)
        await settle([b], [], 0)
        b.seq_seen.clear()
        DROPS.counts.clear()
        t0 = time.monotonic_ns()
        sent = await publish_paced(a, SUSTAINED_N, interval)
        publish_s = (time.monotonic_ns() - t0) / 1e9
        await settle([b], sent, 30)
        got = [b.seq_seen[s] for s in sent if s in b.seq_seen]
        text = drops_text(a.gossip.stats, b.gossip.stats)
    lost = len(sent) - len(got)
    span_s = (max(got) - t0) / 1e9 if got else float("inf")
    rate = len(got) / span_s
    print(
        f"3. {label}: published {len(sent)} in {publish_s:.2f} s ({len(sent) / publish_s:.0f}/s);"
        f" received {len(got)} by {span_s:.2f} s = {rate:.0f} msg/s, lost {lost}"
        f" ({100 * lost / len(sent):.1f}%; {text})"
        + rate_verdict(rate, lost, interval, span_s, publish_s)
    )


# --- two OS processes -------------------------------------------------------------------


async def child_receiver(count: int, limit_off: bool) -> None:
    """In the child: listen, print our address, record arrivals until `count`, or
    QUIET_S without one after the first, or CHILD_LIMIT_S; print the latencies (ns) and
    the last arrival (CLOCK_MONOTONIC ns) as one JSON line."""
    settings = GossipSettings(max_messages_per_second=0) if limit_off else None
    async with running_node(settings) as node:
        channel = await node.gossip.subscribe(TOPIC, valid)
        print(json.dumps({"addr": str(node.host.get_addrs()[0])}), flush=True)
        last = 0
        with trio.move_on_after(CHILD_LIMIT_S):
            while len(node.seq_seen) < count:
                with trio.move_on_after(QUIET_S if node.seq_seen else CHILD_LIMIT_S) as quiet:
                    message = await channel.receive()
                if quiet.cancelled_caught:
                    break
                last = time.monotonic_ns()
                node.seq_seen[decode_envelope(message.data).seq] = last
        lat = [t - s for s, t in node.seq_seen.items()]
        stats = asdict(node.gossip.stats)
        print(json.dumps({"lat": lat, "last": last, "stats": stats}), flush=True)


async def read_json_line(stream: trio.abc.ReceiveStream, buf: bytearray) -> dict[str, Any]:
    while b"\n" not in buf:
        chunk = await stream.receive_some(1 << 16)
        if not chunk:
            raise EOFError("child closed its stdout")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise TypeError(f"unexpected line from child: {line!r}")
    return obj


@dataclass
class ChildRun:
    lat: list[int]  # ns, per received message
    sent: int
    publish_s: float  # first to last publish
    span_s: float  # first publish to last arrival
    sender: GossipStats
    receiver: dict[str, int]


async def two_processes(
    label: str, count: int, interval: float, limit_off: bool
) -> ChildRun | None:
    """Publish `count` envelopes from here to a receiver in a child process, or return
    None after printing why not."""
    cmd = [sys.executable, str(THIS), "--child", str(count), str(int(limit_off))]
    proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, cwd=ROOT)
    settings = GossipSettings(max_messages_per_second=0) if limit_off else None
    try:
        assert proc.stdout is not None
        buf = bytearray()
        with trio.fail_after(30):
            addr = (await read_json_line(proc.stdout, buf))["addr"]
        async with running_node(settings) as a, trio.open_nursery() as nursery:
            nursery.start_soon(record, a, await a.gossip.subscribe(TOPIC, valid))
            with trio.fail_after(MESH_TIMEOUT):
                info = info_from_p2p_addr(Multiaddr(addr))
                await a.host.connect(info)
                await a.gossip.pubsub.wait_for_mesh(info.peer_id, TOPIC, timeout=MESH_TIMEOUT)
            t0 = time.monotonic_ns()
            sent = await publish_paced(a, count, interval)
            publish_s = (time.monotonic_ns() - t0) / 1e9
            with trio.fail_after(CHILD_LIMIT_S + 10):
                result = await read_json_line(proc.stdout, buf)
            sender = a.gossip.stats
            await disconnect_all([a])
            nursery.cancel_scope.cancel()
        span_s = max(0, result["last"] - t0) / 1e9
        return ChildRun(result["lat"], len(sent), publish_s, span_s, sender, result["stats"])
    except (Exception, trio.TooSlowError) as exc:
        print(f"{label}: not measured ({type(exc).__name__}: {exc})")
        return None
    finally:
        if proc.returncode is None:
            with trio.move_on_after(5):
                await proc.wait()
        if proc.returncode is None:
            proc.terminate()
            with trio.move_on_after(5):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                with trio.move_on_after(5):
                    await proc.wait()


async def one_hop_two_processes() -> None:
    label = "1. one-hop, two OS processes"
    got = await two_processes(label, ONE_HOP_SAMPLES, PACE_S, False)
    if got is not None:
        print(latency_line(label, got.lat, got.sent, TARGET_P95_MS))


async def sustained_two_processes(label: str, interval: float) -> None:
    label = f"3. two OS processes, {label}"
    DROPS.counts.clear()
    got = await two_processes(label, SUSTAINED_N, interval, True)
    if got is None:
        return
    lost = got.sent - len(got.lat)
    rate = len(got.lat) / got.span_s if got.span_s > 0 else 0.0
    print(
        f"{label}: sent {got.sent} in {got.publish_s:.2f} s, received {len(got.lat)}"
        f" by {got.span_s:.2f} s = {rate:.0f} msg/s, lost {lost}"
        f" ({100 * lost / got.sent:.1f}%; {drops_text(got.sender, got.receiver)})"
        + rate_verdict(rate, lost, interval, got.span_s, got.publish_s)
    )


# --- idle RSS of a real node ------------------------------------------------------------


def idle_rss() -> None:
    with tempfile.TemporaryDirectory(prefix="qflow-bench-") as tmp:
        repo = Path(tmp) / "repo"
        subprocess.run(
            [*QFLOW, "init", "--repo", str(repo)], check=True, capture_output=True, timeout=60
        )
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [*QFLOW, "node", "run", "--repo", str(repo), "--listen", str(LOOPBACK[0])],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        lines: Queue[str | None] = Queue()
        reader = threading.Thread(target=_pump, args=(proc.stderr, lines.put), daemon=True)
        reader.start()
        try:
            started = time.monotonic()
            ready = _wait_ready(lines, started + 30)
            if ready is None:
                print(f"4. idle RSS: not measured (no ready line within 30 s; exit {proc.poll()})")
                return
            boot_s = time.monotonic() - started
            time.sleep(2.0)
            rss_mb = _vm_rss_kb(proc.pid) / 1024
            print(
                f"4. idle RSS of `qflow node run`: {rss_mb:.1f} MB after 2 s idle"
                f" (ready {boot_s:.1f} s after exec)"
                f"   target <= {TARGET_RSS_MB:g} MB: {verdict(rss_mb <= TARGET_RSS_MB)}"
            )
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            reader.join(timeout=5)


def _pump(stream: Any, put: Callable[[str | None], None]) -> None:
    for line in stream:
        put(line)
    put(None)


def _wait_ready(lines: Queue[str | None], deadline: float) -> dict[str, Any] | None:
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except Empty:
            return None
        if line is None:
            return None  # exited
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "ready":
            return event
    return None


def _vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc status")


# --- main ------------------------------------------------------------------------------


async def gossip_benches() -> None:
    print("1-3 run several libp2p hosts in ONE process on one trio loop (shared GIL/CPU);")
    print("    loopback TCP, Noise, yamux, GossipSub; envelopes are signed claims, verified.")
    await one_hop_in_process()
    await one_hop_two_processes()
    await fan_out()
    default = GossipSettings()
    await sustained(
        f"burst, default limit {default.max_messages_per_second:g}/s (publish paces)", default, 0
    )
    unlimited = GossipSettings(max_messages_per_second=0)
    await sustained("burst, rate limit off", unlimited, 0)
    await sustained("paced 1000 msg/s, rate limit off", unlimited, 1 / 1000)
    await sustained_two_processes("paced 1000 msg/s, rate limit off", 1 / 1000)
    await sustained_two_processes("burst, rate limit off", 0)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        DROPS.install()
        trio.run(child_receiver, int(sys.argv[2]), sys.argv[3] == "1")
        return
    started = time.monotonic()
    DROPS.install()
    print(f"qflow net bench (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    trio.run(gossip_benches)
    idle_rss()
    print("5. bitswap throughput, 10 MB DAG between two hosts in one process:")
    rates = []
    for run in range(3):
        with tempfile.TemporaryDirectory(prefix="qflow-bench-bitswap-") as tmp:
            rates.append(trio.run(bitswap_fetch_rate, 10_000_000, Path(tmp)))
        print(f"   run {run + 1}: {rates[-1]:.1f} MB/s")
    print(
        f"   median {sorted(rates)[1]:.1f} MB/s (target >= 20 MB/s; bench/bitswap.py has options)"
    )
    for error in TEARDOWN_ERRORS:
        print(f"note: py-libp2p error while stopping a host (after its figures): {error}")
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
