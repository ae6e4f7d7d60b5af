"""The native HTTP/1.1 client (providers/h1.py) against a raw socket server that sends exactly the bytes a test
scripts: framing (length, chunked, until close), keep-alive and stale connections, the pool's limit, timeouts,
line splitting for server-sent events, and bad input."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from tenantlm.errors import UpstreamTimeout, UpstreamUnavailable
from tenantlm.providers.h1 import H1Pool
from tenantlm.providers.http_errors import transport_error

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (by content-length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def reply(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


class Server:
    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.handler: Handler | None = None
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        assert self.handler is not None
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    s.server = await asyncio.start_server(s._serve, "127.0.0.1", 0)
    yield s
    s.server.close()
    await s.server.wait_closed()


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., H1Pool]]:
    made: list[H1Pool] = []

    def make(url: str, **kw: Any) -> H1Pool:
        made.append(H1Pool(url, headers=[("authorization", "Bearer sk-x")], **kw))
        return made[-1]

    yield make
    for p in made:
        await p.aclose()


def keep_alive(server: Server, body: bytes = b'{"ok":true}') -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            server.requests.append(await read_request(reader))
            writer.write(reply(body))
            await writer.drain()
    server.handler = handler


def answers(server: Server, raw: bytes, *, hold: bool = False) -> None:
    """A server that reads one request and writes ``raw`` as it is, then closes the connection, or with ``hold``
    keeps it open until the client closes it."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()
        if hold:
            await reader.read()
    server.handler = handler


def silent(server: Server) -> None:
    """A server that reads the request and never answers."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)
    server.handler = handler


async def test_request_line_headers_and_body_are_sent(server: Server, pools: Any) -> None:
    keep_alive(server)
    pool = pools(server.url)
    r = await pool.request("POST", "/chat/completions", b'{"a":1}')
    assert r.status_code == 200 and r.is_success and r.content == b'{"ok":true}'
    head, body = server.requests[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nauthorization: Bearer sk-x\r\n" in head and b"\r\ncontent-length: 7\r\n" in head
    assert b"host: 127.0.0.1:" in head and body == b'{"a":1}'
    assert r.headers["content-type"] == "application/json"


async def test_connections_are_kept_alive_and_reused(server: Server, pools: Any) -> None:
    keep_alive(server)
    pool = pools(server.url)
    for _ in range(5):
        assert (await pool.request("POST", "/x", b"{}")).content == b'{"ok":true}'
    assert server.connections == 1 and len(server.requests) == 5
    assert pool.stats() == {"idle": 1, "active": 0, "waiting": 0}


async def test_the_pool_never_opens_more_than_its_limit(server: Server, pools: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            server.requests.append(await read_request(reader))
            await asyncio.sleep(0.02)
            writer.write(reply(b"{}"))
            await writer.drain()
    server.handler = handler
    pool = pools(server.url, max_connections=3)
    replies = await asyncio.gather(*[pool.request("POST", "/x", b"{}") for _ in range(12)])
    assert [r.status_code for r in replies] == [200] * 12
    assert server.connections == 3


async def test_waiting_for_a_connection_times_out_as_a_pool_timeout(server: Server, pools: Any) -> None:
    silent(server)
    pool = pools(server.url, max_connections=1, read_timeout_s=0.2)
    results = await asyncio.gather(pool.request("POST", "/x", b"{}"), pool.request("POST", "/x", b"{}"),
                                   return_exceptions=True)
    kinds = sorted(type(r).__name__ for r in results)
    assert kinds == ["PoolTimeout", "ReadTimeout"]
    assert pool.stats()["active"] == 0


async def test_chunked_body_is_decoded(server: Server, pools: Any) -> None:
    answers(server, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            hold=True)
    r = await pools(server.url).request("POST", "/x", b"{}")
    assert r.content == b"hello world"


async def test_body_until_close_is_complete_when_the_server_closes(server: Server, pools: Any) -> None:
    answers(server, b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
    pool = pools(server.url)
    r = await pool.request("POST", "/x", b"{}")
    assert r.content == b"all of it"
    assert pool.stats()["idle"] == 0  # not reusable


async def test_a_body_cut_short_is_a_read_error(server: Server, pools: Any) -> None:
    answers(server, b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
    with pytest.raises(httpx.ReadError):
        await pools(server.url).request("POST", "/x", b"{}")


async def test_garbage_is_a_protocol_error(server: Server, pools: Any) -> None:
    answers(server, b"SMTP READY\r\n\r\n", hold=True)
    with pytest.raises(httpx.RemoteProtocolError):
        await pools(server.url).request("POST", "/x", b"{}")


async def test_no_response_at_all_on_a_fresh_connection_is_not_resent(server: Server, pools: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.requests.append(await read_request(reader))  # and close without a word
    server.handler = handler
    with pytest.raises(httpx.RemoteProtocolError):
        await pools(server.url).request("POST", "/x", b"{}")
    assert len(server.requests) == 1


def one_answer_per_connection(server: Server) -> None:
    """A server that answers the first request on each connection, then reads the next one in full and closes the
    connection without a word (as an upstream that ran it and died, or closed its keep-alive as it arrived)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.requests.append(await read_request(reader))
        writer.write(reply(b"{}"))
        await writer.drain()
        server.requests.append(await read_request(reader))
    server.handler = handler


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_on_a_reused_connection_that_gets_no_response_is_not_resent(
        server: Server, pools: Any, stream: bool) -> None:
    one_answer_per_connection(server)
    pool = pools(server.url)
    first = await pool.request("POST", "/x", b"{}", stream=stream)
    await first.aread()
    assert first.status_code == 200 and len(server.requests) == 1
    with pytest.raises(httpx.RemoteProtocolError) as caught:
        await pool.request("POST", "/x", b'{"n":2}', stream=stream)
    assert len(server.requests) == 2 and server.connections == 1  # written once, on the reused connection
    assert server.requests[1][1] == b'{"n":2}'
    retryable = transport_error("up", caught.value)  # what the provider makes of it: retried under its policy
    assert isinstance(retryable, UpstreamUnavailable) and not isinstance(retryable, UpstreamTimeout)
    assert pool.stats() == {"idle": 0, "active": 0, "waiting": 0}
    third = await pool.request("POST", "/x", b"{}", stream=stream)  # a fresh connection for the next request
    await third.aread()
    assert third.status_code == 200 and len(server.requests) == 3 and server.connections == 2


