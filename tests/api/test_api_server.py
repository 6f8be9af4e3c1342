"""The control API server over a real Unix socket under trio, and the sync client."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from qflow_node.api.client import call
from qflow_node.api.errors import (
    MAX_REQUEST_LINE,
    MAX_SOCKET_PATH,
    ApiError,
    NodeNotRunning,
    SocketPathTooLongError,
)
from qflow_node.api.server import ApiSocketInUseError, Handler, serve_api

WAIT = 10  # seconds: a bound on every wait, never an expected duration


@pytest.fixture
def sock_path() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 107-byte Unix socket path limit.
    root = Path(tempfile.mkdtemp(prefix="qf", dir="/tmp"))
    yield root / "run" / "api.sock"
    shutil.rmtree(root, ignore_errors=True)


async def echo(params: dict[str, Any]) -> dict[str, Any]:
    return {"echo": params}


async def refuse(params: dict[str, Any]) -> dict[str, Any]:
    raise ApiError("unavailable", "no such thing here")


async def crash(params: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("boom")


async def not_a_dict(params: dict[str, Any]) -> dict[str, Any]:
    return [1, 2]  # type: ignore[return-value]


async def forever(params: dict[str, Any]) -> dict[str, Any]:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


HANDLERS: dict[str, Handler] = {
    "echo": echo,
    "refuse": refuse,
    "crash": crash,
    "not_a_dict": not_a_dict,
    "forever": forever,
}


@asynccontextmanager
async def running(
    path: Path, handlers: dict[str, Handler] | None = None, **kwargs: Any
) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            await nursery.start(partial(serve_api, path, handlers or HANDLERS, **kwargs))
        yield
        nursery.cancel_scope.cancel()


class Conn:
    """A raw protocol client: send lines, read JSON lines."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    @classmethod
    async def open(cls, path: Path) -> Conn:
        return cls(await trio.open_unix_socket(os.fspath(path)))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def request(self, obj: Any) -> dict[str, Any]:
        await self.send(json.dumps(obj).encode() + b"\n")
        return await self.response()

    async def response(self) -> dict[str, Any]:
        with trio.fail_after(WAIT):
            while b"\n" not in self.buf:
                chunk = await self.stream.receive_some(1 << 16)
                assert chunk, "connection closed before a response"
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        response: dict[str, Any] = json.loads(line)
        return response

    async def eof(self) -> bool:
        with trio.fail_after(WAIT):
            return await self.stream.receive_some(1 << 16) == b""


def req(method: str, params: Any = None, id: int = 1, v: Any = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"v": v, "id": id, "method": method}
    if params is not None:
        out["params"] = params
    return out


def error_of(response: dict[str, Any]) -> tuple[str, str]:
    assert "result" not in response, response
    return response["error"]["code"], response["error"]["message"]


# -- protocol ----------------------------------------------------------------------------


async def test_many_requests_on_one_connection(sock_path: Path) -> None:
    async with running(sock_path):
        conn = await Conn.open(sock_path)
        first = await conn.request(req("echo", {"a": 1}, id=7))
        assert first == {"v": 1, "id": 7, "result": {"echo": {"a": 1}}}
        second = await conn.request(req("echo", id=8))  # params default to {}
        assert second == {"v": 1, "id": 8, "result": {"echo": {}}}
        await conn.stream.aclose()


async def test_two_requests_in_one_write_are_answered_in_order(sock_path: Path) -> None:
    async with running(sock_path):
        conn = await Conn.open(sock_path)
        lines = [json.dumps(req("echo", {"n": n}, id=n)).encode() for n in (1, 2)]
        await conn.send(b"\n".join(lines) + b"\n")
        assert (await conn.response())["id"] == 1
        assert (await conn.response())["id"] == 2


async def test_bad_requests_get_precise_errors_and_the_connection_survives(
    sock_path: Path,
) -> None:
    async with running(sock_path):
        conn = await Conn.open(sock_path)

        await conn.send(b"{not json\n")
        response = await conn.response()
        assert response["id"] is None
        code, message = error_of(response)
        assert code == "bad_request" and "not valid JSON" in message

        await conn.send(b"\xff\xfe\n")
        assert error_of(await conn.response())[0] == "bad_request"

        code, message = error_of(await conn.request([1, 2]))
        assert (code, message) == ("bad_request", "request must be a JSON object, not list")

        code, message = error_of(await conn.request({"id": 3, "method": "echo"}))
        assert code == "bad_request" and '"v" is missing' in message

        response = await conn.request(req("echo", id=4, v=2))
        assert response["id"] == 4
        code, message = error_of(response)
        assert code == "unsupported_version"
        assert message == "protocol version 2 is not supported; this node speaks version 1"

        code, message = error_of(await conn.request(req("echo", id="x")))  # type: ignore[arg-type]
        assert (code, message) == ("bad_request", '"id" must be an integer')

        code, message = error_of(await conn.request({"v": 1, "id": 5}))
        assert code == "bad_request" and '"method"' in message

        code, message = error_of(await conn.request(req("nope", id=6)))
        assert code == "unknown_method"
        assert message.startswith('unknown method "nope" (known: crash, echo,')

        code, message = error_of(await conn.request(req("echo", [1], id=7)))
        assert (code, message) == ("bad_request", '"params" must be an object, not list')

        assert (await conn.request(req("echo", {"ok": True}, id=8)))["result"] == {
            "echo": {"ok": True}
        }


