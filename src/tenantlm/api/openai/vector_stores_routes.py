"""OpenAI's Vector Stores API (``/v1/vector_stores``) for a tenant key: stores, their files, file batches, search.

Viewer keys may list, read and search (``knowledge:read``); creating, changing and deleting need ``knowledge:write``.
Any id of another tenant answers exactly as a missing one (404)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from tenantlm.api.deps import json_body, principal, services
from tenantlm.api.openai.chat import USER_HEADER
from tenantlm.api.responses import JSONResponse
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, Principal, TenantContext

router = APIRouter(prefix="/v1/vector_stores", default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=64)]
Order = Literal["asc", "desc"]
Status = Annotated[Literal["in_progress", "completed", "failed", "cancelled"] | None, Query(alias="filter")]


def _reader(who: Principal) -> TenantContext:
    return access.data_plane(who, Permission.KNOWLEDGE_READ)


def _writer(who: Principal) -> TenantContext:
    return access.data_plane(who, Permission.KNOWLEDGE_WRITE)


@router.post("")
async def create_vector_store(request: Request, who: PrincipalDep) -> Any:
    ctx = _writer(who)
    return await services(request).vector_stores.create_store(tenant_id=ctx.tenant_id, body=await json_body(request),
                                                              actor=access.actor(who))


@router.get("")
async def list_vector_stores(request: Request, who: PrincipalDep, limit: Limit = 20, order: Order = "desc",
                             after: Cursor = None, before: Cursor = None) -> Any:
    ctx = _reader(who)
    return await services(request).vector_stores.list_stores(tenant_id=ctx.tenant_id, after=after, before=before,
                                                             limit=limit, order=order)


@router.get("/{store_id}")
async def retrieve_vector_store(store_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _reader(who)
    return await services(request).vector_stores.get_store(tenant_id=ctx.tenant_id, store_id=store_id)


@router.post("/{store_id}")
async def modify_vector_store(store_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _writer(who)
    return await services(request).vector_stores.update_store(tenant_id=ctx.tenant_id, store_id=store_id,
                                                              body=await json_body(request), actor=access.actor(who))


@router.delete("/{store_id}")
async def delete_vector_store(store_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _writer(who)
    return await services(request).vector_stores.delete_store(tenant_id=ctx.tenant_id, store_id=store_id,
                                                              actor=access.actor(who))


@router.post("/{store_id}/search")
async def search_vector_store(store_id: str, request: Request, who: PrincipalDep) -> Any:
    """Hybrid search (dense + BM25, reciprocal rank fusion) of the store's completed files; ``filters`` on the
    files' attributes select first, ``score_threshold`` and ``max_num_results`` cut after. ``rewrite_query`` is
    accepted and does nothing (the query is searched as given)."""
    ctx = _reader(who)
    return await services(request).search.search(ctx=ctx, store_id=store_id, body=await json_body(request),
                                                 end_user=request.headers.get(USER_HEADER))


# --- files ----------------------------------------------------------------------------------------------------------
@router.post("/{store_id}/files")
async def attach_file(store_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _writer(who)
    return await services(request).vector_stores.attach_file(tenant_id=ctx.tenant_id, store_id=store_id,
                                                             body=await json_body(request), actor=access.actor(who))


@router.get("/{store_id}/files")
async def list_store_files(store_id: str, request: Request, who: PrincipalDep, limit: Limit = 20,
                           order: Order = "desc", after: Cursor = None, before: Cursor = None,
                           status: Status = None) -> Any:
    ctx = _reader(who)
    return await services(request).vector_stores.list_files(tenant_id=ctx.tenant_id, store_id=store_id,
                                                            status=status, after=after, before=before, limit=limit,
                                                            order=order)


@router.get("/{store_id}/files/{file_id}")
async def retrieve_store_file(store_id: str, file_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _reader(who)
    return await services(request).vector_stores.get_file(tenant_id=ctx.tenant_id, store_id=store_id,
                                                          file_id=file_id)


@router.post("/{store_id}/files/{file_id}")
async def update_store_file(store_id: str, file_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _writer(who)
    return await services(request).vector_stores.update_file(tenant_id=ctx.tenant_id, store_id=store_id,
                                                             file_id=file_id, body=await json_body(request),
                                                             actor=access.actor(who))


@router.delete("/{store_id}/files/{file_id}")
async def detach_store_file(store_id: str, file_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _writer(who)
    return await services(request).vector_stores.detach_file(tenant_id=ctx.tenant_id, store_id=store_id,
                                                             file_id=file_id, actor=access.actor(who))


@router.get("/{store_id}/files/{file_id}/content")
async def store_file_content(store_id: str, file_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _reader(who)
    return await services(request).vector_stores.file_content(tenant_id=ctx.tenant_id, store_id=store_id,
                                                              file_id=file_id)


# --- file batches -----------------------------------------------------------------------------------------------
@router.post("/{store_id}/file_batches")
async def create_file_batch(store_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _writer(who)
    return await services(request).vector_stores.create_batch(tenant_id=ctx.tenant_id, store_id=store_id,
                                                              body=await json_body(request), actor=access.actor(who))


@router.get("/{store_id}/file_batches/{batch_id}")
async def retrieve_file_batch(store_id: str, batch_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _reader(who)
    return await services(request).vector_stores.get_batch(tenant_id=ctx.tenant_id, store_id=store_id,
                                                           batch_id=batch_id)


@router.post("/{store_id}/file_batches/{batch_id}/cancel")
async def cancel_file_batch(store_id: str, batch_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = _writer(who)
    return await services(request).vector_stores.cancel_batch(tenant_id=ctx.tenant_id, store_id=store_id,
                                                              batch_id=batch_id, actor=access.actor(who))


@router.get("/{store_id}/file_batches/{batch_id}/files")
async def list_batch_files(store_id: str, batch_id: str, request: Request, who: PrincipalDep, limit: Limit = 20,
                           order: Order = "desc", after: Cursor = None, before: Cursor = None,
                           status: Status = None) -> Any:
    ctx = _reader(who)
    return await services(request).vector_stores.batch_files(tenant_id=ctx.tenant_id, store_id=store_id,
                                                             batch_id=batch_id, status=status, after=after,
                                                             before=before, limit=limit, order=order)
