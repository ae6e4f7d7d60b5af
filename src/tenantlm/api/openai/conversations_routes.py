"""OpenAI's Conversations API (``/v1/conversations``) for a tenant key, and ``POST /v1/conversations/{id}/end``.

Viewer keys may read conversations and their items (``conversations:read``); creating, changing, ending and deleting
need ``conversations:write`` (member and admin keys). The end user a request names (``X-TenantLM-User``) scopes what
it may see: a conversation created for an end user answers only requests naming that end user, or the tenant's admin
key. Any other id, another tenant's included, answers exactly as a missing one (404)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from tenantlm.api.deps import json_body, principal, services
from tenantlm.api.openai.chat import USER_HEADER
from tenantlm.api.responses import JSONResponse
from tenantlm.conversations.service import ConversationsService
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, Principal, TenantContext

router = APIRouter(prefix="/v1/conversations", default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=64)]


def _reader(who: Principal) -> TenantContext:
    return access.data_plane(who, Permission.CONVERSATIONS_READ)


def _writer(who: Principal) -> TenantContext:
    return access.data_plane(who, Permission.CONVERSATIONS_WRITE)


def _svc(request: Request) -> ConversationsService:
    return services(request).conversations


def _user(request: Request) -> str | None:
    return request.headers.get(USER_HEADER)


@router.post("")
async def create_conversation(request: Request, who: PrincipalDep) -> Any:
    ctx = _writer(who)
    return await _svc(request).create(ctx=ctx, body=await json_body(request), end_user_header=_user(request))


@router.get("/{conversation_id}")
async def retrieve_conversation(conversation_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _reader(who)
    return await _svc(request).get(ctx=ctx, conversation_id=conversation_id, end_user_header=_user(request))


@router.post("/{conversation_id}")
async def update_conversation(conversation_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _writer(who)
    return await _svc(request).update(ctx=ctx, conversation_id=conversation_id, body=await json_body(request),
                                      end_user_header=_user(request))


@router.delete("/{conversation_id}")
async def delete_conversation(conversation_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _writer(who)
    return await _svc(request).delete(ctx=ctx, conversation_id=conversation_id, end_user_header=_user(request))


@router.post("/{conversation_id}/end")
async def end_conversation(conversation_id: str, request: Request, who: PrincipalDep) -> Any:
    """End the session: the conversation, its items, the responses made in it and the memories written during it
    are erased."""
    ctx = _writer(who)
    return await _svc(request).end(ctx=ctx, conversation_id=conversation_id, end_user_header=_user(request))


@router.post("/{conversation_id}/items")
async def create_items(conversation_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _writer(who)
    return await _svc(request).add_items(ctx=ctx, conversation_id=conversation_id, body=await json_body(request),
                                         end_user_header=_user(request))


@router.get("/{conversation_id}/items")
async def list_items(conversation_id: str, request: Request, who: PrincipalDep, limit: Limit = 20,
                     order: Literal["asc", "desc"] = "desc", after: Cursor = None) -> Any:
    ctx = _reader(who)
    return await _svc(request).list_items(ctx=ctx, conversation_id=conversation_id, end_user_header=_user(request),
                                          after=after, limit=limit, order=order)


@router.get("/{conversation_id}/items/{item_id}")
async def retrieve_item(conversation_id: str, item_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _reader(who)
    return await _svc(request).get_item(ctx=ctx, conversation_id=conversation_id, item_id=item_id,
                                        end_user_header=_user(request))


@router.delete("/{conversation_id}/items/{item_id}")
async def delete_item(conversation_id: str, item_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _writer(who)
    return await _svc(request).delete_item(ctx=ctx, conversation_id=conversation_id, item_id=item_id,
                                           end_user_header=_user(request))
