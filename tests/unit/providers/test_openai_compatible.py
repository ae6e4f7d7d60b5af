"""The OpenAI-compatible adapter against the real fake upstream served by uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr, ValidationError

from tenantlm.errors import (
    InvalidRequest,
    NotFound,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tenantlm.providers.base import ChatChunk, close_stream
from tenantlm.providers.fake import fake_vector, fake_words
from tenantlm.providers.fake_server import FakeServerThread
from tenantlm.providers.openai_compatible import OpenAICompatibleProvider, backoff_delay
from tenantlm.settings import ProviderConfig
from tenantlm.tokens import estimate_prompt_tokens


def request(text: str = "hello there friend", **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **extra}


def failing(times: int, status: int = 503, **spec: Any) -> dict[str, Any]:
    return {"fake_fail": {"key": uuid.uuid4().hex, "times": times, "status": status, **spec}}


@pytest.fixture(params=["native", "httpx"])
async def make_provider(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., OpenAICompatibleProvider]]:
    """Providers over each HTTP client: every behaviour must hold on each."""
    made: list[OpenAICompatibleProvider] = []

    def make(base_url: str, **fields: Any) -> OpenAICompatibleProvider:
        fields = {"max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "http_pool": request.param,
                  **fields}
        made.append(OpenAICompatibleProvider(ProviderConfig(name="up", type="openai_compatible",
                                                            base_url=base_url, **fields)))
        return made[-1]

    yield make
    for provider in made:
        await provider.aclose()


async def collect(stream: AsyncIterator[ChatChunk]) -> list[ChatChunk]:
    return [chunk async for chunk in stream]


def text_of(chunks: list[ChatChunk]) -> str:
    return "".join(c.body["choices"][0]["delta"].get("content") or "" for c in chunks if c.body["choices"])


async def test_chat_passes_the_upstream_body_through(upstream: FakeServerThread, make_provider: Any,
                                                     attempts: Any) -> None:
    result = await make_provider(upstream.base_url).chat(request(), on_attempt=attempts)
    assert result.body["choices"][0]["message"]["content"] == " ".join(fake_words("hello there friend", 0, 8))
    assert result.usage.prompt_tokens == 3 and result.usage.completion_tokens == 8
    assert attempts.outcomes == ["ok"] and attempts.statuses == [200]
    assert attempts[0].usage == result.usage and attempts[0].model == "m" and not attempts[0].usage_estimated


async def test_retries_503_honouring_retry_after(upstream: FakeServerThread, make_provider: Any,
                                                 attempts: Any) -> None:
    # backoff alone would wait 5 s; the upstream's retry-after-ms of 50 ms is what is honoured
    provider = make_provider(upstream.base_url, backoff_base_s=5, backoff_max_s=5)
    started = time.monotonic()
    result = await provider.chat(request(**failing(2, retry_after=0.05)), on_attempt=attempts)
    elapsed = time.monotonic() - started
    assert result.body["choices"][0]["finish_reason"] == "stop"
    assert attempts.statuses == [503, 503, 200] and attempts.outcomes == ["error", "error", "ok"]
    assert [a.number for a in attempts] == [1, 2, 3]
    assert 0.1 <= elapsed < 2


async def test_retry_after_is_capped_by_backoff_max(upstream: FakeServerThread, make_provider: Any) -> None:
    started = time.monotonic()
    await make_provider(upstream.base_url, backoff_max_s=0.05).chat(request(**failing(1, 429, retry_after=30)))
    assert time.monotonic() - started < 2


async def test_gives_up_after_max_retries(upstream: FakeServerThread, make_provider: Any, attempts: Any) -> None:
    with pytest.raises(UpstreamUnavailable) as info:
        await make_provider(upstream.base_url, max_retries=2).chat(request(**failing(10)), on_attempt=attempts)
    assert "HTTP 503" in info.value.message
    assert attempts.statuses == [503, 503, 503]


async def test_exhausted_429_is_rate_limited_with_retry_after(upstream: FakeServerThread,
                                                             make_provider: Any) -> None:
    with pytest.raises(RateLimited) as info:
        await make_provider(upstream.base_url, max_retries=0).chat(request(**failing(1, 429, retry_after=2)))
    assert info.value.retry_after == 2.0 and info.value.status == 429


async def test_500_is_an_upstream_error(upstream: FakeServerThread, make_provider: Any) -> None:
    with pytest.raises(UpstreamError) as info:
        await make_provider(upstream.base_url, max_retries=0).chat(request(**failing(1, 500)))
    assert type(info.value) is UpstreamError and info.value.status == 502


async def test_400_carries_the_upstream_message_and_is_not_retried(upstream: FakeServerThread,
                                                                   make_provider: Any, attempts: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        await make_provider(upstream.base_url).chat({"model": "m", "messages": []}, on_attempt=attempts)
    assert info.value.message == "'messages' must be a non-empty array"
    assert info.value.param == "messages"
    assert attempts.statuses == [400]


async def test_404_maps_to_not_found(upstream: FakeServerThread, make_provider: Any) -> None:
    provider = make_provider(upstream.base_url.removesuffix("/v1") + "/nowhere")
    with pytest.raises(NotFound) as info:
        await provider.chat(request())
    assert "no route" in info.value.message


async def test_bearer_key_is_sent_and_upstream_401_does_not_blame_the_tenant(make_upstream: Any,
                                                                            make_provider: Any) -> None:
    server = make_upstream(api_key=SecretStr("sk-upstream-secret"))
    good = make_provider(server.base_url, api_key=SecretStr("sk-upstream-secret"))
    assert (await good.chat(request())).usage.completion_tokens > 0
    bad = make_provider(server.base_url, api_key=SecretStr("sk-wrong-key-123"))
    with pytest.raises(UpstreamError) as info:
        await bad.chat(request())
    assert info.value.status == 502 and "credentials" in info.value.message
    assert "sk-" not in info.value.message and "sk-" not in str(info.value.body())


async def test_connection_refused_is_unavailable_after_retries(closed_port_url: str, make_provider: Any,
                                                               attempts: Any) -> None:
    with pytest.raises(UpstreamUnavailable):
        await make_provider(closed_port_url, max_retries=1).chat(request(), on_attempt=attempts)
    assert attempts.statuses == [None, None] and attempts.outcomes == ["error", "error"]


COMPLETION = (b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":'
              b'{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
              b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}')


@pytest.fixture
async def one_answer_per_connection() -> AsyncIterator[tuple[str, list[bool]]]:
    """A raw upstream that answers the first request on each connection, then reads the next one in full and closes
    the connection without a word. Yields its base URL and one entry per request read (answered or not)."""
    receipts: list[bool] = []

    async def read_one(reader: asyncio.StreamReader) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_one(reader)
            receipts.append(True)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(COMPLETION), COMPLETION))
            await writer.drain()
            await read_one(reader)
            receipts.append(False)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", receipts
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("max_retries", [0, 2])
async def test_every_request_the_upstream_read_is_one_reported_attempt(
        one_answer_per_connection: tuple[str, list[bool]], make_provider: Any, attempts: Any,
        max_retries: int) -> None:
    url, receipts = one_answer_per_connection
    provider = make_provider(url, max_retries=max_retries, breaker_failures=100)
    served = 0
    for _ in range(6):
        try:
            await provider.chat(request(), on_attempt=attempts)
            served += 1
        except UpstreamUnavailable:
            pass
    assert len(receipts) == len(attempts)  # nothing sent twice below the retry policy, nothing unreported
    assert attempts.outcomes.count("error") == receipts.count(False) >= 1
    assert served == (6 if max_retries else receipts.count(True))


async def test_slow_upstream_times_out(make_upstream: Any, make_provider: Any) -> None:
    server = make_upstream(latency_ms=2000)
    provider = make_provider(server.base_url, timeout_s=0.2, max_retries=0)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await provider.chat(request())
    assert time.monotonic() - started < 1.5


async def test_breaker_opens_then_recovers_through_one_probe(upstream: FakeServerThread, make_provider: Any,
                                                            attempts: Any) -> None:
    provider = make_provider(upstream.base_url, max_retries=0, breaker_failures=2, breaker_reset_s=0.3)
    broken = failing(3, 500)
    for _ in range(2):
        with pytest.raises(UpstreamError):
            await provider.chat(request(**broken))
    assert provider.breaker.state.value == "open"
    served = upstream.stats.requests
    with pytest.raises(UpstreamUnavailable) as info:
        await provider.chat(request(), on_attempt=attempts)
    assert "circuit open" in info.value.message
    assert upstream.stats.requests == served and attempts == []  # refused without calling the upstream
    await asyncio.sleep(0.35)
    assert provider.breaker.state.value == "half_open"
    with pytest.raises(UpstreamError):
        await provider.chat(request(**broken))  # the probe fails: open again
    assert provider.breaker.state.value == "open"
    await asyncio.sleep(0.35)
    await provider.chat(request(**broken))  # third request of that key is served: the probe succeeds
    assert provider.breaker.state.value == "closed"


async def test_stream_is_passed_through_incrementally(make_upstream: Any, make_provider: Any,
                                                      attempts: Any) -> None:
    server = make_upstream(tokens=5, token_latency_ms=150)
    provider = make_provider(server.base_url)
    started = time.monotonic()
    arrivals: list[float] = []
    chunks: list[ChatChunk] = []
    async for chunk in provider.stream_chat(request(stream=True), on_attempt=attempts):
        arrivals.append(time.monotonic() - started)
        chunks.append(chunk)
    content_times = [t for t, c in zip(arrivals, chunks, strict=True)
                     if c.body["choices"] and c.body["choices"][0]["delta"].get("content")]
    assert len(content_times) == 5
    assert content_times[0] < 0.5 and content_times[-1] - content_times[0] >= 0.5  # not buffered
    assert text_of(chunks) == " ".join(fake_words("hello there friend", 0, 5))
    assert all("usage" not in c.body for c in chunks)  # the client did not ask for usage...
    assert attempts.outcomes == ["ok"] and attempts[0].usage.completion_tokens == 5  # ...the ledger still has it
    assert not attempts[0].usage_estimated


async def test_stream_usage_chunk_when_asked(upstream: FakeServerThread, make_provider: Any) -> None:
    chunks = await collect(make_provider(upstream.base_url).stream_chat(
        request(stream=True, stream_options={"include_usage": True})))
    assert chunks[-1].body["choices"] == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8 and chunks[-1].body["usage"]["total_tokens"] == 11
    assert chunks[-2].body["choices"][0]["finish_reason"] == "stop"


async def test_stream_retries_before_the_first_byte(upstream: FakeServerThread, make_provider: Any,
                                                    attempts: Any) -> None:
    chunks = await collect(make_provider(upstream.base_url).stream_chat(
        request(stream=True, **failing(1, 502)), on_attempt=attempts))
    assert attempts.statuses == [502, 200] and attempts.outcomes == ["error", "ok"]
    assert chunks[-1].body["choices"][0]["finish_reason"] == "stop"


async def test_stream_cut_mid_way_is_an_error_and_not_retried(upstream: FakeServerThread, make_provider: Any,
                                                              attempts: Any) -> None:
    seen: list[ChatChunk] = []
    with pytest.raises(UpstreamError) as info:
        async for chunk in make_provider(upstream.base_url).stream_chat(
                request(stream=True, **failing(5, after_chunks=3)), on_attempt=attempts):
            seen.append(chunk)
    assert len(seen) == 3 and "ended before" in info.value.message
    assert attempts.outcomes == ["error"]
    assert attempts[0].usage_estimated and attempts[0].usage.completion_tokens == 2


async def test_stream_read_timeout_after_first_chunk_is_not_retried(make_upstream: Any, make_provider: Any,
                                                                    attempts: Any) -> None:
    server = make_upstream(tokens=3, token_latency_ms=1500)
    provider = make_provider(server.base_url, timeout_s=0.3, max_retries=2)
    seen = 0
    with pytest.raises(UpstreamTimeout):
        async for _ in provider.stream_chat(request(stream=True), on_attempt=attempts):
            seen += 1
    assert seen >= 1 and attempts.outcomes == ["error"]


async def test_closing_a_stream_early_stops_the_upstream(make_upstream: Any, make_provider: Any,
                                                         attempts: Any) -> None:
    server = make_upstream(tokens=50, token_latency_ms=50)
    stream = make_provider(server.base_url).stream_chat(request(stream=True), on_attempt=attempts)
    async for chunk in stream:
        if chunk.body["choices"][0]["delta"].get("content"):
            break
    await close_stream(stream)
    assert attempts.outcomes == ["cancelled"] and attempts[0].usage_estimated
    assert attempts[0].usage.completion_tokens == 1 and attempts[0].usage.prompt_tokens > 0
    for _ in range(100):
        if server.stats.disconnects:
            break
        await asyncio.sleep(0.02)
    assert server.stats.disconnects == 1


async def test_tools_pass_through(upstream: FakeServerThread, make_provider: Any) -> None:
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    provider = make_provider(upstream.base_url)
    result = await provider.chat(request(tools=tools, tool_choice="auto"))
    assert result.body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_time"
    assert result.body["choices"][0]["finish_reason"] == "tool_calls"
    chunks = await collect(provider.stream_chat(request(stream=True, tools=tools)))
    assert chunks[1].body["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_time"
    assert chunks[-1].body["choices"][0]["finish_reason"] == "tool_calls"


async def test_embeddings_pass_through(upstream: FakeServerThread, make_provider: Any, attempts: Any) -> None:
    result = await make_provider(upstream.base_url).embed(["alpha beta", "gamma"], model="emb",
                                                          on_attempt=attempts)
    assert result.vectors == [fake_vector("alpha beta", 8), fake_vector("gamma", 8)]
    assert result.dimensions == 8 and result.usage.prompt_tokens == 3
    assert attempts.outcomes == ["ok"] and attempts[0].model == "emb"


async def test_malformed_upstream_json_is_an_upstream_error(make_provider: Any) -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(200, content=b"<html>oops</html>"))
    provider = OpenAICompatibleProvider(
        ProviderConfig(name="up", type="openai_compatible", base_url="http://upstream.invalid/v1"),
        transport=transport)
    try:
        with pytest.raises(UpstreamError):
            await provider.chat(request())
    finally:
        await provider.aclose()


async def test_an_answer_without_usage_is_metered_from_the_prompt_estimate(attempts: Any) -> None:
    body = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant",
            "content": "hi"}, "finish_reason": "stop"}]}  # no "usage": some upstreams leave it out
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=body))
    provider = OpenAICompatibleProvider(
        ProviderConfig(name="up", type="openai_compatible", base_url="http://upstream.invalid/v1"),
        transport=transport)
    try:
        await provider.chat(request("sixteen chars ab"), on_attempt=attempts)
        await provider.chat(request("sixteen chars ab"), on_attempt=attempts, prompt_estimate=37)
    finally:
        await provider.aclose()
    assert attempts.outcomes == ["ok", "ok"] and attempts[0].usage_estimated and attempts[1].usage_estimated
    # called alone, the provider uses the gateway's estimator; through the gateway, the gateway's own count
    assert attempts[0].usage.prompt_tokens == estimate_prompt_tokens(request("sixteen chars ab")["messages"])
    assert attempts[1].usage.prompt_tokens == 37 and attempts[1].usage.completion_tokens == 0


@pytest.mark.parametrize("pool", ["native", "httpx"])
def test_the_http_pool_is_native_or_httpx(pool: str) -> None:
    assert ProviderConfig(name="up", type="openai_compatible", base_url="http://u/v1", http_pool=pool).http_pool == pool
    assert ProviderConfig(name="up", type="openai_compatible", base_url="http://u/v1").http_pool == "native"


def test_a_config_that_names_another_http_pool_fails_at_start_up_naming_the_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="'native' or 'httpx'"):
        ProviderConfig(name="up", type="openai_compatible", base_url="http://u/v1", http_pool="aiohttp")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"providers": [{"name": "up", "type": "openai_compatible",
                                                     "base_url": "http://127.0.0.1:9/v1", "http_pool": "aiohttp"}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTLM_")}
    env["TENANTLM_ADMIN_KEY"] = "test-platform-admin-key-0123456789"
    run = subprocess.run([sys.executable, "-m", "tenantlm.cli", "serve", "--port", "0", "--data-dir",
                          str(tmp_path / "data"), "--config", str(config)],
                         env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "bad configuration" in run.stderr and "http_pool" in run.stderr
    assert "Input should be 'native' or 'httpx'" in run.stderr and "Traceback" not in run.stderr


def test_backoff_grows_with_jitter_and_respects_hints() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_delay(n, 0.5, 4.0, None, rng) for n in (1, 2, 3, 4, 5)]
    assert 0.25 <= delays[0] <= 0.5 and 0.5 <= delays[1] <= 1.0 and 1.0 <= delays[2] <= 2.0
    assert all(d <= 4.0 for d in delays[3:])
    assert backoff_delay(1, 0.5, 4.0, 2.5, rng) == 2.5
    assert backoff_delay(1, 0.5, 4.0, 60, rng) == 4.0


async def test_cancelled_call_still_reports_its_attempt(make_upstream: Any, make_provider: Any,
                                                        attempts: Any) -> None:
    server = make_upstream(latency_ms=2000)
    task = asyncio.create_task(make_provider(server.base_url).chat(request("one two three four"),
                                                                   on_attempt=attempts))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert attempts.outcomes == ["cancelled"] and attempts[0].usage_estimated
    # the prompt as the gateway's estimator counts it (the upstream never answered with its own count)
    assert attempts[0].usage.prompt_tokens == estimate_prompt_tokens(request("one two three four")["messages"])
