"""Inference: the data-plane use cases (chat completions, embeddings) between the thin routes and the providers.

Request path: resolve the model for this tenant -> note the end user -> the gate (admission: limits and budgets;
the fair scheduler) -> provider router (retries, fallback, breaker) -> stream back, charging as tokens flow -> the
gate meters every attempt in the ledger and settles the reservation -> count tokens, request log.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from tenantlm.errors import InvalidRequest, TenantLMError
from tenantlm.inference import cached, embedding_inputs
from tenantlm.inference.gate import BudgetCut, Gate, Passage, finishing
from tenantlm.inference.sse import SSE_DONE, sse_event
from tenantlm.metering.models import PromptUse
from tenantlm.observability.logging import request_id_var
from tenantlm.observability.metrics import Metrics
from tenantlm.providers.base import Attempt, ChatChunk, Usage
from tenantlm.providers.registry import ProviderRegistry
from tenantlm.requestlog.service import RequestLogService
from tenantlm.respcache.service import HEADER as CACHE_HEADER
from tenantlm.respcache.service import CacheRequest, Probe, ResponseCache
from tenantlm.tenancy.catalog import ModelCatalog, ResolvedModel
from tenantlm.tenancy.end_users import EndUserRecorder, pick_end_user
from tenantlm.tenancy.models import TenantContext

JSON = dict[str, Any]
T = TypeVar("T")


class Framing(Protocol[T]):
    """How a chat stream is handed to its consumer: the first (empty) step, each chunk body, the end, an error.
    Chat completions frame it as SSE bytes; a use case that builds its own events (the Responses API) takes the
    pieces as they are (``PIECES``). The stream is metered before ``done`` or ``error`` is framed."""

    start: T

    def chunk(self, body: JSON) -> T: ...

    def done(self) -> T: ...

    def error(self, exc: TenantLMError) -> T: ...


class _SseFraming:
    start = b""
    chunk = staticmethod(sse_event)

    @staticmethod
    def done() -> bytes:
        return SSE_DONE

    @staticmethod
    def error(exc: TenantLMError) -> bytes:
        return sse_event(exc.body())


@dataclass(frozen=True, slots=True)
class Piece:
    """One step of a chat stream, unframed: a ``chat.completion.chunk`` body (the usage chunk included), or the
    end: complete (``chunk`` and ``error`` None) or ended by ``error``. The end is metered before it is seen."""

    chunk: JSON | None = None
    error: TenantLMError | None = None


class _PieceFraming:
    start = Piece()

    @staticmethod
    def chunk(body: JSON) -> Piece:
        return Piece(chunk=body)

    @staticmethod
    def done() -> Piece:
        return Piece()

    @staticmethod
    def error(exc: TenantLMError) -> Piece:
        return Piece(error=exc)


SSE: Framing[bytes] = _SseFraming()
PIECES: Framing[Piece] = _PieceFraming()


@dataclass(slots=True)
class PieceStream:
    """A chat stream as pieces (``stream_chat_pieces``), its first chunk already produced."""

    pieces: AsyncIterator[Piece]
    headers: dict[str, str]


@dataclass(slots=True)
class ChatStream:
    """An SSE byte stream whose first chunk has already been produced, so setup errors surface as HTTP errors."""

    events: AsyncIterator[bytes]
    headers: dict[str, str]


@dataclass(slots=True)
class Reply:
    """A JSON reply and the headers that go with it (OpenAI's x-ratelimit-*)."""

    body: JSON
    headers: dict[str, str]


class InferenceService:
    def __init__(self, *, catalog: ModelCatalog, providers: ProviderRegistry, metrics: Metrics,
                 end_users: EndUserRecorder, request_log: RequestLogService, gate: Gate,
                 cache: ResponseCache | None = None) -> None:
        self.cache = cache
        self.catalog = catalog
        self.providers = providers
        self.metrics = metrics
        self.end_users = end_users
        self.request_log = request_log
        self.gate = gate

    def _capture(self, ctx: TenantContext, model: ResolvedModel, endpoint: str, request: JSON,
                 response: JSON | None, status: int = 200, *, end_user: str | None) -> None:
        self.request_log.capture(tenant=ctx.tenant, key_id=ctx.key_id, request_id=request_id_var.get(),
                                 model=model.name, endpoint=endpoint, status=status, request=request,
                                 response=response, end_user=end_user)

    def _note_end_user(self, ctx: TenantContext, body: JSON, header: str | None) -> str | None:
        user = pick_end_user(header=header, body_user=body.get("user"), body_safety_id=body.get("safety_identifier"))
        if user is not None:
            self.end_users.record(tenant_id=ctx.tenant_id, user_id=user)
        return user

    async def _resolve(self, ctx: TenantContext, name: str, kind: str) -> ResolvedModel:
        resolved = await self.catalog.resolve(ctx, name)
        if resolved.config.kind != kind:
            other = "/v1/embeddings" if resolved.config.kind == "embedding" else "/v1/chat/completions"
            raise InvalidRequest(f"'{name}' is an {resolved.config.kind} model; use {other}", param="model")
        return resolved

    def _count(self, ctx: TenantContext, model: ResolvedModel, usage: Usage | None) -> None:
        if usage is not None:
            self.metrics.observe_tokens(tenant_id=ctx.tenant_id, model=model.config.name,
                                        prompt=usage.prompt_tokens, completion=usage.completion_tokens)

    async def _enter(self, ctx: TenantContext, model: ResolvedModel, body: JSON, user: str | None,
                     prompt_use: PromptUse | None, history_items: int | None = None) -> Passage:
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        return await self.gate.enter(ctx=ctx, model=model, end_user=user, prompt=body.get("messages"),
                                     max_tokens=max_tokens if isinstance(max_tokens, int) else None,
                                     prompt_use=prompt_use, history_items=history_items)

    # --- chat -------------------------------------------------------------------------------------------------
    async def chat(self, *, ctx: TenantContext, body: JSON, end_user_header: str | None,
                   respond: Callable[[Reply], Awaitable[None]] | None = None,
                   endpoint: str = "chat.completions", cache: CacheRequest | None = None,
                   prompt_use: PromptUse | None = None, history_items: int | None = None) -> Reply:
        """A chat completion. ``respond``, when given, sends the reply to the client: it is called as soon as the
        usage is on disk, and the admission is settled after it (see ``Passage.finish``). ``endpoint`` names the
        use case in the request log (the Responses API calls the model through here too). ``cache``: the request
        may be answered from the tenant's response cache (chat completions only; see ``respcache``).
        ``prompt_use``, the prompt template the messages were rendered from, and ``history_items``, how many
        conversation items they carry as history, go on the usage events."""
        model = await self._resolve(ctx, body["model"], "chat")
        user = self._note_end_user(ctx, body, end_user_header)
        probe = await self._probe(ctx, model, body, user, cache)
        if probe is not None and probe.hit:
            return await self._cached(ctx, model, body, user, probe, respond, endpoint, prompt_use)
        passage = await self._enter(ctx, model, body, user, prompt_use, history_items)
        try:  # not finishing(): an async context manager costs a generator on the hot path
            result = await self.providers.chat(model.config, dict(body), on_attempt=passage.on_attempt,
                                               prompt_estimate=passage.prompt_estimate, residency=model.residency)
        except BaseException as exc:
            await passage.finish(status="cancelled" if isinstance(exc, asyncio.CancelledError) else "error")
            raise
        try:
            out = dict(result.body)
            out["model"] = model.name
            if "id" not in out:
                out["id"] = _completion_id()
            out.setdefault("object", "chat.completion")
            out["usage"] = {**(out.get("usage") or {}), **result.usage.as_dict()}
            reply = Reply(out, passage.headers if probe is None else {**passage.headers, CACHE_HEADER: "miss"})
            if probe is not None and self.cache is not None:  # stored before it is sent: the client's next
                await self.cache.store(probe=probe, body=out, usage=result.usage)  # request finds it
        except BaseException:
            await passage.finish(status="ok")  # the upstream answered: its attempt is metered as served
            raise
        await passage.finish(status="ok", respond=None if respond is None else functools.partial(respond, reply))
        self._count(ctx, model, result.usage)
        self._capture(ctx, model, endpoint, body, out, end_user=passage.end_user)
        return reply

    async def _probe(self, ctx: TenantContext, model: ResolvedModel, body: JSON, user: str | None,
                     cache: CacheRequest | None) -> Probe | None:
        if cache is None or self.cache is None:
            return None
        probe = await self.cache.probe(ctx=ctx, model=model.config.name, body=body, end_user=user, request=cache)
        if probe is not None:
            self.metrics.observe_cache(tenant_id=ctx.tenant_id, model=model.config.name, hit=probe.hit)
        return probe

    async def _hit(self, ctx: TenantContext, model: ResolvedModel, body: JSON, user: str | None, probe: Probe,
                   prompt_use: PromptUse | None) -> tuple[Passage, Usage, JSON, dict[str, str]]:
        """A cache hit: admitted like any request (limits and budgets apply; no scheduler slot, no model call),
        metered as one attempt of the ``cache`` provider whose prompt tokens are all cached, priced at the
        operator's hit price factor. Returns the passage (to finish), the usage, the answer and its headers."""
        assert self.cache is not None and probe.record is not None
        completion = int(probe.record["usage"]["completion_tokens"])
        passage = await self.gate.enter(ctx=ctx, model=model, end_user=user, prompt=body.get("messages"),
                                        max_tokens=completion, schedule=False,
                                        price_factor=self.cache.config.hit_price_factor, prompt_use=prompt_use)
        prompt = passage.prompt_estimate if probe.semantic else int(probe.record["usage"]["prompt_tokens"])
        usage = Usage(prompt, completion, cached_tokens=prompt)
        passage.on_attempt(Attempt(provider="cache", model=model.config.upstream, number=1, outcome="ok",
                                   usage=usage, catalog_model=model.config.name))
        out = self.cache.answer(probe, model=model.name, completion_id=_completion_id(), prompt_tokens=prompt)
        headers = {**passage.headers, CACHE_HEADER: "hit"}
        if probe.similarity is not None:
            headers[CACHE_HEADER + "-similarity"] = f"{probe.similarity:.4f}"
        return passage, usage, out, headers

    async def _cached(self, ctx: TenantContext, model: ResolvedModel, body: JSON, user: str | None, probe: Probe,
                      respond: Callable[[Reply], Awaitable[None]] | None, endpoint: str,
                      prompt_use: PromptUse | None) -> Reply:
        passage, usage, out, headers = await self._hit(ctx, model, body, user, probe, prompt_use)
        reply = Reply(out, headers)
        await passage.finish(status="ok", respond=None if respond is None else functools.partial(respond, reply))
        self._count(ctx, model, usage)
        self._capture(ctx, model, endpoint, body, out, end_user=passage.end_user)
        return reply

    async def _cached_stream(self, ctx: TenantContext, model: ResolvedModel, body: JSON, user: str | None,
                             probe: Probe, framing: Framing[T], endpoint: str, prompt_use: PromptUse | None
                             ) -> tuple[AsyncIterator[T], dict[str, str]]:
        passage, usage, out, headers = await self._hit(ctx, model, body, user, probe, prompt_use)
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = self._replay(ctx, model, body, passage, usage, out, wants_usage, framing, endpoint)
        await anext(events)  # step into its try, as _stream does
        return events, headers

    async def _replay(self, ctx: TenantContext, model: ResolvedModel, request: JSON, passage: Passage, usage: Usage,
                      out: JSON, wants_usage: bool, framing: Framing[T], endpoint: str) -> AsyncIterator[T]:
        status = "cancelled"
        try:
            yield framing.start
            for chunk in cached.replay_chunks(out, wants_usage=wants_usage):
                yield framing.chunk(chunk)
            status = "ok"
            await passage.finish(status="ok")  # metered before the client hears the stream is complete
            yield framing.done()
        finally:
            await passage.finish(status=status)
            self._count(ctx, model, usage)
            self._capture(ctx, model, endpoint, request, out, end_user=passage.end_user)

    async def stream_chat(self, *, ctx: TenantContext, body: JSON, end_user_header: str | None,
                          cache: CacheRequest | None = None, prompt_use: PromptUse | None = None) -> ChatStream:
        events, headers = await self._stream(ctx, body, end_user_header, SSE, "chat.completions", cache=cache,
                                             prompt_use=prompt_use)
        return ChatStream(events, headers)

    async def stream_chat_pieces(self, *, ctx: TenantContext, body: JSON, end_user_header: str | None,
                                 endpoint: str, prompt_use: PromptUse | None = None,
                                 history_items: int | None = None) -> PieceStream:
        """``stream_chat`` for a use case that frames the stream itself: the same path (admission, scheduler,
        metering as tokens flow), the chunks as bodies, the usage chunk always included. Closing ``pieces``
        finishes the passage."""
        pieces, headers = await self._stream(ctx, {**body, "stream_options": {"include_usage": True}},
                                             end_user_header, PIECES, endpoint, prompt_use=prompt_use,
                                             history_items=history_items)
        return PieceStream(pieces, headers)

    async def _stream(self, ctx: TenantContext, body: JSON, end_user_header: str | None, framing: Framing[T],
                      endpoint: str, cache: CacheRequest | None = None, prompt_use: PromptUse | None = None,
                      history_items: int | None = None) -> tuple[AsyncIterator[T], dict[str, str]]:
        model = await self._resolve(ctx, body["model"], "chat")
        user = self._note_end_user(ctx, body, end_user_header)
        probe = await self._probe(ctx, model, body, user, cache)
        if probe is not None and probe.hit:
            return await self._cached_stream(ctx, model, body, user, probe, framing, endpoint, prompt_use)
        passage = await self._enter(ctx, model, body, user, prompt_use, history_items)
        options = body.get("stream_options") or {}
        wants_usage = bool(options.get("include_usage"))
        upstream = {**body, "stream_options": {**options, "include_usage": True}}
        chunks = self.providers.stream_chat(model.config, upstream, on_attempt=passage.on_attempt,
                                            prompt_estimate=passage.prompt_estimate, residency=model.residency)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        except BaseException as exc:
            await _aclose(chunks)
            await passage.finish(status="cancelled" if isinstance(exc, asyncio.CancelledError) else "error")
            raise
        events = self._events(ctx, model, chunks, first, wants_usage, body, passage, framing, endpoint, probe)
        await anext(events)  # step into its try: from here on, closing it finishes the passage (see _events)
        return events, passage.headers if probe is None else {**passage.headers, CACHE_HEADER: "miss"}

    async def _events(self, ctx: TenantContext, model: ResolvedModel, chunks: AsyncIterator[ChatChunk],
                      first: ChatChunk | None, wants_usage: bool, request: JSON, passage: Passage,
                      framing: Framing[T], endpoint: str, probe: Probe | None = None) -> AsyncIterator[T]:
        usage: Usage | None = None
        completion_id = _completion_id()
        transcript = _Transcript()
        status = "cancelled"  # unless the stream gets to one of the ends below
        try:
            # stream_chat takes this first step itself, so the generator is inside its try before anyone else sees
            # it. A generator never started does not run its finally when closed or collected; a client that leaves
            # between the response start and the first chunk would then leave its passage open (the scheduler slot,
            # the reservation and the concurrency slot with it). Started, it is finished by whoever closes it: the
            # response (EventStreamResponse closes its body on every way out) or, failing that, the event loop's
            # finalizer for collected async generators.
            yield framing.start
            chunk = first
            while chunk is not None:
                transcript.add(chunk.body)
                if chunk.usage is not None:
                    usage = chunk.usage
                body = _relabel(chunk.body, model.name, completion_id)
                if chunk.usage is None or chunk.body.get("choices") or wants_usage:
                    if chunk.usage is not None and not wants_usage:
                        body.pop("usage", None)
                    yield framing.chunk(body)
                await passage.progress(len(transcript.parts))
                chunk = await anext(chunks, None)
            await _aclose(chunks)
            status = "ok"
            await passage.finish(status="ok")  # metered durably before the client hears the stream is complete
            await self._store_stream(probe, model, completion_id, transcript, usage)
            yield framing.done()
        except TenantLMError as exc:
            status = "cut" if isinstance(exc, BudgetCut) else "error"
            transcript.error, transcript.status = exc.body()["error"], exc.status
            await _aclose(chunks)
            await passage.finish(status=status)
            yield framing.error(exc)
        finally:
            await _aclose(chunks)
            await passage.finish(status=status)
            self._count(ctx, model, usage)
            self._capture(ctx, model, endpoint, request,
                          transcript.summary(usage), transcript.status, end_user=passage.end_user)

    async def _store_stream(self, probe: Probe | None, model: ResolvedModel, completion_id: str,
                            transcript: _Transcript, usage: Usage | None) -> None:
        """Keep a streamed miss's answer (plain text only), before the client hears the stream is complete."""
        if probe is None or self.cache is None or usage is None or transcript.tool_calls:
            return
        answer = cached.gathered_answer(completion_id=completion_id, model=model.name,
                                        content="".join(transcript.parts), finish_reason=transcript.finish_reason)
        await self.cache.store(probe=probe, body=answer, usage=usage)

    # --- embeddings -------------------------------------------------------------------------------------------
    async def embed(self, *, ctx: TenantContext, body: JSON, end_user_header: str | None) -> Reply:
        model = await self._resolve(ctx, body["model"], "embedding")
        user = self._note_end_user(ctx, body, end_user_header)
        inputs = embedding_inputs.parse_input(body["input"])
        dims = body.get("dimensions")
        if dims is not None and model.config.dimensions is not None and dims != model.config.dimensions:
            raise InvalidRequest(f"'{model.name}' produces {model.config.dimensions} dimensions and cannot be "
                                 "shortened", param="dimensions")
        tokenizer = embedding_inputs.tokenizer_for(self.providers, model.config, inputs)
        if tokenizer is not None:
            await embedding_inputs.check_lengths(tokenizer, inputs, model_name=model.name,
                                                 truncate=body.get("truncate") is True)
        passage = await self.gate.enter(ctx=ctx, model=model, end_user=user, prompt=inputs,
                                        max_tokens=0, output=False)
        async with finishing(passage):
            result = await embedding_inputs.embed(self.providers, tokenizer, model.config, inputs,
                                                  on_attempt=passage.on_attempt,
                                                  prompt_estimate=passage.prompt_estimate,
                                                  residency=model.residency)
        self._count(ctx, model, result.usage)
        self._capture(ctx, model, "embeddings", body,
                      {"vectors": len(result.vectors), "usage": result.usage.as_dict()}, end_user=user)
        as_b64 = body.get("encoding_format") == "base64"
        data = [{"object": "embedding", "index": i, "embedding": _encode(v, as_b64)}
                for i, v in enumerate(result.vectors)]
        return Reply({"object": "list", "data": data, "model": model.name,
                      "usage": {"prompt_tokens": result.usage.prompt_tokens,
                                "total_tokens": result.usage.prompt_tokens}}, passage.headers)


class _Transcript:
    """What a stream said, gathered for the request log: the text, tool calls and how it ended."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.tool_calls: list[Any] = []
        self.finish_reason: str | None = None
        self.error: JSON | None = None
        self.status = 200

    def add(self, body: JSON) -> None:
        for choice in body.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.parts.append(delta["content"])
            if delta.get("tool_calls"):
                self.tool_calls.extend(delta["tool_calls"])
            self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def summary(self, usage: Usage | None) -> JSON:
        return {"stream": True, "content": "".join(self.parts), "tool_calls": self.tool_calls or None,
                "finish_reason": self.finish_reason, "error": self.error,
                "usage": None if usage is None else usage.as_dict()}


async def _aclose(chunks: AsyncIterator[ChatChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


def _completion_id() -> str:
    return "chatcmpl-" + os.urandom(16).hex()  # 128 random bits, as a uuid4's hex would carry (122)


def _relabel(body: JSON, model: str, completion_id: str) -> JSON:
    out = dict(body)
    out["model"] = model
    out.setdefault("id", completion_id)
    out.setdefault("object", "chat.completion.chunk")
    out.setdefault("created", int(time.time()))
    return out


def _encode(vector: list[float], as_b64: bool) -> list[float] | str:
    if as_b64:
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector
