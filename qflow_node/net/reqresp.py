"""Direct request/response protocols (e.g. 2PC PREPARE to validators) over libp2p streams.

One request and one response per stream, each varint-length-prefixed and size-capped
before it is read, the whole exchange bounded by a timeout on both sides. Built on
py-libp2p's `RequestResponse`; this module fixes the payload type to bytes (callers
encode with the codec package) and maps its errors onto one `RequestError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.request_response.api import (
    RequestContext,
    RequestResponse,
    RequestResponseConfig,
)
from libp2p.request_response.codec import BytesCodec
from libp2p.request_response.exceptions import (
    MessageTooLargeError,
    ProtocolNotSupportedError,
    RequestResponseError,
    RequestTimeoutError,
)

if TYPE_CHECKING:
    from qflow_node.net.channel import Channel

_CLOSE_GRACE: Final = 0.5  # s past the exchange's timeout for closing the stream

Handler = Callable[[str, bytes], Awaitable[bytes]]
"""Serves one request: (requesting peer id, request bytes) -> response bytes."""


class RequestError(Exception):
    """A request that got no valid response. `reason`: timeout, too_large,
    unsupported (the peer does not speak the protocol) or transport."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    timeout: float = 10.0
    max_request_size: int = 1 << 20
    max_response_size: int = 1 << 20
    max_concurrent_inbound: int = 64

    def to_libp2p(self) -> RequestResponseConfig:
        return RequestResponseConfig(
            timeout=self.timeout,
            max_request_size=self.max_request_size,
            max_response_size=self.max_response_size,
            max_concurrent_inbound=self.max_concurrent_inbound,
        )


class Direct:
    """Request/response protocols on one host."""

    def __init__(self, host: IHost) -> None:
        self.host = host
        self._rr = RequestResponse(host)
        self._codec = BytesCodec()

    def serve(self, protocol: str, handler: Handler, limits: Limits | None = None) -> None:
        """Answer `protocol` with `handler`. A handler that raises or overruns the
        timeout resets the stream: the requester sees a transport error, never a
        partial answer."""

        async def adapted(request: bytes, context: RequestContext) -> bytes:
            return await handler(context.peer_id.to_base58(), request)

        self._rr.set_handler(
            TProtocol(protocol), adapted, self._codec, (limits or Limits()).to_libp2p()
        )

    def open_channel(self, protocol: str, handler: Handler, limits: Limits) -> Channel:
        """Requests to `protocol` over one long-lived stream per peer (`Channel`, which
        the caller runs), answered here by `handler`."""
        from qflow_node.net.channel import Channel

        return Channel(
            self.host,
            protocol,
            handler,
            timeout=limits.timeout,
            max_request=limits.max_request_size,
            max_answer=limits.max_response_size,
        )

    def stop_serving(self, protocol: str) -> None:
        self._rr.remove_handler(TProtocol(protocol))

    async def request(
        self, peer: str, protocol: str, payload: bytes, limits: Limits | None = None
    ) -> bytes:
        """Send `payload` to `peer` (base58 peer id, already known to the peer store).
        Bounded as a whole: py-libp2p's timeout covers the exchange but not closing or
        resetting the stream afterwards, which can wait on a congested connection."""
        limits = limits or Limits()
        try:
            with trio.fail_after(limits.timeout + _CLOSE_GRACE):
                return await self._rr.send_request(
                    ID.from_base58(peer),
                    [TProtocol(protocol)],
                    payload,
                    self._codec,
                    limits.to_libp2p(),
                )
        except trio.TooSlowError:
            raise RequestError(
                "timeout", f"{protocol} to {peer}: no answer (or no close) in {limits.timeout} s"
            ) from None
        except RequestTimeoutError as exc:
            raise RequestError("timeout", f"{protocol} to {peer}: {exc}") from exc
        except MessageTooLargeError as exc:
            raise RequestError("too_large", f"{protocol} to {peer}: {exc}") from exc
        except ProtocolNotSupportedError as exc:
            raise RequestError("unsupported", f"{protocol} to {peer}: {exc}") from exc
        except RequestResponseError as exc:
            raise RequestError("transport", f"{protocol} to {peer}: {exc}") from exc
