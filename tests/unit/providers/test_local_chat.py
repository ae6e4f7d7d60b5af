"""The embedded chat model (SmolLM2-135M-Instruct GGUF on llama.cpp). One model instance shared by the module."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from tenantlm.errors import InvalidRequest, UnsupportedFeature
from tenantlm.providers.base import ChatChunk
from tenantlm.providers.local_chat import LocalChatProvider
from tenantlm.settings import ProviderConfig

pytestmark = [pytest.mark.local_models, pytest.mark.asyncio(loop_scope="module")]

SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer briefly."}


def request(text: str = "Name three colours.", **extra: Any) -> dict[str, Any]:
    return {"model": "smollm2", "messages": [SYSTEM, {"role": "user", "content": text}], **extra}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def llm(require_module: Callable[[str], None]) -> AsyncIterator[LocalChatProvider]:
    require_module("llama_cpp")
    provider = LocalChatProvider(ProviderConfig(name="local", type="local", threads=1, instances=1))
    await provider.warmup()
    yield provider
    await provider.aclose()


def text_of(chunks: list[ChatChunk]) -> str:
    return "".join(c.body["choices"][0]["delta"].get("content") or "" for c in chunks if c.body["choices"])


async def test_chat_returns_text_and_usage(llm: LocalChatProvider, attempts: Any) -> None:
    result = await llm.chat(request(max_tokens=24, temperature=0), on_attempt=attempts)
    choice = result.body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    assert result.body["model"] == "smollm2"
    assert 20 < result.usage.prompt_tokens < 60  # chat template + system + question, by the model's tokenizer
    assert 0 < result.usage.completion_tokens <= 24
    assert attempts.outcomes == ["ok"] and attempts[0].usage == result.usage


async def test_max_tokens_gives_length(llm: LocalChatProvider) -> None:
    result = await llm.chat(request("Write a long story about a dragon.", max_completion_tokens=5))
    assert result.body["choices"][0]["finish_reason"] == "length"
    assert result.usage.completion_tokens == 5


async def test_stream_with_usage(llm: LocalChatProvider) -> None:
    chunks = [c async for c in llm.stream_chat(request(max_tokens=16, temperature=0, seed=1, stream=True,
                                                       stream_options={"include_usage": True}))]
    assert chunks[0].body["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2].body["choices"][0]["finish_reason"] in ("stop", "length")
    usage = chunks[-1].usage
    assert chunks[-1].body["choices"] == [] and usage is not None
    assert 0 < usage.completion_tokens <= 16 and usage.prompt_tokens > 20
    assert len(chunks) - 3 <= usage.completion_tokens  # at most one content chunk per token
    greedy = await llm.chat(request(max_tokens=16, temperature=0, seed=1))
    assert text_of(chunks) == greedy.body["choices"][0]["message"]["content"]


async def test_stop_sequence_cuts_the_reply(llm: LocalChatProvider) -> None:
    full = (await llm.chat(request(max_tokens=20, temperature=0, seed=1))).body["choices"][0]["message"]["content"]
    stop = full.strip()[4:8]
    assert len(stop) == 4
    cut = await llm.chat(request(max_tokens=20, temperature=0, seed=1, stop=[stop]))
    text = cut.body["choices"][0]["message"]["content"]
    assert stop not in text and full.startswith(text)
    assert cut.body["choices"][0]["finish_reason"] == "stop"


async def test_seed_makes_sampling_repeatable(llm: LocalChatProvider) -> None:
    texts = [(await llm.chat(request("Say something.", temperature=0.9, seed=1234, max_tokens=12)))
             .body["choices"][0]["message"]["content"] for _ in range(2)]
    assert texts[0] == texts[1]


async def test_concurrent_requests_all_succeed(llm: LocalChatProvider) -> None:
    results = await asyncio.gather(*(llm.chat(request(f"Count to {n}.", max_tokens=8)) for n in range(4)))
    assert all(0 < r.usage.completion_tokens <= 8 for r in results)
    assert llm.idle_instances == 1


async def test_cancelled_stream_releases_the_instance(llm: LocalChatProvider, attempts: Any) -> None:
    got_text = asyncio.Event()

    async def consume() -> None:
        async for chunk in llm.stream_chat(request("Write a long essay about the ocean.", max_tokens=1500),
                                           on_attempt=attempts):
            if chunk.body["choices"] and chunk.body["choices"][0]["delta"].get("content"):
                got_text.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_text.wait(), 30)
    assert llm.idle_instances == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):  # the worker stops at its next token (~20 ms)
        if llm.idle_instances == 1:
            break
        await asyncio.sleep(0.02)
    assert llm.idle_instances == 1
    assert attempts.outcomes == ["cancelled"] and 0 < attempts[0].usage.completion_tokens < 200
    after = await llm.chat(request(max_tokens=4))  # the instance serves the next request
    assert after.usage.completion_tokens > 0


async def test_tools_are_refused(llm: LocalChatProvider) -> None:
    with pytest.raises(UnsupportedFeature) as info:
        await llm.chat(request(tools=[{"type": "function", "function": {"name": "f"}}]))
    assert info.value.param == "tools"


async def test_context_overflow_is_a_clear_invalid_request(llm: LocalChatProvider) -> None:
    with pytest.raises(InvalidRequest) as info:
        await llm.chat(request("word " * 3000))
    assert info.value.code == "context_length_exceeded" and "2048" in info.value.message
    with pytest.raises(InvalidRequest) as info:
        await llm.chat(request(max_tokens=4000))
    assert info.value.code == "context_length_exceeded"
    assert llm.idle_instances == 1
