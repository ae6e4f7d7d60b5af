"""A lean HTTP/1.1 keep-alive client for one upstream origin, on asyncio protocols and ``httptools``' parser.

Why: on the proxied chat path the gateway spends most of its CPU in the client stack, not in its own logic
(py-spy, ``bench/p1_gateways.py``): httpx's request/response objects and headers, then the pool below them. An
OpenAI-compatible upstream needs a small subset of HTTP: one origin, ``POST`` with a JSON body, a response with a
``content-length`` or chunked body, keep-alive. This client does only that: a request is one ``write`` of
pre-encoded bytes, the response is parsed by ``httptools`` (the C parser uvicorn uses) in ``data_received``, and the
pool is a deque of idle connections.

Errors are raised as httpx's exception types (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``, ``ReadError``,
``RemoteProtocolError``, ``PoolTimeout``) so the provider maps and retries them the same way whichever client is
under it. A request is written once and never resent by the pool, not even when a *reused* keep-alive connection
closes before any byte of the response arrived: the upstream may have read the ``POST`` and run it before closing
(RFC 9112 §9.3.1 forbids retrying a non-idempotent request that way). That case raises ``RemoteProtocolError``,
which the provider treats as a retryable connection error under its own retry policy (``max_retries``, backoff,
breaker), so every attempt that may have reached the upstream is reported and metered. An idle connection the
upstream closed is dropped before use when its close has already arrived.

Not here, on purpose: proxies, redirects, HTTP/2, compression negotiation (no ``accept-encoding`` is sent, so
servers reply uncompressed). Use ``http_pool: httpx`` in a provider's config for those.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import urlsplit

import httptools
import httpx

_STREAM_HIGH_WATER = 256 * 1024  # bytes buffered from a stream before reading from the socket pauses


class _Exchange:
    """One request/response on a connection. Filled in by the protocol's parser callbacks."""

    __slots__ = ("body", "buffered", "complete", "done", "error", "got_bytes", "headers", "headers_done",
                 "status", "streaming", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, streaming: bool) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.headers_done: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.waiter: asyncio.Future[None] | None = None  # a stream reader waiting for more body
        self.complete = False
        self.error: BaseException | None = None
        self.got_bytes = False
        self.streaming = streaming

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if self.complete or self.error is not None:
            return
        self.error = exc
        for fut in (self.headers_done, self.done):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: nobody may be awaiting this one any more
        self.wake()


