"""Admin API (``/admin/v1``): tenants, their keys and end users, platform keys, and the model catalog.

Who may do what is decided in ``tenancy.access``: platform admin keys may do everything; a tenant's admin key manages
its own tenant only; foreign tenant ids answer 404, missing rights 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from tenantlm.api.admin.protocol import (
    KeyCreate,
    PlatformKeyCreate,
    TenantCreate,
    TenantDelete,
    TenantTier,
    TenantUpdate,
)
from tenantlm.api.deps import principal, services
from tenantlm.api.responses import JSONResponse
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, PlatformPermission, PlatformPrincipal, Principal, Tenant
from tenantlm.tenancy.service import EDITABLE, TENANT_ADMIN_EDITABLE

if TYPE_CHECKING:
    from tenantlm.services import Services

router = APIRouter(prefix="/admin/v1", default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]


def _tenant(svc: Services, tenant: Tenant) -> dict[str, Any]:
    """The tenant object, with the region of its content's storage location (null: an untagged deployment) and
    the progress of its tier move (null when none ran since the server started)."""
    return {**tenant.public(), "storage_region": tenant.storage_region or svc.settings.storage_region,
            "tier_move": svc.tiers.progress(tenant.id)}


def _list(items: list[dict[str, Any]], has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "data": items, "has_more": has_more}


@router.get("/me")
async def whoami(who: PrincipalDep) -> Any:
    if isinstance(who, PlatformPrincipal):
        return {"object": "principal", "kind": "platform_key", "key_id": who.key_id, "role": who.role.value}
    return {"object": "principal", "kind": "tenant_key", "key_id": who.key_id, "tenant_id": who.tenant_id,
            "role": who.role.value, "permissions": sorted(p.value for p in who.permissions)}


@router.post("/tenants", status_code=201)
async def create_tenant(body: TenantCreate, request: Request, who: PrincipalDep) -> Any:
    access.platform_only(who, PlatformPermission.TENANTS_CREATE)
    svc = services(request)
    return _tenant(svc, await svc.tenancy.create_tenant(body.changes(), actor=access.actor(who)))


@router.get("/tenants")
async def list_tenants(request: Request, who: PrincipalDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                       after: str | None = None) -> Any:
    svc = services(request)
    if isinstance(who, PlatformPrincipal):
        access.platform_only(who, PlatformPermission.TENANTS_LIST)
        found = await svc.tenancy.list_tenants(limit=limit + 1, after=after)
        return _list([_tenant(svc, t) for t in found[:limit]], has_more=len(found) > limit)
    access.on_tenant(who, who.tenant_id, Permission.TENANT_READ)
    return _list([_tenant(svc, await svc.tenancy.get_tenant(tenant_id=who.tenant_id))])


@router.get("/tenants/{tenant_id}")
async def get_tenant(tenant_id: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.TENANT_READ)
    svc = services(request)
    return _tenant(svc, await svc.tenancy.get_tenant(tenant_id=tenant_id))


@router.patch("/tenants/{tenant_id}")
async def update_tenant(tenant_id: str, body: TenantUpdate, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.TENANT_WRITE)
    svc = services(request)
    allowed = EDITABLE if isinstance(who, PlatformPrincipal) else TENANT_ADMIN_EDITABLE
    tenant = await svc.tenancy.update_tenant(tenant_id=tenant_id, body=body.changes(), actor=access.actor(who),
                                             allowed=allowed)
    return _tenant(svc, tenant)


@router.post("/tenants/{tenant_id}/tier", status_code=202)
async def move_tenant(tenant_id: str, body: TenantTier, request: Request, who: PrincipalDep) -> Any:
    """Move the tenant's content to ``tier`` (pool or silo) and/or to the storage location of ``storage_region``,
    online; the tenant object's ``tier_move`` shows the progress, and ``tier`` and ``storage_region`` where the
    content is once the move is done."""
    access.on_tenant(who, tenant_id, Permission.TENANT_WRITE)
    access.platform_only(who, PlatformPermission.TENANTS_TIER)
    svc = services(request)
    where = {} if body.storage_region is None else {"storage_region": body.storage_region}
    await svc.tiers.start_move(tenant_id=tenant_id, tier=body.tier, reserved_share=body.reserved_share,
                               actor=access.actor(who), **where)
    return _tenant(svc, await svc.tenancy.get_tenant(tenant_id=tenant_id))


@router.delete("/tenants/{tenant_id}")
async def delete_tenant(tenant_id: str, request: Request, who: PrincipalDep, confirm: str | None = None,
                        body: TenantDelete | None = None) -> Any:
    """Confirm with ``confirm`` (the tenant's id, or true) in the query or the JSON body."""
    access.on_tenant(who, tenant_id, Permission.TENANT_WRITE)
    access.platform_only(who, PlatformPermission.TENANTS_DELETE)
    given: str | bool | None = confirm if confirm is not None else (body.confirm if body is not None else None)
    await services(request).eraser.erase(tenant_id=tenant_id, confirm=given, actor=access.actor(who))
    return {"id": tenant_id, "object": "tenant.deleted", "deleted": True, "keys_shredded": True}


@router.post("/tenants/{tenant_id}/keys", status_code=201)
async def create_key(tenant_id: str, body: KeyCreate, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.KEYS_WRITE)
    created = await services(request).tenancy.create_key(tenant_id=tenant_id, body=body.changes(),
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
    access.platform_only(who, PlatformPermission.CATALOG_READ)
    models = services(request).settings.models
    return _list([{"id": m.name, "object": "model", **m.model_dump(exclude={"name"})} for m in models])


@router.post("/platform-keys", status_code=201)
async def create_platform_key(body: PlatformKeyCreate, request: Request, who: PrincipalDep) -> Any:
    """A platform key with a role; its secret (``key``) is in this answer only."""
    access.platform_only(who, PlatformPermission.PLATFORM_KEYS_WRITE)
    created = await services(request).tenancy.create_platform_key(name=body.name, role=body.role,
                                                                   actor=access.actor(who))
    return created.public()


@router.get("/platform-keys")
async def list_platform_keys(request: Request, who: PrincipalDep) -> Any:
    access.platform_only(who, PlatformPermission.PLATFORM_KEYS_READ)
    return _list([k.public() for k in await services(request).tenancy.list_platform_keys()])


@router.delete("/platform-keys/{key_id}")
async def revoke_platform_key(key_id: str, request: Request, who: PrincipalDep) -> Any:
    """Refused at once on this replica, on the others within the key cache's TTL (1 s by default)."""
    access.platform_only(who, PlatformPermission.PLATFORM_KEYS_WRITE)
    return (await services(request).tenancy.revoke_platform_key(key_id=key_id, actor=access.actor(who))).public()
