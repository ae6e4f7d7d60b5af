"""Admin API for tenant content and its keys: the request log, GDPR export, and encryption key rotation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from starlette.responses import Response

from tenantlm.api.admin.protocol import RotateRequest
from tenantlm.api.deps import principal, services
from tenantlm.api.responses import JSONResponse
from tenantlm.observability.logging import request_id_var
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, PlatformPrincipal, Principal

if TYPE_CHECKING:
    from tenantlm.services import Services

router = APIRouter(prefix="/admin/v1/tenants/{tenant_id}", default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]


async def _key_status(svc: Services, tenant_id: str) -> dict[str, Any]:
    versions = await svc.keyring.describe(tenant_id=tenant_id)
    active = [v.version for v in versions if v.state == "active"]
    return {"provider": svc.keyring.kek.name, "active_version": active[0] if active else None,
            "versions": [{"version": v.version, "state": v.state, "kek_ref": v.kek_ref,
                          "created_at": int(v.created_at)} for v in versions]}


@router.get("/requests")
async def list_requests(tenant_id: str, request: Request, who: PrincipalDep,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100, before: float | None = None) -> Any:
    access.on_tenant(who, tenant_id, Permission.LOGS_READ)
    svc = services(request)
    await svc.tenancy.get_tenant(tenant_id=tenant_id)
    rows = await svc.request_log.list(tenant_id=tenant_id, before=before, limit=limit + 1)
    return {"object": "list", "data": rows[:limit], "has_more": len(rows) > limit}


@router.get("/requests/{entry_id}")
async def read_request(tenant_id: str, entry_id: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.LOGS_READ)
    svc = services(request)
    entry = await svc.request_log.read(tenant_id=tenant_id, entry_id=entry_id)
    if isinstance(who, PlatformPrincipal):  # the operator reading a tenant's content is itself an audited event
        await svc.audit.append(actor=access.actor(who), action="request_log.read", tenant_id=tenant_id,
                               request_id=request_id_var.get(), details={"entry_id": entry_id})
    return entry


@router.post("/export")
async def export_tenant(tenant_id: str, request: Request, who: PrincipalDep) -> Response:
    access.on_tenant(who, tenant_id, Permission.DATA_EXPORT)
    archive = await services(request).exporter.export(tenant_id=tenant_id, actor=access.actor(who))
    return Response(archive, media_type="application/zip",
                    headers={"content-disposition": f'attachment; filename="{tenant_id}-export.zip"'})


@router.get("/encryption")
async def encryption_status(tenant_id: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.ENCRYPTION_MANAGE)
    svc = services(request)
    await svc.tenancy.get_tenant(tenant_id=tenant_id)
    return {"object": "tenant.encryption", "tenant_id": tenant_id, **await _key_status(svc, tenant_id)}


@router.post("/encryption/rotate")
async def rotate_keys(tenant_id: str, request: Request, who: PrincipalDep, background: BackgroundTasks,
                      body: RotateRequest | None = None) -> Any:
    access.on_tenant(who, tenant_id, Permission.ENCRYPTION_MANAGE)
    body = body or RotateRequest()
    svc = services(request)
    await svc.tenancy.get_tenant(tenant_id=tenant_id)
    actor, rid = access.actor(who), request_id_var.get()
    if body.target == "key_encryption_key":
        await svc.keyring.rotate_kek(tenant_id=tenant_id)
        await svc.audit.append(actor=actor, action="encryption.kek_rotated", tenant_id=tenant_id, request_id=rid,
                               details={})
    else:
        version = await svc.keyring.rotate_dek(tenant_id=tenant_id)
        await svc.audit.append(actor=actor, action="encryption.dek_rotated", tenant_id=tenant_id, request_id=rid,
                               details={"version": version, "rewrap": body.rewrap})
        if body.rewrap:
            background.add_task(svc.rewrapper.rewrap, tenant_id=tenant_id, actor=actor)
    return {"object": "tenant.encryption", "tenant_id": tenant_id, **await _key_status(svc, tenant_id)}
