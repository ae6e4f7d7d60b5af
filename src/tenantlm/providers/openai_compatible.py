"""Any OpenAI-compatible upstream (vLLM, Ollama, llama.cpp server, OpenAI itself) behind the provider port.

One pool of keep-alive connections per provider: the native HTTP/1.1 client (``providers/h1.py``) by default, or
an ``httpx.AsyncClient`` with ``http_pool: httpx`` (proxies, HTTP/2) or over a given transport (tests). Each call
makes up to ``1 + max_retries`` attempts: 408/429/5xx, connection errors and timeouts are retried with exponential
backoff and jitter, or after the upstream's ``retry-after-ms``/``retry-after`` (capped at ``backoff_max_s``). A
stream is retried only until its response headers arrive; after that its chunks are passed on one by one as they
come. A :class:`CircuitBreaker` per provider refuses calls at once while the upstream is known to be down. Every
attempt is reported to ``on_attempt`` (usage ledger: one event per attempt, including streams cut short, whose
usage is then estimated).
Retries happen here and nowhere below: no HTTP client under this provider resends a request on its own (the native
one raises a connection error instead), so every request an upstream may have read is one reported attempt.
Streams always ask the upstream for usage; the usage chunk is passed on only when the client asked for it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx
import orjson

from tenantlm.errors import TenantLMError, UpstreamError
from tenantlm.providers.base import (
    JSON,
    Attempt,
    AttemptHook,
    AttemptOutcome,
    ChatChunk,
    ChatCompletion,
    EmbeddingResult,
    ProviderCapabilities,
    Usage,
    report_attempt,
)
from tenantlm.providers.breaker import CircuitBreaker
from tenantlm.providers.h1 import H1Pool
from tenantlm.providers.http_errors import (
    error_from_response,
    is_health_failure,
    is_retryable_status,
    retry_after_s,
    transport_error,
)
from tenantlm.providers.sse import sse_data
from tenantlm.providers.wire import include_usage
from tenantlm.settings import ProviderConfig
from tenantlm.tokens import estimate_prompt_tokens

T = TypeVar("T")


class _Response(Protocol):
    """What the provider needs of a response: ``httpx.Response`` and the native client's ``H1Response`` both fit."""

    @property
    def status_code(self) -> int: ...
    @property
    def is_success(self) -> bool: ...
    @property
    def headers(self) -> httpx.Headers: ...
    @property
    def content(self) -> bytes: ...
    def aiter_lines(self) -> AsyncIterator[str]: ...
    async def aclose(self) -> None: ...


