"""Admin API for the audit trail (``/admin/v1``): the platform log, a tenant's own entries, and JSON-lines export.

The platform log is for platform admin keys only. A tenant's entries are for that tenant's *admin* keys (the
``audit:read`` permission, which only the admin role holds); members and viewers get 403, other tenants 404.
Every export is itself recorded (``audit.exported``).

A read that names a tenant (``/tenants/{id}/audit``, or ``tenant_id=`` on the platform log) shows that tenant's own
chain: ``seq``, ``prev_hash`` and ``hash`` are the tenant's (``"chain": "tenant"``), and ``after`` is a tenant seq. No
platform seq or hash appears in it, so the volume and hashes of other tenants never show. A platform read without a
tenant shows the platform chain (``"chain": "platform"``) with each entry's tenant fields alongside.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import StreamingResponse

from tenantlm.api.deps import principal, services
from tenantlm.api.responses import JSONResponse
from tenantlm.audit.service import AuditLog
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, PlatformPermission, Principal

router = APIRouter(prefix="/admin/v1", default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]
AfterQ = Annotated[int, Query(ge=0, description="Return entries with a seq greater than this (a tenant's own seq when "
                                                 "the read names a tenant).")]
LimitQ = Annotated[int, Query(ge=1, le=1000)]
ActionQ = Annotated[str | None, Query(min_length=1, max_length=100)]
TenantQ = Annotated[str | None, Query(min_length=1, max_length=40)]
NDJSON = "application/x-ndjson"


def _tenant_admin(who: Principal, tenant_id: str) -> None:
    access.on_tenant(who, tenant_id, Permission.AUDIT_READ)


def _audit(request: Request) -> AuditLog:
    return services(request).audit


async def _page(audit: AuditLog, *, tenant_id: str | None, after: int, limit: int, action: str | None) -> Any:
    found = await audit.read(tenant_id=tenant_id, after_seq=after, limit=limit + 1, action=action)
    return {"object": "list", "data": found[:limit], "has_more": len(found) > limit}


async def _export(request: Request, who: Principal, *, tenant_id: str | None, after: int, action: str | None,
                  scope: str) -> StreamingResponse:
    audit = _audit(request)
    await audit.append(actor=access.actor(who), action="audit.exported", tenant_id=tenant_id,
                       request_id=request.scope.get("state", {}).get("request_id"),
                       details={"scope": scope, "after": after, "action": action})
    lines = audit.export_jsonl(tenant_id=tenant_id, after_seq=after, action=action)
    first = await anext(lines, b"")  # the first page is read here, so a database error is a clean 503

    async def body() -> AsyncIterator[bytes]:
        if first:
            yield first
            async for line in lines:
                yield line

    name = f"audit-{tenant_id or 'platform'}.jsonl"
    return StreamingResponse(body(), media_type=NDJSON,
                             headers={"content-disposition": f'attachment; filename="{name}"'})


@router.get("/audit")
async def list_audit(request: Request, who: PrincipalDep, after: AfterQ = 0, limit: LimitQ = 100,
                     action: ActionQ = None, tenant_id: TenantQ = None) -> Any:
    access.platform_only(who, PlatformPermission.AUDIT_ALL)
    return await _page(_audit(request), tenant_id=tenant_id, after=after, limit=limit, action=action)


@router.get("/audit/export")
async def export_audit(request: Request, who: PrincipalDep, after: AfterQ = 0, action: ActionQ = None,
                       tenant_id: TenantQ = None) -> StreamingResponse:
    access.platform_only(who, PlatformPermission.AUDIT_ALL)
    return await _export(request, who, tenant_id=tenant_id, after=after, action=action, scope="platform")


@router.get("/tenants/{tenant_id}/audit")
async def list_tenant_audit(tenant_id: str, request: Request, who: PrincipalDep, after: AfterQ = 0,
                            limit: LimitQ = 100, action: ActionQ = None) -> Any:
    _tenant_admin(who, tenant_id)
    return await _page(_audit(request), tenant_id=tenant_id, after=after, limit=limit, action=action)


@router.get("/tenants/{tenant_id}/audit/export")
async def export_tenant_audit(tenant_id: str, request: Request, who: PrincipalDep, after: AfterQ = 0,
                              action: ActionQ = None) -> StreamingResponse:
    _tenant_admin(who, tenant_id)
    return await _export(request, who, tenant_id=tenant_id, after=after, action=action, scope="tenant")
