from __future__ import annotations

import math
import time
from typing import Any

import pytest

from tenantlm.errors import InvalidRequest
from tenantlm.providers.base import ChatChunk, ChatProvider, EmbeddingProvider, close_stream
from tenantlm.providers.fake import WORDS, FakeProvider, fake_vector, fake_words
from tenantlm.settings import ProviderConfig


def provider(**fields: Any) -> FakeProvider:
    return FakeProvider(ProviderConfig(name="fake", type="fake", **fields))


def request(text: str = "tell me a story", **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "system", "content": "be brief"},
                                                {"role": "user", "content": text}], **extra}


def text_of(body: dict[str, Any]) -> str:
    return str(body["choices"][0]["message"]["content"])


async def collect(chunks: Any) -> list[ChatChunk]:
    return [chunk async for chunk in chunks]


def streamed_text(chunks: list[ChatChunk]) -> str:
    return "".join(c.body["choices"][0]["delta"].get("content") or "" for c in chunks if c.body["choices"])


def test_implements_both_ports() -> None:
    fake = provider()
    assert isinstance(fake, ChatProvider)
    assert isinstance(fake, EmbeddingProvider)


async def test_reply_is_deterministic_and_counts_words_as_tokens(attempts: Any) -> None:
    fake = provider(tokens=12)
    first = await fake.chat(request(), on_attempt=attempts)
    second = await fake.chat(request())
    assert text_of(first.body) == text_of(second.body)
    words = text_of(first.body).split()
    assert len(words) == 12 and set(words) <= set(WORDS)
    assert first.usage.prompt_tokens == 2 + 4  # "be brief" + "tell me a story"
    assert first.usage.completion_tokens == 12
    assert first.body["usage"] == {"prompt_tokens": 6, "completion_tokens": 12, "total_tokens": 18}
    assert first.body["object"] == "chat.completion" and first.body["model"] == "fake-model"
    assert first.body["choices"][0]["finish_reason"] == "stop"
    assert attempts.outcomes == ["ok"] and attempts[0].usage == first.usage


async def test_text_depends_on_last_user_message_and_seed() -> None:
    fake = provider(tokens=16)
    base = text_of((await fake.chat(request("one"))).body)
    assert text_of((await fake.chat(request("two"))).body) != base
    assert text_of((await fake.chat(request("one", seed=7))).body) != base
    assert fake_words("one", 0, 16) == base.split()


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_cuts_with_length(field: str) -> None:
    limit: dict[str, Any] = {field: 3}
    result = await provider(tokens=10).chat(request(**limit))
    assert len(text_of(result.body).split()) == 3
    assert result.body["choices"][0]["finish_reason"] == "length"
    assert result.usage.completion_tokens == 3


async def test_max_tokens_above_reply_length_is_a_normal_stop() -> None:
    result = await provider(tokens=4).chat(request(max_tokens=50))
    assert result.body["choices"][0]["finish_reason"] == "stop"
    assert result.usage.completion_tokens == 4


async def test_max_completion_tokens_wins_over_max_tokens() -> None:
    result = await provider(tokens=10).chat(request(max_tokens=8, max_completion_tokens=2))
    assert result.usage.completion_tokens == 2


async def test_stop_sequence_cuts_the_text() -> None:
    fake = provider(tokens=10)
    full = text_of((await fake.chat(request())).body).split()
    result = await fake.chat(request(stop=[full[3]]))
    assert text_of(result.body) == " ".join(full[:3]) + " "
    assert result.body["choices"][0]["finish_reason"] == "stop"
    assert result.usage.completion_tokens == 4


async def test_tools_reply_with_one_call_to_the_first_function() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}},
             {"type": "function", "function": {"name": "other"}}]
    result = await provider().chat(request(tools=tools))
    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": "{}"}