class _Connection(asyncio.Protocol):
    def __init__(self, pool: H1Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self.last_activity = 0.0
        self.paused = False

    # --- asyncio.Protocol ---------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:  # bytes while idle: the server is not following the protocol; drop the connection
            self.close()
            return
        ex.got_bytes = True
        self.last_activity = self.pool.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            ex.fail(httpx.RemoteProtocolError("upstream tried to upgrade the connection"))
            self.close()
        except httptools.HttpParserError as exc:
            ex.fail(httpx.RemoteProtocolError(f"malformed HTTP response from upstream: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.exchange
        if ex is not None and not ex.complete:
            if ex.headers_done.done() and ex.error is None and not self._framed(ex):
                self.on_message_complete()  # a body without length or chunking ends with the connection
                self.reusable = False
            if not ex.complete:
                detail = f": {exc}" if exc else ""
                ex.fail(httpx.ReadError(f"upstream closed the connection before the response was complete{detail}")
                        if ex.got_bytes else
                        httpx.RemoteProtocolError(f"upstream closed the connection without a response{detail}"))

    @staticmethod
    def _framed(ex: _Exchange) -> bool:
        return any(name in (b"content-length", b"transfer-encoding") for name, _ in ex.headers)

    # --- httptools callbacks ------------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.exchange is not None
        self.exchange.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        ex = self.exchange
        assert ex is not None
        ex.status = self.parser.get_status_code()
        if ex.status < 200:  # 1xx: an interim response; the real one follows
            ex.headers = []
            return
        if not ex.headers_done.done():
            ex.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        assert ex is not None
        ex.body.append(body)
        ex.buffered += len(body)
        if ex.streaming:
            if ex.buffered > _STREAM_HIGH_WATER and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            ex.wake()

    def on_message_complete(self) -> None:
        ex = self.exchange
        assert ex is not None
        if ex.status < 200:
            return
        ex.complete = True
        self.reusable = self.parser.should_keep_alive()
        if not ex.headers_done.done():
            ex.headers_done.set_result(None)
        if not ex.done.done():
            ex.done.set_result(None)
        ex.wake()

    # --- used by the pool and responses ---------------------------------------------------------------------------
    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class H1Response:
    """Status, headers and body of one upstream response. Close it (``aclose``) when done with a stream."""

    def __init__(self, pool: H1Pool, conn: _Connection, ex: _Exchange) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._ex = ex
        self.status_code = ex.status
        self.raw_headers = ex.headers
        self._headers: httpx.Headers | None = None
        self._content: bytes | None = None

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def headers(self) -> httpx.Headers:
        if self._headers is None:
            self._headers = httpx.Headers(self.raw_headers)
        return self._headers

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the response body has not been read; call aread() first")
        return self._content

    async def aread(self) -> bytes:
        if self._content is None:
            ex = self._ex
            if not ex.complete:
                await self._pool._wait(ex.done, self._conn)
            self._content = b"".join(ex.body)
            ex.body.clear()
            self._finish()
        return self._content

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        ex = self._ex
        while True:
            while ex.body:
                chunk = ex.body.popleft()
                ex.buffered -= len(chunk)
                if self._conn is not None and ex.buffered < _STREAM_HIGH_WATER // 2:
                    self._conn.resume()
                yield chunk
            if ex.complete:
                self._finish()
                return
            if ex.error is not None:
                self._drop()
                raise ex.error
            ex.waiter = self._pool.loop.create_future()
            try:
                await self._pool._wait(ex.waiter, self._conn)
            finally:
                ex.waiter = None

    async def aiter_lines(self) -> AsyncIterator[str]:
        """Lines of a UTF-8 text body (``\\n``, ``\\r\\n`` or ``\\r`` ends one), without their line ending. Only
        these end a line (not the other characters ``str.splitlines`` knows), and a character or a ``\\r\\n``
        split across two reads is put back together."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        async for chunk in self.aiter_bytes():
            text = pending + decoder.decode(chunk)
            hold = ""
            if text.endswith("\r"):  # maybe the first half of a "\r\n"
                text, hold = text[:-1], "\r"
            if "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            *lines, pending = text.split("\n")
            pending += hold
            for line in lines:
                yield line
        pending += decoder.decode(b"", final=True)
        if pending.rstrip("\r"):
            yield pending.rstrip("\r")

    async def aclose(self) -> None:
        if self._conn is None:
            return
        if self._ex.complete:
            self._finish()
        else:
            self._drop()

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(conn)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            self._pool._release(conn)


class H1Pool:
    """Keep-alive connections to one origin (``scheme://host:port``), at most ``max_connections`` at a time."""

    def __init__(self, base_url: str, *, headers: Iterable[tuple[str, str]] = (), max_connections: int = 256,
                 connect_timeout_s: float = 5.0, read_timeout_s: float = 60.0, keepalive_expiry_s: float = 4.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self._ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        default_port = 443 if parts.scheme == "https" else 80
        host_header = self.host if self.port == default_port else f"{self.host}:{self.port}"
        if ":" in self.host and not host_header.startswith("["):  # an IPv6 literal
            host_header = f"[{self.host}]" if self.port == default_port else f"[{self.host}]:{self.port}"
        lines = [f"host: {host_header}"]
        for name, value in headers:
            _check_header(name, value)
            lines.append(f"{name}: {value}")
        self._static_headers = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keepalive_expiry_s = keepalive_expiry_s
        self._idle: collections.deque[_Connection] = collections.deque()
        self._active = 0  # connections checked out or being opened
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._starts: dict[tuple[str, str], bytes] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def request(self, method: str, path: str, body: bytes = b"", *, stream: bool = False,
                      headers: Iterable[tuple[str, str]] = ()) -> H1Response:
        """Send one request; returns once the response's headers arrived. Without ``stream`` the body is read
        too. With ``stream`` the caller must ``aclose()`` the response (or read it to the end)."""
        head = self._head(method, path, body, headers)
        conn = await self._acquire()
        ex = _Exchange(self.loop, stream)
        conn.exchange = ex
        conn.reusable = False
        try:
            assert conn.transport is not None
            conn.transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                conn.transport.write(body)
            await self._wait(ex.headers_done, conn)
        except BaseException:  # never resent here: the upstream may have read it (see the module's docstring)
            conn.close()
            self._release(conn)
            raise
        response = H1Response(self, conn, ex)
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response

    def _head(self, method: str, path: str, body: bytes, headers: Iterable[tuple[str, str]]) -> bytes:
        start = self._starts.get((method, path))
        if start is None:  # the request line and the fixed headers, checked and encoded once per method and path
            target = self.prefix + path
            if not target.startswith("/") or any(c in target for c in " \r\n"):
                raise ValueError(f"bad request path: {target!r}")
            start = f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + self._static_headers
            if len(self._starts) < 64:
                self._starts[(method, path)] = start
        extra = ""
        for name, value in headers:
            _check_header(name, value)
            extra += f"{name}: {value}\r\n"
        return start + extra.encode("latin-1") + b"content-length: %d\r\n\r\n" % len(body)

    async def _wait(self, fut: asyncio.Future[None], conn: _Connection | None) -> None:
        """Wait for ``fut``; a read timeout fires when the connection has been silent for ``read_timeout_s``."""
        if fut.done():
            fut.result()
            return
        loop = self.loop
        if conn is not None:
            conn.last_activity = loop.time()
        timed_out = False
        handle: asyncio.TimerHandle | None = None

        def check() -> None:
            nonlocal handle, timed_out
            if fut.done():
                return
            last = conn.last_activity if conn is not None else 0.0
            remaining = last + self.read_timeout_s - loop.time()
            if remaining > 0:
                handle = loop.call_later(remaining, check)
                return
            timed_out = True
            fut.cancel()

        handle = loop.call_later(self.read_timeout_s, check)
        try:
            await fut
        except asyncio.CancelledError:
            if timed_out:
                raise httpx.ReadTimeout(f"upstream sent nothing for {self.read_timeout_s} s") from None
            raise
        finally:
            if handle is not None:
                handle.cancel()

    async def _acquire(self) -> _Connection:
        if self._closed:
            raise httpx.ConnectError("the connection pool is closed")
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # most recently used first: the least likely to have been closed
            if conn.closed or now - conn.idle_since > self.keepalive_expiry_s:
                conn.close()
                continue
            self._active += 1
            return conn
        while self._active >= self.max_connections:
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(self.read_timeout_s):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were woken but are leaving: pass the turn on
                if isinstance(exc, TimeoutError):
                    raise httpx.PoolTimeout(f"no upstream connection came free within {self.read_timeout_s} s "
                                            f"({self.max_connections} in use)") from None
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if self._idle:
                return await self._acquire()
        self._active += 1
        try:
            return await self._connect()
        except BaseException:
            self._active -= 1
            self._wake_one()
            raise

    async def _connect(self) -> _Connection:
        loop = self.loop
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port, ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {self.host}:{self.port} took longer than "
                                       f"{self.connect_timeout_s} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return conn

    def _release(self, conn: _Connection) -> None:
        ex = conn.exchange
        conn.exchange = None
        self._active -= 1
        if (not self._closed and not conn.closed and conn.reusable and ex is not None and ex.complete
                and not conn.paused):
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        await asyncio.sleep(0)  # let the transports run their close callbacks

    def stats(self) -> dict[str, Any]:
        return {"idle": len(self._idle), "active": self._active, "waiting": len(self._waiters)}


def _check_header(name: str, value: str) -> None:
    if any(c in name for c in ":\r\n ") or any(c in value for c in "\r\n"):
        raise ValueError(f"bad header {name!r}")
