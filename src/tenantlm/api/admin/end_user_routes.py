"""Admin API for one end user of a tenant: long-term memories, export and erasure.

Who may: a platform admin key, or the tenant's own admin key (``end_users:data``); member and viewer keys 403;
another tenant's key 404 (as a missing tenant). The end user is whatever id the tenant's requests name
(``X-TenantLM-User``, ``safety_identifier``, ``user``); one never seen simply has nothing. Adding and deleting a
memory are audited, and so is an operator (a platform key) reading an end user's memories: tenant content.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request

from tenantlm.api.admin.protocol import MemoryCreate, MemorySearch
from tenantlm.api.deps import principal, services
from tenantlm.api.responses import JSONResponse
from tenantlm.observability.logging import request_id_var
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, PlatformPrincipal, Principal

if TYPE_CHECKING:
    from tenantlm.services import Services

router = APIRouter(prefix="/admin/v1/tenants/{tenant_id}/end_users/{end_user}",
                   default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]


async def _allowed(request: Request, who: Principal, tenant_id: str) -> Services:
    access.on_tenant(who, tenant_id, Permission.END_USER_DATA)
    svc = services(request)
    await svc.tenancy.get_tenant(tenant_id=tenant_id)
    return svc


async def _audit(svc: Services, who: Principal, action: str, tenant_id: str, **details: Any) -> None:
    await svc.audit.append(actor=access.actor(who), action=action, tenant_id=tenant_id,
                           request_id=request_id_var.get(), details=details)


@router.get("/memories")
async def list_memories(tenant_id: str, end_user: str, request: Request, who: PrincipalDep) -> Any:
    svc = await _allowed(request, who, tenant_id)
    found = await svc.memories.list_memories(tenant_id=tenant_id, end_user=end_user)
    if isinstance(who, PlatformPrincipal):
        await _audit(svc, who, "memories.read", tenant_id, end_user=end_user, count=len(found))
    return {"object": "list", "data": [m.public() for m in found], "has_more": False}


@router.post("/memories")
async def add_memory(tenant_id: str, end_user: str, body: MemoryCreate, request: Request,
                     who: PrincipalDep) -> Any:
    """Remember a fact; a duplicate of one already stored answers 200 with that one, a new one 201."""
    svc = await _allowed(request, who, tenant_id)
    done = await svc.memories.remember(tenant_id=tenant_id, end_user=end_user, text=body.text,
                                       source=body.source or "admin")
    if done.created:
        await _audit(svc, who, "memory.added", tenant_id, end_user=end_user, memory_id=done.memory.id)
    return JSONResponse(done.memory.public(), status_code=201 if done.created else 200)


@router.post("/memories/search")
async def search_memories(tenant_id: str, end_user: str, body: MemorySearch, request: Request,
                          who: PrincipalDep) -> Any:
    svc = await _allowed(request, who, tenant_id)
    found = await svc.memories.recall(tenant_id=tenant_id, end_user=end_user, query=body.query, k=body.k)
    if isinstance(who, PlatformPrincipal):
        await _audit(svc, who, "memories.read", tenant_id, end_user=end_user, count=len(found))
    return {"object": "list", "data": [m.public() for m in found], "has_more": False}


@router.delete("/memories/{memory_id}")
async def delete_memory(tenant_id: str, end_user: str, memory_id: str, request: Request, who: PrincipalDep) -> Any:
    svc = await _allowed(request, who, tenant_id)
    await svc.memories.delete(tenant_id=tenant_id, end_user=end_user, memory_id=memory_id)
    await _audit(svc, who, "memory.deleted", tenant_id, end_user=end_user, memory_id=memory_id)
    return {"id": memory_id, "object": "memory.deleted", "deleted": True}


@router.post("/export")
async def export_end_user(tenant_id: str, end_user: str, request: Request, who: PrincipalDep) -> Any:
    svc = await _allowed(request, who, tenant_id)
    return await svc.end_user_eraser.export(tenant_id=tenant_id, end_user=end_user, actor=access.actor(who))


@router.delete("")
async def erase_end_user(tenant_id: str, end_user: str, request: Request, who: PrincipalDep) -> Any:
    """Erase everything of the end user (memories, stored responses, request-log entries, their record); audited."""
    svc = await _allowed(request, who, tenant_id)
    return await svc.end_user_eraser.erase(tenant_id=tenant_id, end_user=end_user, actor=access.actor(who))
