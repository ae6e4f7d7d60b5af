"""A lean OpenAI-compatible upstream for overhead benchmarks: the fake model's replies, served with as little work
per request as Python allows, so that what a benchmark measures is the gateway in front of it.

Usage::

    python bench/lean_upstream.py --port 9090 [--host 127.0.0.1] [--tokens 16]

Why not ``tenantlm fake-upstream``: that one is an ASGI app under uvicorn with failure injection, streaming and
embeddings, and costs ~130 µs of CPU per request when requests arrive back to back. In a chain where it sleeps
between requests (one connection through a gateway: client -> gateway -> upstream -> gateway -> client) it costs
260-300 µs on this kind of VM: its code and data are no longer in the CPU's caches when the next request comes. At
one connection that is a quarter of TenantLM's whole request cycle, and a constant that pulls every gateway's ratio
towards 1. This server does the same per request as the fake model for the requests the benchmarks send (a plain
non-streaming chat completion: the same words, finish reason and usage, from ``tenantlm.providers.fake``), on a bare
asyncio protocol with ``httptools``' parser and one socket write per response: ~30 µs per request back to back,
~65-125 µs in that chain (measured 2026-11-29, see docs/benchmarks.md).

Routes:

- ``POST /v1/chat/completions``: non-streaming chat with text messages. ``stream``, ``tools``, ``stop`` and the
  fake's ``fake_fail`` are refused with 400 (use ``tenantlm fake-upstream`` for those);
- ``GET /v1/models``: one model, ``fake``;
- ``GET /fake/stats``: ``{"requests": N}``, every request counted, this one included (as the fake upstream does).

Everything else is 404; a body that is not a JSON object is 400, in OpenAI's error shape. Keep-alive follows the
request (HTTP/1.1 default on, ``connection: close`` honoured). Binds where it is told; benchmarks use 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from http import HTTPStatus
from typing import Any, cast

import httptools
import orjson

from tenantlm.errors import InvalidRequest, MalformedJSON, NotFound, TenantLMError, UnsupportedFeature
from tenantlm.providers.base import JSON, Usage
from tenantlm.providers.fake import count_words, fake_words
from tenantlm.providers.wire import (
    ChunkFactory,
    assistant_message,
    content_text,
    last_user_text,
    max_output_tokens,
    messages_of,
)

UNSUPPORTED = ("stream", "tools", "stop", "fake_fail")


class Upstream:
    """The replies and the request counter, shared by every connection."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.requests = 0

    def chat(self, raw: bytes) -> JSON:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedJSON("request body is not valid JSON") from exc
        if not isinstance(body, dict):
            raise InvalidRequest("request body must be a JSON object")
        for name in UNSUPPORTED:
            if body.get(name):
                raise UnsupportedFeature(f"'{name}' is not served by the lean upstream; use tenantlm fake-upstream",
                                         param=name)
        messages = messages_of(body)
        limit = max_output_tokens(body)
        prompt = sum(count_words(content_text(m.get("content"))) for m in messages)
        seed = body.get("seed")
        produced = self.tokens if limit is None else min(limit, self.tokens)
        words = fake_words(last_user_text(messages), seed if isinstance(seed, int) else 0, produced)
        reason = "length" if limit is not None and limit < self.tokens else "stop"
        return ChunkFactory(str(body.get("model", "fake"))).completion(
            assistant_message(" ".join(words)), reason, Usage(prompt, len(words)))

    def answer(self, method: bytes, path: bytes, raw: bytes) -> tuple[int, bytes]:
        """(status, JSON body) for one request; errors in OpenAI's shape, from the product's error types."""
        self.requests += 1
        try:
            if method == b"POST" and path == b"/v1/chat/completions":
                return 200, orjson.dumps(self.chat(raw))
            if method == b"GET" and path == b"/v1/models":
                return 200, b'{"object":"list","data":[{"id":"fake","object":"model","created":0,"owned_by":"bench"}]}'
            if method == b"GET" and path == b"/fake/stats":
                return 200, orjson.dumps({"requests": self.requests})
            raise NotFound(f"no route {method.decode('latin-1')} {path.decode('latin-1')}")
        except TenantLMError as exc:
            return exc.status, orjson.dumps(exc.body())


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: httptools parses, each complete request is answered with one write."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._reply(400, orjson.dumps(InvalidRequest("malformed HTTP request").body()), keep_alive=False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        path = httptools.parse_url(self.url).path
        status, out = self.upstream.answer(self.parser.get_method(), path, b"".join(self.body))
        self._reply(status, out, keep_alive=self.parser.should_keep_alive())

    def _reply(self, status: int, out: bytes, *, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
            status, HTTPStatus(status).phrase.encode(), len(out), b"" if keep_alive else b"connection: close\r\n", out))
        if not keep_alive:
            transport.close()


async def open_server(host: str, port: int, tokens: int) -> tuple[asyncio.Server, Upstream]:
    """The listening server (port 0: a free one) and its shared state; the caller serves and closes it."""
    upstream = Upstream(tokens)
    server = await asyncio.get_running_loop().create_server(lambda: _Connection(upstream), host, port)
    return server, upstream


async def serve(host: str, port: int, tokens: int) -> None:
    server, _ = await open_server(host, port, tokens)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--tokens", type=int, default=16, help="completion tokens per reply (max_tokens may lower it)")
    args = p.parse_args(argv)
    try:
        import uvloop
        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio's loop also works
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port, args.tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