async def test_the_pool_writes_each_request_once_whatever_the_upstream_does(server: Server, pools: Any) -> None:
    one_answer_per_connection(server)
    pool = pools(server.url)
    outcomes = []
    for _ in range(10):
        try:
            outcomes.append((await pool.request("POST", "/x", b"{}")).status_code)
        except httpx.RemoteProtocolError:
            outcomes.append(0)
    assert len(server.requests) == 10
    assert outcomes == [200, 0] * 5


async def test_an_idle_connection_the_server_closed_is_replaced_transparently(server: Server, pools: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.requests.append(await read_request(reader))
        writer.write(reply(b"{}"))  # keep-alive by HTTP/1.1's default, but the server then goes away
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.05)
    server.handler = handler
    pool = pools(server.url)
    assert (await pool.request("POST", "/x", b"{}")).status_code == 200
    await asyncio.sleep(0.1)  # the server has closed the idle connection
    assert (await pool.request("POST", "/x", b"{}")).status_code == 200
    assert server.connections == 2


async def test_idle_connections_expire(server: Server, pools: Any) -> None:
    keep_alive(server)
    pool = pools(server.url, keepalive_expiry_s=0.05)
    await pool.request("POST", "/x", b"{}")
    await asyncio.sleep(0.1)
    await pool.request("POST", "/x", b"{}")
    assert server.connections == 2


async def test_read_timeout_while_the_upstream_is_silent(server: Server, pools: Any) -> None:
    silent(server)
    pool = pools(server.url, read_timeout_s=0.1)
    with pytest.raises(httpx.ReadTimeout):
        await pool.request("POST", "/x", b"{}")
    assert pool.stats() == {"idle": 0, "active": 0, "waiting": 0}


async def test_a_slow_but_steady_stream_does_not_time_out(server: Server, pools: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(6):
            await asyncio.sleep(0.04)
            writer.write(b"2\r\nab\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()
    server.handler = handler
    pool = pools(server.url, read_timeout_s=0.15)  # the whole stream takes longer than this; no gap does
    r = await pool.request("POST", "/x", b"{}", stream=True)
    assert b"".join([c async for c in r.aiter_bytes()]) == b"ab" * 6
    assert pool.stats()["idle"] == 1


async def test_lines_split_only_on_line_ends_and_survive_any_chunking(server: Server, pools: Any) -> None:
    text = 'data: {"t":"a\u2028b é"}\r\n\r\ndata: two\n\ndata: three\rlast'.encode()
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]  # splits "\r\n" and the 2-byte "é" somewhere

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in pieces:
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.001)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()
    server.handler = handler
    r = await pools(server.url).request("POST", "/x", b"{}", stream=True)
    lines = [line async for line in r.aiter_lines()]
    assert lines == ['data: {"t":"a\u2028b é"}', "", "data: two", "", "data: three", "last"]


async def test_closing_a_stream_early_drops_its_connection(server: Server, pools: Any) -> None:
    answers(server, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n", hold=True)
    pool = pools(server.url)
    r = await pool.request("POST", "/x", b"{}", stream=True)
    async for chunk in r.aiter_bytes():
        assert chunk == b"abc"
        break
    await r.aclose()
    assert pool.stats() == {"idle": 0, "active": 0, "waiting": 0}


async def test_cancelling_a_request_frees_its_connection(server: Server, pools: Any) -> None:
    silent(server)
    pool = pools(server.url, max_connections=1)
    task = asyncio.create_task(pool.request("POST", "/x", b"{}"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.stats() == {"idle": 0, "active": 0, "waiting": 0}


async def test_connection_refused_is_a_connect_error(pools: Any) -> None:
    with pytest.raises(httpx.ConnectError):
        await pools("http://127.0.0.1:9/v1").request("POST", "/x", b"{}")


@pytest.mark.parametrize("name,value", [("x-a\r\nx-b", "1"), ("x-a", "1\r\nx-evil: 2"), ("x a", "1")])
def test_header_injection_is_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="bad header"):
        H1Pool("http://127.0.0.1:1/v1", headers=[(name, value)])


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="not an http"):
        H1Pool("ftp://example.com/")


async def test_a_path_with_spaces_or_line_breaks_is_refused(pools: Any) -> None:
    with pytest.raises(ValueError, match="bad request path"):
        await pools("http://127.0.0.1:1/v1").request("POST", "/x y\r\n", b"{}")
