"""OpenAI-compatible data plane (``/v1``): parse, call one service method, shape the reply."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from tenantlm.api.deps import json_body, principal, services, validate
from tenantlm.api.openai.chat import USER_HEADER
from tenantlm.api.openai.protocol import ChatCompletionRequest, EmbeddingRequest
from tenantlm.api.responses import JSONResponse
from tenantlm.errors import ModelNotFound
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, Principal

router = APIRouter(prefix="/v1", default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]


@router.get("/models")
async def list_models(request: Request, who: PrincipalDep) -> Any:
    ctx = access.data_plane(who, Permission.MODELS_READ)
    catalog = services(request).catalog
    data = [{"id": m.name, "object": "model", "created": catalog.created_at, "owned_by": "tenantlm"}
            for m in await catalog.visible(ctx.tenant)]
    return {"object": "list", "data": data}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = access.data_plane(who, Permission.MODELS_READ)
    catalog = services(request).catalog
    for m in await catalog.visible(ctx.tenant):
        if m.name == model_id:
            return {"id": m.name, "object": "model", "created": catalog.created_at, "owned_by": "tenantlm"}
    raise ModelNotFound(f"The model '{model_id}' does not exist or you do not have access to it.", param="model")


@router.post("/chat/completions", responses={200: {
    "description": "A `chat.completion`, or with `stream: true` a `text/event-stream` of `chat.completion.chunk` "
                   "events ending with `data: [DONE]`. Request headers for the tenant's response cache: "
                   "`x-tenantlm-cache: bypass` (neither read nor written), `x-tenantlm-cache-threshold` (raise the "
                   "semantic threshold, 0-1).",
    "headers": {"x-tenantlm-cache": {"description": "On every cacheable answer when the tenant's cache is on.",
                                     "schema": {"type": "string", "enum": ["hit", "miss"]}}}}})
async def chat_completions(body: ChatCompletionRequest, who: PrincipalDep) -> Any:
    """Documentation only: the front door serves this path (``api/openai/chat.py``, JSON and streams alike) and no
    request reaches this function."""
    raise RuntimeError("POST /v1/chat/completions is served by api/openai/chat.py")


@router.post("/embeddings")
async def embeddings(request: Request, who: PrincipalDep) -> Any:
    ctx = access.data_plane(who, Permission.INFERENCE)
    body = await json_body(request)
    validate(EmbeddingRequest, body)
    reply = await services(request).inference.embed(
        ctx=ctx, body=body, end_user_header=request.headers.get(USER_HEADER))
    return JSONResponse(reply.body, headers=reply.headers)
