"""OpenAI-compatible data plane (``/v1``): parse, call one service method, shape the reply."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from tenantlm.api.deps import PREPARED, Prepared, json_body, principal, services
from tenantlm.api.errors import validation_error
from tenantlm.api.openai.protocol import ChatCompletionRequest, EmbeddingRequest, plainly_valid_chat
from tenantlm.api.responses import EventStreamResponse, JSONResponse
from tenantlm.errors import ModelNotFound
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, Principal

router = APIRouter(prefix="/v1", default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]
USER_HEADER = "x-tenantlm-user"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def validate(schema: type[ChatCompletionRequest] | type[EmbeddingRequest], body: dict[str, Any]) -> None:
    if schema is ChatCompletionRequest and plainly_valid_chat(body):
        return
    try:
        schema.model_validate(body)
    except ValidationError as exc:
        raise validation_error(RequestValidationError(exc.errors())) from None


@router.get("/models")
async def list_models(request: Request, who: PrincipalDep) -> Any:
    ctx = access.data_plane(who, Permission.MODELS_READ)
    catalog = services(request).catalog
    data = [{"id": m.name, "object": "model", "created": catalog.created_at, "owned_by": "tenantlm"}
            for m in catalog.visible(ctx.tenant)]
    return {"object": "list", "data": data}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = access.data_plane(who, Permission.MODELS_READ)
    catalog = services(request).catalog
    for m in catalog.visible(ctx.tenant):
        if m.name == model_id:
            return {"id": m.name, "object": "model", "created": catalog.created_at, "owned_by": "tenantlm"}
    raise ModelNotFound(f"The model '{model_id}' does not exist or you do not have access to it.", param="model")


@router.post("/chat/completions")
async def chat_completions(request: Request, who: PrincipalDep) -> Any:
    ctx = access.data_plane(who, Permission.INFERENCE)
    prepared: Prepared | None = request.scope.get(PREPARED)
    if prepared is not None:  # a stream the fast path has authenticated, parsed and validated already
        body = prepared.body
    else:
        body = await json_body(request)
        validate(ChatCompletionRequest, body)
    inference = services(request).inference
    user = request.headers.get(USER_HEADER)
    if body.get("stream"):
        stream = await inference.stream_chat(ctx=ctx, body=body, end_user_header=user)
        return EventStreamResponse(stream.events, headers={**SSE_HEADERS, **stream.headers})
    reply = await inference.chat(ctx=ctx, body=body, end_user_header=user)
    return JSONResponse(reply.body, headers=reply.headers)


@router.post("/embeddings")
async def embeddings(request: Request, who: PrincipalDep) -> Any:
    ctx = access.data_plane(who, Permission.INFERENCE)
    body = await json_body(request)
    validate(EmbeddingRequest, body)
    reply = await services(request).inference.embed(
        ctx=ctx, body=body, end_user_header=request.headers.get(USER_HEADER))
    return JSONResponse(reply.body, headers=reply.headers)
