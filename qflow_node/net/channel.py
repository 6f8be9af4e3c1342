"""Requests and answers multiplexed over one long-lived stream per peer.

A fresh libp2p stream per request (`reqresp.Direct`) costs a yamux SYN and ACK, a
multistream-select exchange and a FIN each way - about ten frames, several round trips
and a handler task for a question of a hundred bytes. Questions asked on every step of
every execution (slot confirmations) share one stream per peer and direction instead:
each frame is varint-length-prefixed and holds `request id (u64, big-endian) ‖ body`; the
answer carries the request's id. The serving side answers the frames of a stream in
order; the asking side matches answers by id, so any number of questions can be in
flight on one stream.

Every request is bounded by `timeout` (opening the stream included); a request that
times out while its frame was half written poisons the stream, which is then dropped
and reopened by the next request. A peer that does not speak the protocol gets a
`RequestError("unsupported")` - the caller may fall back to one stream per request.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from qflow_node.codec.protobuf import put_varint
from qflow_node.log import get_logger
from qflow_node.net.reqresp import RequestError

if TYPE_CHECKING:
    # trio's own TaskStatus is shadowed for mypy by trio-stubs (installed with libp2p).
    from trio_typing import TaskStatus

Handler = Callable[[str, bytes], Awaitable[bytes]]
"""Answers one request: (asking peer id, request body) -> answer body."""

_ID_BYTES: Final = 8
_READ_CHUNK: Final = 64 << 10


class FrameError(Exception):
    """A frame over the size limit, a bad length prefix, or a stream that ended mid-frame."""


class _Frames:
    """Varint-length-prefixed frames read from a stream, with one read buffer."""

    def __init__(self, stream: INetStream, max_frame: int) -> None:
        self.stream = stream
        self.max_frame = max_frame
        self._buffer = bytearray()

    async def _fill(self) -> bool:
        chunk = await self.stream.read(_READ_CHUNK)
        if not chunk:
            return False
        self._buffer += chunk
        return True

    async def next(self) -> bytes | None:
        """The next frame's bytes; None at a clean end of stream."""
        size, shift, used = 0, 0, 0
        while True:
            if used == len(self._buffer):
                if not await self._fill():
                    if used == 0:
                        return None
                    raise FrameError("stream ended inside a length prefix")
                continue
            byte = self._buffer[used]
            used += 1
            size |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 28:
                raise FrameError("length prefix too long")
        if size > self.max_frame:
            raise FrameError(f"frame of {size} bytes exceeds the limit of {self.max_frame}")
        while len(self._buffer) < used + size:
            if not await self._fill():
                raise FrameError("stream ended inside a frame")
        frame = bytes(self._buffer[used : used + size])
        del self._buffer[: used + size]
        return frame


def frame(request_id: int, body: bytes) -> bytes:
    """One frame: the varint length, then the id and the body."""
    payload = request_id.to_bytes(_ID_BYTES, "big") + body
    return put_varint(len(payload)) + payload


def split(payload: bytes) -> tuple[int, bytes]:
    if len(payload) < _ID_BYTES:
        raise FrameError("frame shorter than a request id")
    return int.from_bytes(payload[:_ID_BYTES], "big"), payload[_ID_BYTES:]


@dataclass
class _Waiter:
    done: trio.Event = field(default_factory=trio.Event)
    answer: bytes | None = None
    error: str | None = None


@dataclass
class _Outbound:
    stream: INetStream
    write_lock: trio.Lock = field(default_factory=trio.Lock)
    pending: dict[int, _Waiter] = field(default_factory=dict)
    broken: bool = False


