"""A minimal asyncio HTTP/1.1 client for loopback benchmarks: POST JSON, read the answer, reuse the
connection.

The load generators share two cores with the server they measure. httpx spends about a millisecond
of CPU per request (URL and header models, a state machine per connection, a pool built for every
case), so at a few hundred requests per second the generator eats a core and its own lateness shows
in the server's figures. This client does only what a benchmark needs: one plain-HTTP host, a pool
of at most `max_connections` keep-alive connections (a request waits for a free one), the request
head of each path built once, answers framed by Content-Length, chunked encoding or the connection
closing, and `Connection: close` honoured (that connection is dropped, the next request opens a new
one). Any failure to get a whole answer (refused connection, reset, a close mid-answer, a malformed
answer, the per-request timeout) raises `RawHTTPError`, which callers count as status 0, as they do
httpx.HTTPError. Not for anything but loopback benchmarks: no TLS, no redirects, no proxies.

    async with RawClient("http://127.0.0.1:8000", max_connections=32) as client:
        response = await client.post("/echo", {"k": 10})
        response.status, response.headers.get("retry-after"), response.body
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

HEAD_END = b"\r\n\r\n"
NO_BODY_STATUSES = frozenset({204, 304})
MAX_HEADS = 1024  # request heads kept built, by path and header set


class RawHTTPError(Exception):
    """No whole HTTP answer: the connection failed, closed early, answered garbage, or timed out."""


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header's values joined by ", "
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @property
    def usable(self) -> bool:
        """Idle and still open: the server may have closed it while it sat in the pool (its
        keep-alive timeout), and then its EOF already waits in the reader."""
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class RawClient:
    """A pool of keep-alive HTTP/1.1 connections to the host:port of `url` (http only)."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 100,
        timeout_s: float = 30.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"RawClient: only plain http://host:port URLs, got {url!r}")
        if max_connections < 1:
            raise ValueError(f"RawClient: max_connections must be 1 or more, got {max_connections}")
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.base_path = parsed.path.rstrip("/")
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.headers = dict(headers or {})
        self.connections_opened = 0  # over the client's life: keep-alive reuse keeps it low
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._heads: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}
        self._closed = False

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _head(self, path: str, headers: dict[str, str] | None) -> bytes:
        """The request line and fixed headers of `path` (everything but Content-Length), built once
        per path and header set: most of a request's bytes cost nothing after the first."""
        extra = tuple(sorted((headers or {}).items()))
        key = (path, extra)
        head = self._heads.get(key)
        if head is None:
            fields = {"Host": f"{self.host}:{self.port}", "Content-Type": "application/json"}
            fields.update(self.headers)
            fields.update(extra)
            lines = [
                f"POST {self.base_path}{path} HTTP/1.1",
                *(f"{name}: {value}" for name, value in fields.items()),
            ]
            head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
            if len(self._heads) >= MAX_HEADS:  # per-request headers that vary: keep the cache bounded
                self._heads.clear()
            self._heads[key] = head
        return head

    async def post(
        self, path: str, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> RawResponse:
        """POST `json_body` (JSON-encoded once) to `path`; the whole answer, or RawHTTPError within
        the timeout (which counts from the call: the wait for a free connection is part of it)."""
        if self._closed:
            raise RawHTTPError("the client is closed")
        body = json.dumps(json_body, separators=(",", ":")).encode()
        request = b"%s%d%s%s" % (self._head(path, headers), len(body), HEAD_END, body)
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._slots:
                    return await self._exchange(request)
        except TimeoutError:
            raise RawHTTPError(
                f"no answer from {self.host}:{self.port}{path} within {self.timeout_s:g} s"
            ) from None

    async def _exchange(self, request: bytes) -> RawResponse:
        connection = None
        while self._idle:
            candidate = self._idle.pop()
            if candidate.usable:
                connection = candidate
                break
            candidate.close()
        keep = False
        try:
            if connection is None:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                self.connections_opened += 1
                connection = _Connection(reader, writer)
            connection.writer.write(request)
            response, keep = await _read_response(connection.reader)
            return response
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
            raise RawHTTPError(f"{type(error).__name__}: {error}") from None
        finally:
            # a connection is pooled again only after a whole answer that did not ask to close it;
            # a failure, a timeout (cancellation) or `Connection: close` drops it
            if connection is not None:
                if keep and not self._closed:
                    self._idle.append(connection)
                else:
                    connection.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[RawResponse, bool]:
    """One answer from `reader`, and whether its connection may carry another request."""
    head = await reader.readuntil(HEAD_END)
    lines = head[: -len(HEAD_END)].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"malformed header line {line[:80]!r}")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
    if status in NO_BODY_STATUSES or 100 <= status < 200:
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:  # framed by the close itself: the connection cannot be reused
        body, keep = await reader.read(), False
    return RawResponse(status, headers, body), keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)  # chunk extensions are ignored
        if size == 0:
            break
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("chunk not followed by CRLF")
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, up to the empty line
        pass
    return b"".join(parts)
