"""Admin API (``/admin/v1``): tenants, their keys and end users, and the model catalog.

Who may do what is decided in ``tenancy.access``: platform admin keys may do everything; a tenant's admin key manages
its own tenant only; foreign tenant ids answer 404, missing rights 403.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from tenantlm.api.deps import json_body, principal, services
from tenantlm.api.responses import JSONResponse
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, PlatformPrincipal, Principal
from tenantlm.tenancy.service import EDITABLE, TENANT_ADMIN_EDITABLE

router = APIRouter(prefix="/admin/v1", default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]


def _list(items: list[dict[str, Any]], has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "data": items, "has_more": has_more}


@router.get("/me")
async def whoami(who: PrincipalDep) -> Any:
    if isinstance(who, PlatformPrincipal):
        return {"object": "principal", "kind": "platform_admin", "key_id": who.key_id}
    return {"object": "principal", "kind": "tenant_key", "key_id": who.key_id, "tenant_id": who.tenant_id,
            "role": who.role.value, "permissions": sorted(p.value for p in who.permissions)}


@router.post("/tenants", status_code=201)
async def create_tenant(request: Request, who: PrincipalDep) -> Any:
    access.platform_only(who, "create tenants")
    tenant = await services(request).tenancy.create_tenant(await json_body(request), actor=access.actor(who))
    return tenant.public()


@router.get("/tenants")
async def list_tenants(request: Request, who: PrincipalDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                       after: str | None = None) -> Any:
    tenancy = services(request).tenancy
    if isinstance(who, PlatformPrincipal):
        found = await tenancy.list_tenants(limit=limit + 1, after=after)
        return _list([t.public() for t in found[:limit]], has_more=len(found) > limit)
    access.on_tenant(who, who.tenant_id, Permission.TENANT_READ)
    return _list([(await tenancy.get_tenant(tenant_id=who.tenant_id)).public()])


@router.get("/tenants/{tenant_id}")
async def get_tenant(tenant_id: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.TENANT_READ)
    return (await services(request).tenancy.get_tenant(tenant_id=tenant_id)).public()


@router.patch("/tenants/{tenant_id}")
async def update_tenant(tenant_id: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.TENANT_WRITE)
    body = await json_body(request)
    tenancy = services(request).tenancy
    allowed = EDITABLE if isinstance(who, PlatformPrincipal) else TENANT_ADMIN_EDITABLE
    tenant = await tenancy.update_tenant(tenant_id=tenant_id, body=body, actor=access.actor(who), allowed=allowed)
    return tenant.public()


@router.delete("/tenants/{tenant_id}")
async def delete_tenant(tenant_id: str, request: Request, who: PrincipalDep, confirm: str | None = None) -> Any:
    access.on_tenant(who, tenant_id, Permission.TENANT_WRITE)
    access.platform_only(who, "delete tenants")
    if confirm is None and (await request.body()).strip():
        body = await json_body(request)
        confirm = body.get("confirm", body.get("confirmation"))
    await services(request).eraser.erase(tenant_id=tenant_id, confirm=confirm, actor=access.actor(who))
    return {"id": tenant_id, "object": "tenant.deleted", "deleted": True, "keys_shredded": True}


@router.post("/tenants/{tenant_id}/keys", status_code=201)
async def create_key(tenant_id: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.KEYS_WRITE)
    created = await services(request).tenancy.create_key(tenant_id=tenant_id, body=await json_body(request),
                                                         actor=access.actor(who))
    return created.public()


@router.get("/tenants/{tenant_id}/keys")
async def list_keys(tenant_id: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.KEYS_READ)
    return _list([k.public() for k in await services(request).tenancy.list_keys(tenant_id=tenant_id)])


@router.get("/tenants/{tenant_id}/keys/{key_id}")
async def get_key(tenant_id: str, key_id: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.KEYS_READ)
    return (await services(request).tenancy.get_key(tenant_id=tenant_id, key_id=key_id)).public()


@router.delete("/tenants/{tenant_id}/keys/{key_id}")
async def revoke_key(tenant_id: str, key_id: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.KEYS_WRITE)
    revoked = await services(request).tenancy.revoke_key(tenant_id=tenant_id, key_id=key_id, actor=access.actor(who))
    return revoked.public()


@router.get("/tenants/{tenant_id}/end_users")
async def list_end_users(tenant_id: str, request: Request, who: PrincipalDep,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    access.on_tenant(who, tenant_id, Permission.TENANT_READ)
    svc = services(request)
    await svc.tenancy.get_tenant(tenant_id=tenant_id)
    await svc.end_users.flush()
    return _list(await svc.tenancy.store.list_end_users(tenant_id=tenant_id, limit=limit))


@router.get("/models")
async def list_catalog(request: Request, who: PrincipalDep) -> Any:
    access.platform_only(who, "read the model catalog")
    models = services(request).settings.models
    return _list([{"id": m.name, "object": "model", **m.model_dump(exclude={"name"})} for m in models])