class Channel:
    """One protocol's requests to and from every peer, over one stream per peer."""

    def __init__(
        self,
        host: IHost,
        protocol: str,
        handler: Handler,
        *,
        timeout: float = 1.0,
        max_request: int = 4096,
        max_answer: int = 64 << 10,
    ) -> None:
        self.host = host
        self.protocol = TProtocol(protocol)
        self.handler = handler
        self.timeout = timeout
        self.max_request = max_request
        self.max_answer = max_answer
        self._ids = itertools.count(1)
        self._outbound: dict[str, _Outbound] = {}
        self._opening: dict[str, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the protocol and read answers until cancelled. Started with
        `nursery.start`, it returns once requests can be made."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.host.set_stream_handler(self.protocol, self._serve)
            task_status.started()
            await trio.sleep_forever()

    # -- asking ------------------------------------------------------------------------

    async def request(self, peer: str, body: bytes) -> bytes:
        """The peer's answer to `body`, within `timeout` seconds (RequestError otherwise:
        `timeout`, `too_large`, `unsupported` or `transport`)."""
        if len(body) + _ID_BYTES > self.max_request:
            raise RequestError("too_large", f"request of {len(body)} bytes to {peer}")
        waiter = _Waiter()
        request_id = next(self._ids)
        out: _Outbound | None = None
        try:
            with trio.fail_after(self.timeout):
                out = await self._stream_to(peer)
                out.pending[request_id] = waiter
                data = frame(request_id, body)
                async with out.write_lock:
                    if out.broken:  # dropped while we waited to write: ask again later
                        waiter.error = "stream closed"
                        waiter.done.set()
                    else:
                        try:
                            await out.stream.write(data)
                        except BaseException:
                            self._drop(peer, out, "write interrupted")  # half a frame?
                            raise
                await waiter.done.wait()
        except trio.TooSlowError:
            raise RequestError(
                "timeout", f"{self.protocol} to {peer}: no answer in {self.timeout} s"
            ) from None
        except RequestError:
            raise
        except Exception as exc:  # the stream could not be opened or written
            raise RequestError("transport", f"{self.protocol} to {peer}: {exc!r}") from None
        finally:
            if out is not None:
                out.pending.pop(request_id, None)
        if waiter.answer is None:
            raise RequestError("transport", f"{self.protocol} to {peer}: {waiter.error}")
        return waiter.answer

    async def _stream_to(self, peer: str) -> _Outbound:
        out = self._outbound.get(peer)
        if out is not None and not out.broken:
            return out
        lock = self._opening.setdefault(peer, trio.Lock())
        async with lock:  # one opener per peer; the others use what it opened
            out = self._outbound.get(peer)
            if out is not None and not out.broken:
                return out
            try:
                stream = await self.host.new_stream(ID.from_base58(peer), [self.protocol])
            except Exception as exc:
                raise RequestError(
                    _open_failure(exc), f"{self.protocol} to {peer}: {exc}"
                ) from None
            out = _Outbound(stream)
            self._outbound[peer] = out
            assert self._nursery is not None, "Channel.run is not running"
            self._nursery.start_soon(self._read_answers, peer, out)
            return out

    async def _read_answers(self, peer: str, out: _Outbound) -> None:
        frames = _Frames(out.stream, self.max_answer + _ID_BYTES)
        reason = "closed by the peer"
        try:
            while (payload := await frames.next()) is not None:
                request_id, answer = split(payload)
                waiter = out.pending.pop(request_id, None)
                if waiter is not None:  # else: its asker gave up
                    waiter.answer = answer
                    waiter.done.set()
        except Exception as exc:
            reason = repr(exc)
        self._drop(peer, out, reason)

    def _drop(self, peer: str, out: _Outbound, reason: str) -> None:
        """Fail what is pending on the stream and forget it (reopened on demand)."""
        if out.broken:
            return
        out.broken = True
        if self._outbound.get(peer) is out:
            del self._outbound[peer]
        for waiter in out.pending.values():
            waiter.error = reason
            waiter.done.set()
        out.pending.clear()
        if self._nursery is not None:
            self._nursery.start_soon(_close, out.stream)

    # -- answering ---------------------------------------------------------------------

    async def _serve(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id.to_base58()
        frames = _Frames(stream, self.max_request)
        try:
            while (payload := await frames.next()) is not None:
                request_id, body = split(payload)
                answer = await self.handler(peer, body)
                if len(answer) > self.max_answer:  # a bug of ours: end the stream
                    get_logger("qflow.net.channel").warning(
                        "channel.answer_too_large", peer=peer, size=len(answer)
                    )
                    break
                await stream.write(frame(request_id, answer))
        except Exception as exc:  # a bad frame or a dead stream: this stream ends
            get_logger("qflow.net.channel").debug(
                "channel.stream_ended", peer=peer, protocol=str(self.protocol), error=repr(exc)
            )
        finally:
            await _close(stream)


def _open_failure(exc: BaseException) -> str:
    """`unsupported` if the peer refused the protocol (py-libp2p says so only in the text
    of an exception somewhere down the cause chain), else `transport`."""
    seen: BaseException | None = exc
    while seen is not None:
        if "not supported" in str(seen).lower():
            return "unsupported"
        seen = seen.__cause__ or seen.__context__
    return "transport"


async def _close(stream: INetStream) -> None:
    with trio.move_on_after(1.0):  # a congested connection must not hold this forever
        try:
            await stream.reset()
        except Exception:  # already gone
            return
