"""`http.fetch` against a real local HTTP server: host/method allowlist, byte bounds on
request and response, no redirects followed, network errors as UNAVAILABLE."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from qflow_node.sandbox import FailureKind, Limits, Sandbox
from qflow_node.sandbox.codes import DENIED, INVALID_ARGUMENT, LIMIT_EXCEEDED, UNAVAILABLE
from qflow_node.sandbox.testing import OUT, Modules, RuleAuthorizer, command, host_import, shown

REQUEST = 1024
CAP = 4096


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/ok":
            self._send(200, b'{"hello": "world"}', [("X-Test", "1"), ("X-Test", "2")])
        elif self.path == "/big":
            self._send(200, b"x" * 5000)
        elif self.path == "/redirect":
            self._send(302, b"", [("Location", "http://example.invalid/secret")])
        elif self.path == "/utf8":
            self._send(200, "día ✓".encode())
        else:
            self._send(404, b"no")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._send(201, json.dumps({"got": body.decode(), "ct": self.headers["X-Kind"]}).encode())

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def fetch(
    sandbox: Sandbox, modules: Modules, request: dict[str, Any] | bytes, token: RuleAuthorizer,
    **run: Any,
) -> tuple[list[int | bytes], Any]:  # fmt: skip
    raw = request if isinstance(request, bytes) else json.dumps(request).encode()
    body = f"(call $show (call $http_fetch (i32.const {REQUEST}) (i32.const {len(raw)}) " \
        f"(i32.const {OUT}) (i32.const {CAP})))"  # fmt: skip
    wasm = command(body, imports=[host_import("http_fetch")], data={REQUEST: raw})
    result = sandbox.run(modules.add(wasm), b"{}", authorizer=token, **run)
    assert result.failure is None, result.failure
    return shown(result.stderr), result


def token(**rule: object) -> RuleAuthorizer:
    return RuleAuthorizer({"http.fetch": {"host": "127.0.0.1", "method": ("GET", "POST"), **rule}})


def test_allowed_get(sandbox: Sandbox, modules: Modules, server: str) -> None:
    auth = token(response_bytes=1000)
    codes, _ = fetch(sandbox, modules, {"method": "GET", "url": f"{server}/ok"}, auth)
    n, response = codes
    assert isinstance(response, bytes)
    assert n == len(response)
    doc = json.loads(response)
    assert doc["status"] == 200
    assert doc["body"] == '{"hello": "world"}'
    assert doc["headers"]["x-test"] == "1, 2"
    assert auth.calls == [
        ("http.fetch", {"host": "127.0.0.1", "method": "GET", "url": f"{server}/ok", "bytes": 0}),
        ("http.fetch", {"host": "127.0.0.1", "method": "GET", "url": f"{server}/ok", "bytes": 0,
                        "response_bytes": 18}),
    ]  # fmt: skip


def test_post_with_headers_and_body(sandbox: Sandbox, modules: Modules, server: str) -> None:
    request = {"method": "post", "url": f"{server}/echo", "headers": {"X-Kind": "k"}, "body": "hé"}
    codes, _ = fetch(sandbox, modules, request, token(bytes=10))
    doc = json.loads(codes[1])  # type: ignore[arg-type]
    assert (doc["status"], json.loads(doc["body"])) == (201, {"got": "hé", "ct": "k"})


def test_utf8_body(sandbox: Sandbox, modules: Modules, server: str) -> None:
    codes, _ = fetch(sandbox, modules, {"url": f"{server}/utf8"}, token())
    assert json.loads(codes[1])["body"] == "día ✓"  # type: ignore[arg-type]


def test_host_outside_the_allowlist_is_denied(
    sandbox: Sandbox, modules: Modules, server: str
) -> None:
    url = server.replace("127.0.0.1", "localhost") + "/ok"
    codes, result = fetch(sandbox, modules, {"url": url}, token())
    assert codes == [DENIED]
    assert result.denials[0].operation == "http.fetch"
    assert result.denials[0].args["host"] == "localhost"


def test_method_outside_the_allowlist_is_denied(
    sandbox: Sandbox, modules: Modules, server: str
) -> None:
    codes, _ = fetch(sandbox, modules, {"method": "DELETE", "url": f"{server}/ok"}, token())
    assert codes == [DENIED]


def test_byte_bounds(sandbox: Sandbox, modules: Modules, server: str) -> None:
    codes, result = fetch(sandbox, modules, {"url": f"{server}/big"}, token(response_bytes=1000))
    assert codes == [LIMIT_EXCEEDED]
    assert result.denials[0].args["response_bytes"] == 5000
    request = {
        "method": "POST",
        "url": f"{server}/echo",
        "body": "x" * 11,
        "headers": {"X-Kind": "k"},
    }
    codes, _ = fetch(sandbox, modules, request, token(bytes=10))
    assert codes == [LIMIT_EXCEEDED]


def test_redirects_are_not_followed(sandbox: Sandbox, modules: Modules, server: str) -> None:
    codes, _ = fetch(sandbox, modules, {"url": f"{server}/redirect"}, token())
    doc = json.loads(codes[1])  # type: ignore[arg-type]
    assert doc["status"] == 302
    assert doc["headers"]["location"] == "http://example.invalid/secret"


def test_network_errors_are_unavailable(sandbox: Sandbox, modules: Modules) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    codes, _ = fetch(sandbox, modules, {"url": f"http://127.0.0.1:{port}/"}, token())
    assert codes == [UNAVAILABLE]


def test_a_slow_server_is_cut_at_the_step_deadline(sandbox: Sandbox, modules: Modules) -> None:
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        body = f"(drop (call $http_fetch (i32.const {REQUEST}) (i32.const 100) (i32.const {OUT}) " \
            f"(i32.const {CAP})))"  # fmt: skip
        raw = json.dumps({"url": url}).encode().ljust(100)
        wasm = command(body, imports=[host_import("http_fetch")], data={REQUEST: raw})
        result = sandbox.run(modules.add(wasm), b"{}", authorizer=token(),
                             limits=Limits(timeout=0.3))  # fmt: skip
    assert result.failure is not None
    assert (result.failure.kind, result.failure.message) == (
        FailureKind.TIMEOUT,
        "the step ran longer than its 300 ms wall-clock limit and was stopped",
    )
    assert 0.3 <= result.usage.wall_time < 3


@pytest.mark.parametrize(
    "request_",
    [
        b"{not json",
        b"[]",
        json.dumps({"url": "file:///etc/passwd"}).encode(),
        json.dumps({"url": "http:///nohost"}).encode(),
        json.dumps({"url": "http://127.0.0.1/", "method": "BREW"}).encode(),
        json.dumps({"url": "http://127.0.0.1/", "headers": {"Host": "evil"}}).encode(),
        json.dumps({"url": "http://127.0.0.1/", "headers": {"X": "a\r\nB: c"}}).encode(),
        json.dumps({"url": "http://127.0.0.1/", "body": 7}).encode(),
    ],
)
def test_malformed_requests_are_invalid(
    sandbox: Sandbox, modules: Modules, request_: bytes
) -> None:
    auth = token()
    codes, _ = fetch(sandbox, modules, request_, auth)
    assert codes == [INVALID_ARGUMENT]
    assert auth.calls == []
