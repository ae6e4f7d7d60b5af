"""OpenAI's Responses API (``/v1/responses``) for a tenant key: create (JSON or SSE), retrieve, delete, input items.

Every route needs ``inference``; ``file_search`` needs ``knowledge:read`` as well (checked by the service before
anything runs). Any id of another tenant answers exactly as a missing one (404)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from tenantlm.api.deps import json_body, principal, services
from tenantlm.api.openai.chat import SSE_HEADERS, USER_HEADER
from tenantlm.api.responses import EventStreamResponse, JSONResponse
from tenantlm.errors import UnsupportedFeature
from tenantlm.responses.service import EventStream
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, Principal, TenantContext

router = APIRouter(prefix="/v1/responses", default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=64)]


def _caller(who: Principal) -> TenantContext:
    return access.data_plane(who, Permission.INFERENCE)


def _include(request: Request) -> list[str]:
    return request.query_params.getlist("include") + request.query_params.getlist("include[]")


@router.post("", responses={200: {"description": "A `response`, or with `stream: true` a `text/event-stream` of "
                                                 "Responses API events ending with `response.completed`"}})
async def create_response(request: Request, who: PrincipalDep) -> Any:
    ctx = _caller(who)
    result = await services(request).responses.create(ctx=ctx, body=await json_body(request),
                                                      end_user_header=request.headers.get(USER_HEADER))
    if isinstance(result, EventStream):
        return EventStreamResponse(result.events, headers={**SSE_HEADERS, **result.headers})
    return JSONResponse(result.body, headers=result.headers)


@router.get("/{response_id}")
async def retrieve_response(response_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _caller(who)
    if request.query_params.get("stream") in {"true", "True", "1"}:
        raise UnsupportedFeature("streaming a stored response again is not supported; retrieve it as JSON",
                                 param="stream")
    return await services(request).responses.get(tenant_id=ctx.tenant_id, response_id=response_id,
                                                 include=_include(request))


@router.delete("/{response_id}")
async def delete_response(response_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _caller(who)
    return await services(request).responses.delete(tenant_id=ctx.tenant_id, response_id=response_id)


@router.get("/{response_id}/input_items")
async def list_input_items(response_id: str, request: Request, who: PrincipalDep, limit: Limit = 20,
                           order: Literal["asc", "desc"] = "desc", after: Cursor = None) -> Any:
    ctx = _caller(who)
    return await services(request).responses.input_items(tenant_id=ctx.tenant_id, response_id=response_id,
                                                         after=after, limit=limit, order=order)
