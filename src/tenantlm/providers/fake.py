"""A deterministic in-process model for tests and benchmarks.

The reply is ``config.tokens`` words picked from a hash of the last user message and the request ``seed``, so the
same request always gets the same text. One token = one whitespace-separated word, for prompt and completion alike.
Honours ``max_tokens``/``max_completion_tokens`` (finish ``length``), ``stop`` (finish ``stop``),
``stream_options.include_usage`` and ``tools`` (one call to the first function with arguments ``{}``, finish
``tool_calls``); ``n`` is ignored (always one choice). ``latency_ms`` passes before the first token and
``token_latency_ms`` between tokens (in total before a non-streamed reply).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import struct
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

from tenantlm.errors import InvalidRequest
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
from tenantlm.providers.stops import StopMatcher
from tenantlm.providers.wire import (
    ChunkFactory,
    assistant_message,
    check_text_inputs,
    content_text,
    include_usage,
    last_user_text,
    max_output_tokens,
    messages_of,
    seed_param,
    stop_sequences,
)
from tenantlm.settings import ProviderConfig

WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
    "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey",
    "xray", "yankee", "zulu", "amber", "basalt", "cobalt", "dune", "ember", "fjord", "granite", "harbor", "iris",
    "jade", "kelp", "lagoon", "meadow", "nectar", "onyx", "pebble", "quartz", "river", "saffron", "tundra",
    "umber", "valley", "willow", "xenon", "yarrow", "zephyr", "acorn", "birch", "cedar", "dahlia", "elm", "fern",
    "ginkgo", "hazel", "ivy", "juniper", "kale", "laurel",
)


def count_words(text: str) -> int:
    return len(text.split())


def fake_words(text: str, seed: int, count: int) -> list[str]:
    """``count`` words chosen by a hash of ``text`` and ``seed``: deterministic, spread over ``WORDS``."""
    words: list[str] = []
    block = 0
    while len(words) < count:
        digest = hashlib.blake2b(f"{seed}\x00{block}\x00{text}".encode(), digest_size=64).digest()
        words.extend(WORDS[b % len(WORDS)] for b in digest)
        block += 1
    return words[:count]


def fake_vector(text: str, dimensions: int) -> list[float]:
    """A unit vector of ``dimensions`` floats derived from a hash of ``text`` (same text, same vector)."""
    raw: list[float] = []
    block = 0
    while len(raw) < dimensions:
        digest = hashlib.blake2b(f"{block}\x00{text}".encode(), digest_size=64).digest()
        raw.extend(v / 2**31 - 1.0 for v in struct.unpack("<16I", digest))
        block += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


@dataclass(slots=True)
class _Plan:
    """What one request will produce, decided (and validated) before any waiting starts."""

    model: str
    prompt_tokens: int
    words: list[str]
    cut: bool
    stops: list[str]
    tool_call: JSON | None
    include_usage: bool


@dataclass(slots=True)
class _Progress:
    tokens: int = 0
    finish_reason: str = "stop"


def _tool_call(request: JSON) -> JSON | None:
    tools = request.get("tools")
    if not tools:
        return None
    first = tools[0] if isinstance(tools, list) else None
    function = first.get("function") if isinstance(first, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise InvalidRequest("'tools[0].function.name' is required", param="tools")
    call_id = "call_" + hashlib.blake2b(name.encode(), digest_size=12).hexdigest()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}


def _pieces(words: Sequence[str]) -> Iterator[str]:
    for i, word in enumerate(words):
        yield word if i == 0 else f" {word}"


class FakeProvider:
    """Chat and embeddings from hashes; see the module docstring for the rules."""

    def __init__(self, config: ProviderConfig) -> None:
        self.name = config.name
        self._config = config
        self.capabilities = ProviderCapabilities(chat=True, embeddings=True, tools=True)

    def _plan(self, request: JSON) -> _Plan:
        messages = messages_of(request)
        limit = max_output_tokens(request)
        produced = self._config.tokens if limit is None else min(limit, self._config.tokens)
        return _Plan(
            model=str(request.get("model", self.name)),
            prompt_tokens=sum(count_words(content_text(m.get("content"))) for m in messages),
            words=fake_words(last_user_text(messages), seed_param(request) or 0, produced),
            cut=limit is not None and limit < self._config.tokens,
            stops=stop_sequences(request),
            tool_call=_tool_call(request),
            include_usage=include_usage(request),
        )

    def _report(self, hook: AttemptHook | None, plan: _Plan, outcome: AttemptOutcome, tokens: int,
                started: float) -> None:
        usage = Usage(plan.prompt_tokens, tokens)
        report_attempt(hook, Attempt(provider=self.name, model=plan.model, number=1, outcome=outcome, usage=usage,
                                     usage_estimated=outcome != "ok", duration_s=time.monotonic() - started))

    async def chat(self, request: JSON, *, on_attempt: AttemptHook | None = None,
                   prompt_estimate: int | None = None) -> ChatCompletion:
        started = time.monotonic()
        plan = self._plan(request)
        factory = ChunkFactory(plan.model)
        steps = 1 if plan.tool_call else len(plan.words)
        await asyncio.sleep((self._config.latency_ms + self._config.token_latency_ms * max(steps - 1, 0)) / 1000)
        if plan.tool_call is not None:
            message: JSON = {"role": "assistant", "content": None, "tool_calls": [plan.tool_call]}
            usage = Usage(plan.prompt_tokens, 1)
            body = factory.completion(message, "tool_calls", usage)
        else:
            text, reason, tokens = _complete_text(plan)
            usage = Usage(plan.prompt_tokens, tokens)
            body = factory.completion(assistant_message(text), reason, usage)
        self._report(on_attempt, plan, "ok", usage.completion_tokens, started)
        return ChatCompletion(body=body, usage=usage)

    async def stream_chat(self, request: JSON, *, on_attempt: AttemptHook | None = None,
                          prompt_estimate: int | None = None) -> AsyncIterator[ChatChunk]:
        started = time.monotonic()
        plan = self._plan(request)
        factory = ChunkFactory(plan.model, include_usage=plan.include_usage)
        progress = _Progress()
        outcome: AttemptOutcome = "cancelled"
        try:
            await asyncio.sleep(self._config.latency_ms / 1000)
            yield ChatChunk(factory.role())
            body = self._stream_tool(plan, factory, progress) if plan.tool_call else self._stream_text(
                plan, factory, progress)
            async for chunk in body:
                yield chunk
            yield ChatChunk(factory.finish(progress.finish_reason))
            usage = Usage(plan.prompt_tokens, progress.tokens)
            if plan.include_usage:
                yield ChatChunk(factory.usage(usage), usage=usage)
            outcome = "ok"
        finally:
            self._report(on_attempt, plan, outcome, progress.tokens, started)

    async def _stream_text(self, plan: _Plan, factory: ChunkFactory, progress: _Progress) -> AsyncIterator[ChatChunk]:
        matcher = StopMatcher(plan.stops)
        for piece in _pieces(plan.words):
            if progress.tokens:
                await asyncio.sleep(self._config.token_latency_ms / 1000)
            progress.tokens += 1
            text = matcher.push(piece)
            if text:
                yield ChatChunk(factory.content(text))
            if matcher.stopped:
                break
        tail = matcher.flush()
        if tail:
            yield ChatChunk(factory.content(tail))
        progress.finish_reason = "stop" if matcher.stopped or not plan.cut else "length"

    async def _stream_tool(self, plan: _Plan, factory: ChunkFactory, progress: _Progress) -> AsyncIterator[ChatChunk]:
        assert plan.tool_call is not None
        progress.tokens = 1
        name = plan.tool_call["function"]["name"]
        yield ChatChunk(factory.tool_call({"id": plan.tool_call["id"], "type": "function",
                                           "function": {"name": name, "arguments": ""}}))
        yield ChatChunk(factory.tool_call({"function": {"arguments": "{}"}}))
        progress.finish_reason = "tool_calls"

    async def embed(
        self, inputs: Sequence[str], *, model: str, on_attempt: AttemptHook | None = None,
        prompt_estimate: int | None = None,
    ) -> EmbeddingResult:
        started = time.monotonic()
        texts = check_text_inputs(inputs)
        await asyncio.sleep(self._config.latency_ms / 1000)
        dims = self._config.embedding_dimensions
        usage = Usage(prompt_tokens=sum(count_words(t) for t in texts))
        report_attempt(on_attempt, Attempt(provider=self.name, model=model, number=1, outcome="ok", usage=usage,
                                           duration_s=time.monotonic() - started))
        return EmbeddingResult(vectors=[fake_vector(t, dims) for t in texts], usage=usage, dimensions=dims)

    async def aclose(self) -> None:
        return None


def _complete_text(plan: _Plan) -> tuple[str, str, int]:
    """The whole reply at once: (text, finish_reason, completion tokens)."""
    matcher = StopMatcher(plan.stops)
    parts: list[str] = []
    tokens = 0
    for piece in _pieces(plan.words):
        tokens += 1
        parts.append(matcher.push(piece))
        if matcher.stopped:
            return "".join(parts), "stop", tokens
    parts.append(matcher.flush())
    return "".join(parts), "length" if plan.cut else "stop", tokens