async def test_stream_shape_and_text_match_the_non_streamed_reply() -> None:
    fake = provider(tokens=6)
    chunks = await collect(fake.stream_chat(request(stream=True)))
    assert chunks[0].body["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c.body["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c.body["id"] for c in chunks}) == 1
    content = [c for c in chunks if c.body["choices"] and c.body["choices"][0]["delta"].get("content")]
    assert len(content) == 6  # one chunk per token
    assert chunks[-1].body["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c.body for c in chunks)
    assert streamed_text(chunks) == text_of((await fake.chat(request())).body)


async def test_stream_usage_chunk_when_asked() -> None:
    chunks = await collect(provider(tokens=5).stream_chat(
        request(stream=True, stream_options={"include_usage": True}, max_tokens=3)))
    assert chunks[-2].body["choices"][0]["finish_reason"] == "length"
    last = chunks[-1]
    assert last.body["choices"] == [] and last.usage is not None
    assert last.body["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}
    assert all(c.body["usage"] is None for c in chunks[:-1])


async def test_stream_stop_sequence_never_leaks() -> None:
    fake = provider(tokens=10)
    full = text_of((await fake.chat(request())).body)
    stop = full.split()[2][:3]
    chunks = await collect(fake.stream_chat(request(stream=True, stop=stop)))
    text = streamed_text(chunks)
    assert stop not in text and full.startswith(text)
    assert chunks[-1].body["choices"][0]["finish_reason"] == "stop"


async def test_stream_tool_call() -> None:
    tools = [{"type": "function", "function": {"name": "lookup"}}]
    chunks = await collect(provider().stream_chat(request(stream=True, tools=tools)))
    calls = [c.body["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-1]]
    assert calls[0]["function"]["name"] == "lookup" and calls[0]["index"] == 0
    assert "".join(c["function"]["arguments"] for c in calls) == "{}"
    assert chunks[-1].body["choices"][0]["finish_reason"] == "tool_calls"


async def test_latency_before_first_token_and_between_tokens() -> None:
    fake = provider(tokens=4, latency_ms=60, token_latency_ms=30)
    started = time.monotonic()
    stamps = []
    async for chunk in fake.stream_chat(request(stream=True)):
        stamps.append(time.monotonic() - started)
        assert chunk.body
    assert stamps[0] >= 0.055
    assert stamps[-1] - stamps[1] >= 3 * 0.03 * 0.9  # three gaps between four tokens
    started = time.monotonic()
    await fake.chat(request())
    assert time.monotonic() - started >= 0.06 + 3 * 0.03 * 0.9


async def test_closed_stream_reports_a_cancelled_attempt(attempts: Any) -> None:
    stream = provider(tokens=10).stream_chat(request(stream=True), on_attempt=attempts)
    async for chunk in stream:
        if chunk.body["choices"][0]["delta"].get("content"):
            break
    await close_stream(stream)
    assert attempts.outcomes == ["cancelled"]
    assert attempts[0].usage.completion_tokens == 1 and attempts[0].usage_estimated


@pytest.mark.parametrize("bad", [
    {"messages": []},
    {"messages": "hi"},
    {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
    {"messages": [{"role": "user", "content": "x"}], "stop": [1]},
    {"messages": [{"role": "user", "content": 5}]},
])
async def test_bad_requests_are_invalid(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        await provider().chat({"model": "m", **bad})


async def test_embeddings_are_deterministic_unit_vectors(attempts: Any) -> None:
    fake = provider(embedding_dimensions=12)
    result = await fake.embed(["a cat", "a dog", "a cat"], model="emb", on_attempt=attempts)
    assert result.dimensions == 12 and all(len(v) == 12 for v in result.vectors)
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-9) for v in result.vectors)
    assert result.vectors[0] == result.vectors[2] != result.vectors[1]
    assert result.vectors[0] == fake_vector("a cat", 12)
    assert result.usage.prompt_tokens == 6
    assert attempts[0].model == "emb"


async def test_embeddings_refuse_token_arrays() -> None:
    with pytest.raises(InvalidRequest) as info:
        await provider().embed([[1, 2, 3]], model="emb")  # type: ignore[list-item]
    assert info.value.param == "input"
