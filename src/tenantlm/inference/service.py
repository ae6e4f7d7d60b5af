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
from tenantlm.observability.metrics import Metrics
from tenantlm.providers.base import ChatChunk, Usage
from tenantlm.providers.registry import ProviderRegistry
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
                 end_users: EndUserRecorder) -> None:
        self.catalog = catalog
        self.providers = providers
        self.metrics = metrics
        self.end_users = end_users

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
        return ChatStream(self._events(ctx, model, chunks, first, wants_usage))

    async def _events(self, ctx: TenantContext, model: ResolvedModel, chunks: AsyncIterator[ChatChunk],
                      first: ChatChunk | None, wants_usage: bool) -> AsyncIterator[bytes]:
        usage: Usage | None = None
        completion_id = _completion_id()
        try:
            chunk = first
            while chunk is not None:
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
            yield sse_event(exc.body())
        finally:
            self._count(ctx, model, usage)
            await _aclose(chunks)

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
        as_b64 = body.get("encoding_format") == "base64"
        data = [{"object": "embedding", "index": i, "embedding": _encode(v, as_b64)}
                for i, v in enumerate(result.vectors)]
        return {"object": "list", "data": data, "model": model.name,
                "usage": {"prompt_tokens": result.usage.prompt_tokens, "total_tokens": result.usage.prompt_tokens}}


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