class _AttemptFailed(Exception):
    def __init__(self, error: TenantLMError, status: int | None, retryable: bool, retry_after: float | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(slots=True)
class _Call:
    """One provider call: what to send, how many attempts so far, where to report them."""

    path: str
    payload: bytes
    model: str
    hook: AttemptHook | None
    prompt_estimate: int | None = None  # the gateway's; None: made from ``prompt`` when first needed
    number: int = 0
    started: float = 0.0
    prompt: object = None  # chat messages or embedding inputs

    def estimate(self) -> int:
        """The prompt's tokens for when the upstream reports no usage (most do: then this is never needed)."""
        if self.prompt_estimate is None:
            self.prompt_estimate = estimate_prompt_tokens(self.prompt)
        return self.prompt_estimate


def parse_usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def backoff_delay(attempt: int, base_s: float, max_s: float, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): the upstream's hint, or base * 2^(n-1) with
    jitter (between half and all of it); never more than ``max_s``."""
    if retry_after is not None:
        return min(retry_after, max_s)
    ceiling = min(max_s, base_s * 2.0 ** (attempt - 1))
    return ceiling * (0.5 + 0.5 * rng.random())


class _StreamRelay:
    """Turns an upstream SSE body into :class:`ChatChunk` objects and keeps count for the usage ledger."""

    def __init__(self, wants_usage: bool, prompt_estimate: int) -> None:
        self.wants_usage = wants_usage
        self.prompt_estimate = prompt_estimate
        self.reported: Usage | None = None
        self.deltas = 0
        self.finished = False
        self.done = False
        self.last: JSON = {}

    @property
    def usage(self) -> Usage:
        return self.reported or Usage(self.prompt_estimate, self.deltas)

    async def relay(self, lines: AsyncIterator[str]) -> AsyncIterator[ChatChunk]:
        usage_sent = False
        async for data in sse_data(lines):
            if data.strip() == "[DONE]":
                self.done = True
                break
            chunk = self._chunk(data)
            if chunk is not None:
                usage_sent = usage_sent or chunk.usage is not None
                yield chunk
        if not (self.done or self.finished):
            raise UpstreamError("upstream stream ended before the reply was complete")
        if self.wants_usage and not usage_sent:
            yield self._usage_chunk()

    def _chunk(self, data: str) -> ChatChunk | None:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("upstream sent a stream event that is not JSON") from exc
        if not isinstance(body, dict):
            raise UpstreamError("upstream sent a stream event that is not an object")
        choices = body.get("choices")
        if body.get("error") is not None and not choices:
            raise UpstreamError(f"upstream reported an error mid-stream: {str(body['error'])[:300]}")
        usage = parse_usage(body.get("usage"))
        self.reported = usage or self.reported
        self.last = body
        if not choices:
            return ChatChunk(body, usage=usage) if usage is not None and self.wants_usage else None
        self._count(choices)
        if not self.wants_usage:
            body.pop("usage", None)
        return ChatChunk(body)

    def _count(self, choices: list[Any]) -> None:
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls")):
                self.deltas += 1
            if choice.get("finish_reason"):
                self.finished = True

    def _usage_chunk(self) -> ChatChunk:
        usage = self.usage
        body: JSON = {key: self.last[key] for key in ("id", "object", "created", "model") if key in self.last}
        body.update({"choices": [], "usage": usage.as_dict()})
        return ChatChunk(body, usage=usage)


class OpenAICompatibleProvider:
    def __init__(
        self,
        config: ProviderConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert config.base_url is not None  # guaranteed by ProviderConfig's validator
        self.name = config.name
        self.capabilities = ProviderCapabilities(chat=True, embeddings=True, tools=True)
        self.breaker = CircuitBreaker(config.name, failure_threshold=config.breaker_failures,
                                      reset_s=config.breaker_reset_s, clock=clock)
        self._config = config
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        # The native client (providers/h1.py) unless a transport is given (tests) or http_pool is httpx.
        self._pool: H1Pool | None = None
        if transport is None and config.http_pool == "native":
            self._pool = H1Pool(config.base_url, headers=_headers(config).items(),
                                max_connections=config.max_connections, connect_timeout_s=config.connect_timeout_s,
                                read_timeout_s=config.timeout_s)
        self._client = httpx.AsyncClient(
            base_url=config.base_url,
            headers=_headers(config),
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(max_connections=config.max_connections,
                                max_keepalive_connections=config.max_connections),
            transport=transport,
        )

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        await self._client.aclose()

    async def chat(self, request: JSON, *, on_attempt: AttemptHook | None = None,
                   prompt_estimate: int | None = None) -> ChatCompletion:
        payload = {k: v for k, v in request.items() if k != "stream_options"}
        payload["stream"] = False
        call = _Call("/chat/completions", orjson.dumps(payload), str(request.get("model", "")), on_attempt,
                     prompt_estimate, prompt=request.get("messages"))
        return await self._json_call(call, _completion_from)

    async def embed(
        self, inputs: Sequence[str], *, model: str, on_attempt: AttemptHook | None = None,
        prompt_estimate: int | None = None,
    ) -> EmbeddingResult:
        payload = {"model": model, "input": list(inputs), "encoding_format": "float"}
        call = _Call("/embeddings", orjson.dumps(payload), model, on_attempt, prompt_estimate, prompt=list(inputs))
        return await self._json_call(call, _embeddings_from)

    async def stream_chat(self, request: JSON, *, on_attempt: AttemptHook | None = None,
                          prompt_estimate: int | None = None) -> AsyncIterator[ChatChunk]:
        options: JSON = request.get("stream_options") or {}
        if not isinstance(options, dict):
            options = {}
        payload = {**request, "stream": True, "stream_options": {**options, "include_usage": True}}
        call = _Call("/chat/completions", orjson.dumps(payload), str(request.get("model", "")), on_attempt,
                     prompt_estimate, prompt=request.get("messages"))
        response = await self._send(call, stream=True)
        relay = _StreamRelay(include_usage(request), call.estimate())
        outcome: AttemptOutcome = "cancelled"
        try:
            async for chunk in relay.relay(response.aiter_lines()):
                yield chunk
            outcome = "ok"
        except httpx.TransportError as exc:
            outcome = "error"
            self.breaker.record_failure()
            raise transport_error(self.name, exc) from exc
        except TenantLMError:
            outcome = "error"
            raise
        finally:
            await response.aclose()
            self._report(call, outcome, 200, relay.usage, estimated=relay.reported is None)

    async def _json_call(self, call: _Call, parse: Callable[[JSON], tuple[T, Usage | None]]) -> T:
        response = await self._send(call, stream=False)
        try:
            body = orjson.loads(response.content)
            result, usage = parse(body)
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            self._report(call, "error", response.status_code, None, error_code="upstream_error")
            raise UpstreamError(f"upstream {self.name!r} sent a malformed response") from exc
        self._report(call, "ok", response.status_code, usage or Usage(call.estimate()),
                     estimated=usage is None)
        return result

    async def _send(self, call: _Call, *, stream: bool) -> _Response:
        """Attempts until one gets a 2xx (for a stream: its headers), reporting each failed one."""
        while True:
            call.number += 1
            self.breaker.before_call()
            call.started = self._clock()
            try:
                return await self._attempt(call, stream)
            except asyncio.CancelledError:  # the caller left while the upstream may already be working
                self._report(call, "cancelled", None, Usage(call.estimate()), estimated=True)
                raise
            except _AttemptFailed as failed:
                self._report(call, "error", failed.status, None, error_code=failed.error.code)
                if not failed.retryable or call.number > self._config.max_retries:
                    raise failed.error from None
                cfg = self._config
                await self._sleep(backoff_delay(call.number, cfg.backoff_base_s, cfg.backoff_max_s,
                                                failed.retry_after, self._rng))

    async def _attempt(self, call: _Call, stream: bool) -> _Response:
        try:
            response = await self._exchange(call, stream)
        except httpx.TransportError as exc:
            self.breaker.record_failure()
            raise _AttemptFailed(transport_error(self.name, exc), None, True, None) from exc
        except asyncio.CancelledError:
            self.breaker.record_cancelled()
            raise
        status = response.status_code
        if response.is_success:
            self.breaker.record_success()
            return response
        if is_health_failure(status):
            self.breaker.record_failure()
        else:
            self.breaker.record_neutral()
        error = error_from_response(self.name, status, response.headers, response.content)
        raise _AttemptFailed(error, status, is_retryable_status(status), retry_after_s(response.headers))

    async def _exchange(self, call: _Call, stream: bool) -> _Response:
        if self._pool is not None:
            reply = await self._pool.request("POST", call.path, call.payload, stream=stream)
            if stream and not reply.is_success:
                try:
                    await reply.aread()  # the error body, for the error message
                finally:
                    await reply.aclose()
            return reply
        request = self._client.build_request("POST", call.path, content=call.payload)
        response = await self._client.send(request, stream=True)
        if stream and response.is_success:
            return response
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def _report(self, call: _Call, outcome: AttemptOutcome, status: int | None, usage: Usage | None, *,
                estimated: bool = False, error_code: str | None = None) -> None:
        report_attempt(call.hook, Attempt(
            provider=self.name, model=call.model, number=call.number, outcome=outcome, status=status,
            usage=usage, usage_estimated=estimated, error_code=error_code,
            duration_s=self._clock() - call.started,
        ))


def _headers(config: ProviderConfig) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if config.api_key is not None:
        headers["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
    return headers


def _completion_from(body: JSON) -> tuple[ChatCompletion, Usage | None]:
    if not isinstance(body.get("choices"), list):
        raise ValueError("no choices")
    usage = parse_usage(body.get("usage"))
    return ChatCompletion(body=body, usage=usage or Usage()), usage


def _embeddings_from(body: JSON) -> tuple[EmbeddingResult, Usage | None]:
    data = sorted(body["data"], key=lambda item: item["index"])
    vectors = [list(item["embedding"]) for item in data]
    reported = body.get("usage")
    usage = Usage(prompt_tokens=int(reported["prompt_tokens"])) if isinstance(reported, dict) else None
    return EmbeddingResult(vectors=vectors, usage=usage or Usage(),
                           dimensions=len(vectors[0]) if vectors else 0), usage
