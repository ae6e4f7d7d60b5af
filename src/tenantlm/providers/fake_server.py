"""An OpenAI-compatible HTTP server in front of a :class:`FakeProvider`: an upstream for tests, and "the provider
served directly" for benchmarks. A raw ASGI app with orjson: no framework between the socket and the fake.

Routes: ``POST /v1/chat/completions`` (JSON, or SSE when ``stream`` is true), ``POST /v1/embeddings``,
``GET /v1/models``, vLLM's runtime LoRA routes ``POST /v1/load_lora_adapter`` (``{"lora_name", "lora_path"}``; 400
when already loaded) and ``POST /v1/unload_lora_adapter`` (``{"lora_name"}``; 404 when not loaded), and
``GET /fake/stats`` (counters for tests: requests, injected failures, disconnects, requests per model name, the
adapters loaded now and every load and unload in order). A chat request naming an adapter that was loaded once and
is not loaded now gets vLLM's 404.
When ``config.api_key`` is set, requests must carry ``Authorization: Bearer <key>`` (else 401).

Failure injection (tests of retries, breakers, fallbacks) — a field in the request body::

    "fake_fail": {"key": "t1", "times": 2, "status": 503, "retry_after": 0.05}

The first ``times`` requests (default 1) that carry the same ``key`` get HTTP ``status`` (default 503) with an
OpenAI error body, and ``retry-after``/``retry-after-ms`` headers when ``retry_after`` (seconds) is given; later
ones are served normally. With ``"after_chunks": k`` instead of a status, a stream sends ``k`` chunks and then
ends without a finish chunk or ``[DONE]`` (an upstream that died mid-stream). Counts live in the app instance.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn

from tenantlm.errors import AuthenticationFailed, InvalidRequest, MalformedJSON, NotFound, TenantLMError
from tenantlm.providers.base import JSON, ChatChunk, close_stream
from tenantlm.providers.fake import FakeProvider
from tenantlm.providers.wire import embedding_body, embedding_inputs
from tenantlm.settings import ProviderConfig

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


@dataclass(slots=True)
class FakeStats:
    requests: int = 0
    failures: int = 0
    disconnects: int = 0
    failed_keys: dict[str, int] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)  # model name -> chat and embedding requests
    loras: dict[str, str] = field(default_factory=dict)  # loaded now: lora_name -> lora_path
    lora_events: list[list[str]] = field(default_factory=list)  # ["load" | "unload", lora_name], in order

    def public(self) -> dict[str, Any]:
        return {"requests": self.requests, "failures": self.failures, "disconnects": self.disconnects,
                "models": self.models, "loras": self.loras, "lora_events": self.lora_events}


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    retry_after: float | None
    after_chunks: int | None


def _failure_for(body: JSON, stats: FakeStats) -> _Failure | None:
    spec = body.get("fake_fail")
    if not isinstance(spec, dict):
        return None
    key = str(spec.get("key", ""))
    if stats.failed_keys.get(key, 0) >= int(spec.get("times", 1)):
        return None
    stats.failed_keys[key] = stats.failed_keys.get(key, 0) + 1
    stats.failures += 1
    after = spec.get("after_chunks")
    retry_after = spec.get("retry_after")
    return _Failure(status=int(spec.get("status", 503)), after_chunks=None if after is None else int(after),
                    retry_after=None if retry_after is None else float(retry_after))


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _send_json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = orjson.dumps(body)
    length = [(b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": _JSON_HEADERS + length + (headers or [])})
    await send({"type": "http.response.body", "body": payload})


async def _send_error(send: Send, error: TenantLMError) -> None:
    headers = [(k.encode(), v.encode()) for k, v in error.headers.items()]
    await _send_json(send, error.status, error.body(), headers)


async def _send_failure(send: Send, failure: _Failure) -> None:
    headers: list[tuple[bytes, bytes]] = []
    if failure.retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(failure.retry_after))).encode()))
        headers.append((b"retry-after-ms", str(int(failure.retry_after * 1000)).encode()))
    body = {"error": {"message": f"injected failure (HTTP {failure.status})", "type": "fake_failure",
                      "param": None, "code": "fake_failure"}}
    await _send_json(send, failure.status, body, headers)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _FakeApp:
    def __init__(self, config: ProviderConfig) -> None:
        self._provider = FakeProvider(config)
        self._name = config.name
        self._auth = None if config.api_key is None else f"Bearer {config.api_key.get_secret_value()}".encode()
        self.stats = FakeStats()
        self._ever_loaded: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            try:
                await self._route(scope, receive, send)
            except TenantLMError as exc:
                await _send_error(send, exc)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats.requests += 1
        method, path = scope["method"], scope["path"]
        if method == "GET" and path == "/fake/stats":
            await _send_json(send, 200, self.stats.public())
            return
        self._check_auth(scope)
        if method == "GET" and path == "/v1/models":
            await _send_json(send, 200, {"object": "list", "data": [
                {"id": self._name, "object": "model", "created": 0, "owned_by": "tenantlm-fake"}]})
        elif method == "POST" and path == "/v1/chat/completions":
            await self._chat(await self._json(receive), receive, send)
        elif method == "POST" and path == "/v1/embeddings":
            await self._embeddings(await self._json(receive), send)
        elif method == "POST" and path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
            await self._lora(path.removeprefix("/v1/").split("_")[0], await self._json(receive), send)
        else:
            await _send_json(send, 404, {"error": {"message": f"no route {method} {path}", "type":
                                                   "invalid_request_error", "param": None, "code": "not_found"}})

    def _check_auth(self, scope: Scope) -> None:
        if self._auth is None:
            return
        if dict(scope["headers"]).get(b"authorization") != self._auth:
            raise AuthenticationFailed("invalid api key")

    async def _json(self, receive: Receive) -> JSON:
        try:
            body = orjson.loads(await _read_body(receive))
        except orjson.JSONDecodeError as exc:
            raise MalformedJSON("request body is not valid JSON") from exc
        if not isinstance(body, dict):
            raise InvalidRequest("request body must be a JSON object")
        return body

    async def _lora(self, action: str, body: JSON, send: Send) -> None:
        name = str(body.get("lora_name", ""))
        if action == "load" and name in self.stats.loras:
            raise InvalidRequest(f"The lora adapter '{name}' has already been loaded.")
        if action == "unload" and name not in self.stats.loras:
            await _send_json(send, 404, {"error": {"message": f"The lora adapter '{name}' cannot be found.",
                                                   "type": "NotFoundError", "param": None, "code": 404}})
            return
        if action == "load":
            self.stats.loras[name] = str(body.get("lora_path", ""))
            self._ever_loaded.add(name)
        else:
            del self.stats.loras[name]
        self.stats.lora_events.append([action, name])
        await _send_json(send, 200, {"status": "ok"})

    def _count(self, body: JSON) -> None:
        model = str(body.get("model", ""))
        self.stats.models[model] = self.stats.models.get(model, 0) + 1
        if model in self._ever_loaded and model not in self.stats.loras:
            raise NotFound(f"The model `{model}` does not exist.", param="model")

    async def _chat(self, body: JSON, receive: Receive, send: Send) -> None:
        self._count(body)
        failure = _failure_for(body, self.stats)
        if failure is not None and failure.after_chunks is None:
            await _send_failure(send, failure)
        elif body.get("stream"):
            limit = None if failure is None else failure.after_chunks
            await self._stream(self._provider.stream_chat(body), limit, receive, send)
        else:
            result = await self._provider.chat(body)
            await _send_json(send, 200, result.body)

    async def _stream(self, chunks: AsyncIterator[ChatChunk], limit: int | None, receive: Receive,
                      send: Send) -> None:
        first = await anext(chunks)  # errors in the request surface here, before the 200 goes out
        watcher = asyncio.create_task(_wait_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await self._pump(first, chunks, limit, watcher, send)
        finally:
            watcher.cancel()
            await close_stream(chunks)

    async def _pump(self, first: ChatChunk, chunks: AsyncIterator[ChatChunk], limit: int | None,
                    watcher: asyncio.Task[None], send: Send) -> None:
        sent = 0
        chunk: ChatChunk | None = first
        while chunk is not None and (limit is None or sent < limit):
            if watcher.done():
                self.stats.disconnects += 1
                return
            await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(chunk.body) + b"\n\n",
                        "more_body": True})
            sent += 1
            chunk = await anext(chunks, None)
        tail = b"data: [DONE]\n\n" if chunk is None else b""
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _embeddings(self, body: JSON, send: Send) -> None:
        self._count(body)
        failure = _failure_for(body, self.stats)
        if failure is not None:
            await _send_failure(send, failure)
            return
        model = str(body.get("model", self._name))
        result = await self._provider.embed(embedding_inputs(body.get("input")), model=model)
        await _send_json(send, 200, embedding_body(result.vectors, model, result.usage))


def create_fake_app(config: ProviderConfig) -> ASGIApp:
    """The ASGI app serving one :class:`FakeProvider` built from ``config`` (its counters: ``app.stats``)."""
    return _FakeApp(config)


def serve(host: str, port: int, config: ProviderConfig) -> None:
    """Run the fake upstream until interrupted (uvloop and httptools when installed, warnings only)."""
    uvicorn.run(create_fake_app(config), host=host, port=port, log_level="warning", access_log=False,
                loop="auto", http="auto", lifespan="on", ws="none")


class FakeServerThread:
    """The fake upstream on ``127.0.0.1`` and a free port, in a background thread (tests, benchmarks)::

        with FakeServerThread(config) as server:
            server.base_url  # "http://127.0.0.1:PORT/v1"
    """

    def __init__(self, config: ProviderConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = _FakeApp(config)
        self._server = uvicorn.Server(uvicorn.Config(self.app, host=host, port=port, log_level="warning",
                                                     access_log=False, lifespan="on", ws="none"))
        self._thread = threading.Thread(target=self._server.run, name="fake-upstream", daemon=True)
        self.host = host
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def stats(self) -> FakeStats:
        return self.app.stats

    def start(self, timeout_s: float = 10.0) -> FakeServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError("fake upstream did not start")
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._server.force_exit = True  # do not wait for requests still in flight (slow-upstream tests)
        self._thread.join(timeout=10)

    def __enter__(self) -> FakeServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
