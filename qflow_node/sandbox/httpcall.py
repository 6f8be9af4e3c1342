"""`http.fetch` for steps: request parsing, and one bounded request through httpx.

The URL is parsed once, by httpx, and the parsed URL is both what the token authorizes
(its host) and what is requested, so no parser differential can smuggle a request to a
host the token did not allow. Redirects are not followed (a redirect could leave the
allowlist; the step sees the 3xx). Proxy settings from the environment are ignored.
The body is read raw (`Accept-Encoding: identity`, no decompression) up to the cap, and
the whole exchange is bounded by the step's remaining wall-clock time.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Final

import httpx

from qflow_node.sandbox.codes import INVALID_ARGUMENT, LIMIT_EXCEEDED, UNAVAILABLE

METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}
)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: httpx.URL
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def host(self) -> str:
        """ASCII, lowercase: IDNs in their xn-- form, as tokens name hosts."""
        return self.url.raw_host.decode("ascii").lower()

    @property
    def url_text(self) -> str:
        return str(self.url)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def to_json(self) -> bytes:
        doc = {
            "status": self.status,
            "headers": self.headers,
            "body": self.body.decode("utf-8", "replace"),
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def new_client() -> httpx.Client:
    return httpx.Client(trust_env=False, follow_redirects=False)


def parse_request(text: str) -> HttpRequest | None:
    """The request a step described, or None if it is not a valid one."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    method, url_text = doc.get("method", "GET"), doc.get("url")
    headers, body = doc.get("headers", {}), doc.get("body", "")
    if not isinstance(method, str) or method.upper() not in METHODS:
        return None
    if not isinstance(url_text, str) or not isinstance(body, str):
        return None
    if not isinstance(headers, dict) or not all(_valid_header(k, v) for k, v in headers.items()):
        return None
    try:
        url = httpx.URL(url_text)
    except (httpx.InvalidURL, ValueError, TypeError):
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    return HttpRequest(method.upper(), url, tuple(headers.items()), body.encode())


def _valid_header(name: object, value: object) -> bool:
    return (
        isinstance(name, str)
        and isinstance(value, str)
        and _TOKEN.fullmatch(name) is not None
        and name.lower() not in _FORBIDDEN_HEADERS
        and not any(c in value for c in "\r\n\0")
    )


def send(
    client: httpx.Client, request: HttpRequest, seconds: float, max_bytes: int
) -> HttpResponse | int:
    """Perform the request within `seconds`; an error code if it cannot be done."""
    if seconds <= 0:
        return UNAVAILABLE
    deadline = time.monotonic() + seconds
    headers = [*request.headers, ("Accept-Encoding", "identity")]
    try:
        with client.stream(
            request.method,
            request.url,
            headers=headers,
            content=request.body or None,
            timeout=httpx.Timeout(seconds),
        ) as response:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_raw():
                size += len(chunk)
                if size > max_bytes:
                    return LIMIT_EXCEEDED
                if time.monotonic() > deadline:
                    return UNAVAILABLE
                chunks.append(chunk)
            merged: dict[str, str] = {}
            for name, value in response.headers.multi_items():
                key = name.lower()
                merged[key] = f"{merged[key]}, {value}" if key in merged else value
            return HttpResponse(response.status_code, merged, b"".join(chunks))
    except httpx.HTTPError:
        return UNAVAILABLE
    except (ValueError, TypeError):
        return INVALID_ARGUMENT