async def test_handler_errors(sock_path: Path) -> None:
    async with running(sock_path):
        conn = await Conn.open(sock_path)
        response = await conn.request(req("refuse", id=1))
        assert response == {
            "v": 1,
            "id": 1,
            "error": {"code": "unavailable", "message": "no such thing here"},
        }
        assert error_of(await conn.request(req("crash", id=2))) == (
            "internal",
            "RuntimeError('boom')",
        )
        code, message = error_of(await conn.request(req("not_a_dict", id=3)))
        assert code == "internal" and "not a dict" in message
        # The same connection, and a new one, still work.
        assert "result" in await conn.request(req("echo", id=4))
        other = await Conn.open(sock_path)
        assert "result" in await other.request(req("echo", id=5))


async def test_an_oversized_line_is_refused_and_the_connection_closed(sock_path: Path) -> None:
    async with running(sock_path):
        conn = await Conn.open(sock_path)
        await conn.send(b" " * (MAX_REQUEST_LINE + 1))
        code, message = error_of(await conn.response())
        assert code == "bad_request"
        assert f"longer than {MAX_REQUEST_LINE} bytes" in message
        assert await conn.eof()
        # A line of exactly the limit is still read (and answered).
        conn = await Conn.open(sock_path)
        line = json.dumps(req("echo", id=9)).encode()
        await conn.send(line + b" " * (MAX_REQUEST_LINE - len(line)) + b"\n")
        assert (await conn.response())["id"] == 9


async def test_a_slow_handler_does_not_hold_up_other_connections(sock_path: Path) -> None:
    async with running(sock_path):
        stuck = await Conn.open(sock_path)
        await stuck.send(json.dumps(req("forever")).encode() + b"\n")
        other = await Conn.open(sock_path)
        assert "result" in await other.request(req("echo", id=2))


async def test_an_idle_connection_is_closed(sock_path: Path) -> None:
    async with running(sock_path, idle_timeout=0.05):
        conn = await Conn.open(sock_path)
        assert await conn.eof()


# -- the socket file ---------------------------------------------------------------------


# Sync helpers: the file checks are instant, and async tests must not call pathlib.
def is_socket(path: Path) -> bool:
    return path.is_socket()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def make_stale_socket(path: Path) -> None:
    """A socket file as a node that died leaves it: nobody listens."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(os.fspath(path))
    dead.close()


async def test_socket_is_owner_only_and_removed_on_exit(sock_path: Path) -> None:
    async with running(sock_path):
        assert is_socket(sock_path)
        assert mode(sock_path) == 0o600
        assert mode(sock_path.parent) == 0o700
    assert not is_socket(sock_path)


async def test_a_stale_socket_is_replaced(sock_path: Path) -> None:
    make_stale_socket(sock_path)
    assert is_socket(sock_path)
    async with running(sock_path):
        conn = await Conn.open(sock_path)
        assert "result" in await conn.request(req("echo"))
    assert not is_socket(sock_path)


async def test_a_live_socket_is_not_taken_over(sock_path: Path) -> None:
    async with running(sock_path):
        with trio.fail_after(WAIT), pytest.raises(ApiSocketInUseError, match="already serves"):
            await serve_api(sock_path, HANDLERS)
        conn = await Conn.open(sock_path)  # the first server is untouched
        assert "result" in await conn.request(req("echo"))


def test_a_regular_file_in_the_way_is_not_removed(sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    sock_path.write_text("mine")
    with pytest.raises(ApiSocketInUseError, match="is not a socket"):
        trio.run(serve_api, sock_path, HANDLERS)
    assert sock_path.read_text() == "mine"


async def test_a_too_long_socket_path_names_the_limit(sock_path: Path) -> None:
    long_path = sock_path.parent / ("x" * MAX_SOCKET_PATH) / "api.sock"
    with pytest.raises(SocketPathTooLongError, match=f"limited to {MAX_SOCKET_PATH} bytes"):
        await serve_api(long_path, HANDLERS)
    with pytest.raises(SocketPathTooLongError):
        call(long_path, "echo")


# -- the sync client ---------------------------------------------------------------------


async def test_client_calls_the_trio_server(sock_path: Path) -> None:
    async with running(sock_path):

        def calls() -> tuple[dict[str, Any], ApiError, ApiError]:
            result = call(sock_path, "echo", {"x": [1, "two"]}, timeout=WAIT)
            with pytest.raises(ApiError) as refused:
                call(sock_path, "refuse", timeout=WAIT)
            with pytest.raises(ApiError) as unknown:
                call(sock_path, "nope", timeout=WAIT)
            return result, refused.value, unknown.value

        result, refused, unknown = await trio.to_thread.run_sync(calls)
    assert result == {"echo": {"x": [1, "two"]}}
    assert (refused.code, refused.message) == ("unavailable", "no such thing here")
    assert unknown.code == "unknown_method"


async def test_client_times_out(sock_path: Path) -> None:
    async with running(sock_path):
        with pytest.raises(ApiError) as caught:
            await trio.to_thread.run_sync(partial(call, sock_path, "forever", timeout=0.1))
    assert caught.value.code == "timeout"
    assert "no answer to forever within 0.1 s" in caught.value.message


def test_client_without_a_socket_says_no_node_is_running(sock_path: Path) -> None:
    repo = sock_path.parent.parent
    with pytest.raises(NodeNotRunning) as caught:
        call(sock_path, "node.status", repo=repo)
    assert str(caught.value) == (
        f"no node is running for repo {repo} (start it with `qflow node run --repo {repo}`)"
    )


def test_client_on_a_stale_socket_says_no_node_is_running(sock_path: Path) -> None:
    make_stale_socket(sock_path)
    with pytest.raises(NodeNotRunning, match="no node is listening on"):
        call(sock_path, "node.status")
