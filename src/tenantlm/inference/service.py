"""Inference: the data-plane use cases (chat completions, embeddings) between the thin routes and the providers.

Request path today: resolve the model for this tenant -> note the end user -> provider router (retries, fallback,
breaker) -> stream back -> count tokens. Limits, scheduling and metering slot in here, not in the routes.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tenantlm.errors import InvalidRequest, TenantLMError, UnsupportedFeature
from tenantlm.inference.sse import SSE_DONE, sse_event
from tenantlm.observability.logging import request_id_var
from tenantlm.observability.metrics import Metrics
from tenantlm.providers.base import ChatChunk, Usage
from tenantlm.providers.registry import ProviderRegistry
from tenantlm.requestlog.service import RequestLogService
from tenantlm.tenancy.catalog import ModelCatalog, ResolvedModel
from tenantlm.tenancy.end_users import EndUserRecorder, pick_end_user
from tenantlm.tenancy.models import TenantContext

JSON = dict[str, Any]


@dataclass(slots=True)
class ChatStream:
    """An SSE byte stream whose first chunk has already been produced, so setup errors surface as HTTP errors."""

    events: AsyncIterator[bytes]


class InferenceService:
    def __init__(self, *, catalog: ModelCatalog, providers: ProviderRegistry, metrics: Metrics,
                 end_users: EndUserRecorder, request_log: RequestLogService) -> None:
        self.catalog = catalog
        self.providers = providers
        self.metrics = metrics
        self.end_users = end_users
        self.request_log = request_log

    def _capture(self, ctx: TenantContext, model: ResolvedModel, endpoint: str, request: JSON,
                 response: JSON | None, status: int = 200) -> None:
        self.request_log.capture(tenant=ctx.tenant, key_id=ctx.key_id, request_id=request_id_var.get(),
                                 model=model.name, endpoint=endpoint, status=status, request=request,
                                 response=response)

    def _note_end_user(self, ctx: TenantContext, body: JSON, header: str | None) -> None:
        user = pick_end_user(header=header, body_user=body.get("user"), body_safety_id=body.get("safety_identifier"))
        if user is not None:
            self.end_users.record(tenant_id=ctx.tenant_id, user_id=user)

    def _resolve(self, ctx: TenantContext, name: str, kind: str) -> ResolvedModel:
        resolved = self.catalog.resolve(ctx.tenant, name)
        if resolved.config.kind != kind:
            other = "/v1/embeddings" if resolved.config.kind == "embedding" else "/v1/chat/completions"
            raise InvalidRequest(f"'{name}' is an {resolved.config.kind} model; use {other}", param="model")
        return resolved

    def _count(self, ctx: TenantContext, model: ResolvedModel, usage: Usage | None) -> None:
        if usage is not None:
            self.metrics.observe_tokens(tenant_id=ctx.tenant_id, model=model.config.name,
                                        prompt=usage.prompt_tokens, completion=usage.completion_tokens)

    # --- chat -------------------------------------------------------------------------------------------------
    async def chat(self, *, ctx: TenantContext, body: JSON, end_user_header: str | None) -> JSON:
        model = self._resolve(ctx, body["model"], "chat")
        self._note_end_user(ctx, body, end_user_header)
        result = await self.providers.chat(model.config, dict(body))
        self._count(ctx, model, result.usage)
        out = dict(result.body)
        out["model"] = model.name
        out.setdefault("id", _completion_id())
        out.setdefault("object", "chat.completion")
        out["usage"] = {**(out.get("usage") or {}), **result.usage.as_dict()}
        self._capture(ctx, model, "chat.completions", body, out)
        return out

    async def stream_chat(self, *, ctx: TenantContext, body: JSON, end_user_header: str | None) -> ChatStream:
        model = self._resolve(ctx, body["model"], "chat")
        self._note_end_user(ctx, body, end_user_header)
        options = body.get("stream_options") or {}
        wants_usage = bool(options.get("include_usage"))
        upstream = {**body, "stream_options": {**options, "include_usage": True}}
        chunks = self.providers.stream_chat(model.config, upstream)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await _aclose(chunks)
            raise
        return ChatStream(self._events(ctx, model, chunks, first, wants_usage, body))

    async def _events(self, ctx: TenantContext, model: ResolvedModel, chunks: AsyncIterator[ChatChunk],
                      first: ChatChunk | None, wants_usage: bool, request: JSON) -> AsyncIterator[bytes]:
        usage: Usage | None = None
        completion_id = _completion_id()
        transcript = _Transcript()
        try:
            chunk = first
            while chunk is not None:
                transcript.add(chunk.body)
                if chunk.usage is not None:
                    usage = chunk.usage
                body = _relabel(chunk.body, model.name, completion_id)
                if chunk.usage is None or chunk.body.get("choices") or wants_usage:
                    if chunk.usage is not None and not wants_usage:
                        body.pop("usage", None)
                    yield sse_event(body)
                chunk = await anext(chunks, None)
            yield SSE_DONE
        except TenantLMError as exc:
            transcript.error, transcript.status = exc.body()["error"], exc.status
            yield sse_event(exc.body())
        finally:
            self._count(ctx, model, usage)
            await _aclose(chunks)
            self._capture(ctx, model, "chat.completions", request,
                          transcript.summary(usage), transcript.status)

    # --- embeddings -------------------------------------------------------------------------------------------
    async def embed(self, *, ctx: TenantContext, body: JSON, end_user_header: str | None) -> JSON:
        model = self._resolve(ctx, body["model"], "embedding")
        self._note_end_user(ctx, body, end_user_header)
        raw = body["input"]
        inputs = [raw] if isinstance(raw, str) else raw
        if not all(isinstance(i, str) for i in inputs):
            raise UnsupportedFeature("token-array input is not supported here; send the text", param="input")
        dims = body.get("dimensions")
        if dims is not None and model.config.dimensions is not None and dims != model.config.dimensions:
            raise InvalidRequest(f"'{model.name}' produces {model.config.dimensions} dimensions and cannot be "
                                 "shortened", param="dimensions")
        result = await self.providers.embed(model.config, inputs)
        self._count(ctx, model, result.usage)
        self._capture(ctx, model, "embeddings", body,
                      {"vectors": len(result.vectors), "usage": result.usage.as_dict()})
        as_b64 = body.get("encoding_format") == "base64"
        data = [{"object": "embedding", "index": i, "embedding": _encode(v, as_b64)}
                for i, v in enumerate(result.vectors)]
        return {"object": "list", "data": data, "model": model.name,
                "usage": {"prompt_tokens": result.usage.prompt_tokens, "total_tokens": result.usage.prompt_tokens}}


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
    return "chatcmpl-" + uuid.uuid4().hex


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
