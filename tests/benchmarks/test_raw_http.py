"""benchmarks/raw_http.py against a scripted asyncio server on 127.0.0.1 in the test's own event loop:
what the server sent is what the client returns (status, lower-case headers, body, chunked or not),
connections are reused (and dropped on `Connection: close`, a close by the server, a failure), at
most `max_connections` are open, and every failure is one RawHTTPError (status 0 in the generators).
Nothing here depends on the machine's speed."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

from benchmarks.load_generator import poster
from benchmarks.raw_http import RawClient, RawHTTPError

Answer = Callable[[str, dict[str, str], bytes, asyncio.StreamWriter], Awaitable[bool]]


class ScriptedServer:
    """Reads each request (head and Content-Length body) and lets `answer(path, headers, body,
    writer)` write the reply; the connection stays open while `answer` returns True. Counts the
    connections accepted, the requests, and the most requests being answered at once."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the client closed the connection
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                self.requests.append((path, headers, body))
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    keep = await self.answer(path, headers, body, writer)
                finally:
                    self.in_flight -= 1
                if writer.is_closing():  # `answer` closed it itself
                    return
                await writer.drain()
                if not keep:
                    return
        finally:
            writer.close()


def reply(status: int, body: bytes, *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def echo(path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> bool:
    """The status named by the path's last part (/status/503), the request body echoed; a 503
    carries Retry-After as servers refusing load do; /slow waits 20 ms first."""
    if path == "/slow":
        await asyncio.sleep(0.02)  # the server's work: requests overlap while it lasts
    status = int(path.rsplit("/", 1)[-1]) if path.startswith("/status/") else 200
    extra = ["Retry-After: 7", "X-Twice: a", "X-Twice: b"] if status == 503 else []
    writer.write(reply(status, body, "Content-Type: application/json", *extra))
    return True


def test_status_headers_and_body_are_what_the_server_sent() -> None:
    async def scenario() -> None:
        server = ScriptedServer(echo)
        async with server as url, RawClient(url, headers={"Authorization": "Bearer k"}) as client:
            refused = await client.post("/status/503", {"user_id": "u1", "k": 10}, {"X-Deadline-Ms": "80"})
            answered = await client.post("/status/200", {"b": [1, 2]})
        assert refused.status == 503 and answered.status == 200
        assert refused.headers["retry-after"] == "7"  # names lower-case whatever the server sent
        assert refused.headers["x-twice"] == "a, b"
        assert "retry-after" not in answered.headers
        assert refused.json() == {"user_id": "u1", "k": 10} and answered.body == b'{"b":[1,2]}'
        (path, headers, body), second = server.requests
        assert path == "/status/503" and json.loads(body) == {"user_id": "u1", "k": 10}
        assert headers["authorization"] == "Bearer k" and headers["x-deadline-ms"] == "80"
        assert headers["content-type"] == "application/json" and headers["host"] == url.removeprefix(
            "http://"
        )
        assert "x-deadline-ms" not in second[1]  # a per-request header stays with its request

    asyncio.run(scenario())


def test_keep_alive_reuses_one_connection_for_sequential_requests() -> None:
    async def scenario() -> None:
        server = ScriptedServer(echo)
        async with server as url, RawClient(url) as client:
            statuses = [(await client.post(f"/status/{200 + i % 2}", {"i": i})).status for i in range(20)]
            assert statuses == [200, 201] * 10
            assert server.connections == client.connections_opened == 1

    asyncio.run(scenario())


def test_at_most_max_connections_are_open_and_the_rest_wait() -> None:
    async def scenario() -> None:
        server = ScriptedServer(echo)
        async with server as url, RawClient(url, max_connections=4) as client:
            answers = await asyncio.gather(*(client.post("/slow", {"i": i}) for i in range(20)))
        assert [answer.json() for answer in answers] == [{"i": i} for i in range(20)]
        # 20 at once, 4 connections: 4 answered at a time on 4 connections, never more
        assert server.connections == client.connections_opened == 4
        assert server.peak_in_flight == 4

    asyncio.run(scenario())


def test_connection_close_drops_the_connection_and_the_next_request_opens_one() -> None:
    async def closing(path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(200, b"bye", "Connection: close"))
        return False

    async def scenario() -> None:
        server = ScriptedServer(closing)
        async with server as url, RawClient(url) as client:
            answers = [await client.post("/x", {}) for _ in range(3)]
        assert [(answer.status, answer.body) for answer in answers] == [(200, b"bye")] * 3
        assert server.connections == client.connections_opened == 3

    asyncio.run(scenario())


def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    """A server's keep-alive timeout closes an idle connection without saying so in the answer
    before; the next request must go on a new connection, not fail on the dead one."""
    closed = asyncio.Event()

    async def answer_then_close(
        path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(reply(200, b"ok"))
        if path == "/first":
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            closed.set()
        return path != "/first"

    async def scenario() -> None:
        server = ScriptedServer(answer_then_close)
        async with server as url, RawClient(url) as client:
            assert (await client.post("/first", {})).status == 200
            await closed.wait()
            # until the client's event loop has read the close, the pooled connection looks alive
            for _ in range(1000):
                if client._idle and client._idle[0].reader.at_eof():
                    break
                await asyncio.sleep(0.001)
            assert (await client.post("/second", {})).status == 200
        assert server.connections == client.connections_opened == 2

    asyncio.run(scenario())


def test_chunked_answers_are_joined_and_the_connection_reused() -> None:
    async def chunked(path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        )
        writer.write(b'5\r\n{"a":\r\n')
        await writer.drain()  # the rest arrives in a later packet: the client must wait for it
        writer.write(b"a;ext=1\r\n[1,2,3,4]}\r\n0\r\nX-Trailer: t\r\n\r\n")
        return True

    async def scenario() -> None:
        server = ScriptedServer(chunked)
        async with server as url, RawClient(url) as client:
            answers = [await client.post("/c", {}) for _ in range(3)]
        assert [answer.json() for answer in answers] == [{"a": [1, 2, 3, 4]}] * 3
        assert "content-length" not in answers[0].headers
        assert server.connections == client.connections_opened == 1

    asyncio.run(scenario())


def test_an_answer_framed_by_the_close_is_read_to_the_end_and_not_reused() -> None:
    async def unframed(path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nall of it")
        return False

    async def scenario() -> None:
        server = ScriptedServer(unframed)
        async with server as url, RawClient(url) as client:
            answers = [await client.post("/u", {}) for _ in range(2)]
        assert [answer.body for answer in answers] == [b"all of it"] * 2
        assert client.connections_opened == 2

    asyncio.run(scenario())


def test_a_close_mid_answer_is_a_raw_http_error_and_status_0_in_the_generators() -> None:
    async def truncating(
        path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        if path == "/ok":
            writer.write(reply(200, b"fine"))
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")  # then the close
        return False

    async def scenario() -> None:
        server = ScriptedServer(truncating)
        async with server as url:
            async with RawClient(url, max_connections=1) as client:
                with pytest.raises(RawHTTPError, match="IncompleteReadError"):
                    await client.post("/cut", {})
                # the broken connection left the pool: the next request gets a new one
                assert (await client.post("/ok", {})).body == b"fine"
                assert client.connections_opened == 2
            async with poster("raw", url, 2, 5.0, None) as post:
                assert await post("/cut", {}) == (0, False)
                assert await post("/ok", {}) == (200, False)

    asyncio.run(scenario())


def test_no_answer_within_the_timeout_is_a_raw_http_error() -> None:
    async def silent(path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.Event().wait()  # never answers
        return False

    async def scenario() -> None:
        server = ScriptedServer(silent)
        async with server as url, RawClient(url, timeout_s=0.2) as client:
            started = time.perf_counter()
            with pytest.raises(RawHTTPError, match=r"within 0\.2 s"):
                await client.post("/hang", {})
            assert time.perf_counter() - started < 2.0
            assert not client._idle  # the connection that timed out is not pooled

    asyncio.run(scenario())


def test_a_refused_connection_is_a_raw_http_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there

    async def scenario() -> None:
        async with RawClient(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(RawHTTPError):
                await client.post("/x", {})
            assert client.connections_opened == 0

    asyncio.run(scenario())


def test_only_plain_http_urls_and_a_positive_pool() -> None:
    with pytest.raises(ValueError, match="only plain http"):
        RawClient("https://127.0.0.1:8443")
    with pytest.raises(ValueError, match="max_connections must be 1 or more"):
        RawClient("http://127.0.0.1:8000", max_connections=0)
