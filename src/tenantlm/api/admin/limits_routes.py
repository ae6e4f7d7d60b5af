"""Admin API for plans and limits (``/admin/v1``).

- ``GET /plans``, ``GET|PUT /plans/{name}``: platform admin keys only.
- ``GET|PUT /tenants/{id}/limits``: the effective limits (plan overlaid with the tenant's overrides). PUT merges the
  given fields into the overrides (``null`` = unlimited for that field) and answers with the effective limits. The
  operator sets tenant limits; a tenant admin may send only ``end_user`` (sub-limits for each of its end users).
- ``GET|PUT /tenants/{id}/keys/{key_id}/limits``: per-key sub-limits (tenant admin or operator).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from tenantlm.api.admin.protocol import PlanPut, SubLimitsBody, TenantLimitsPut
from tenantlm.api.deps import principal, services
from tenantlm.api.responses import JSONResponse
from tenantlm.tenancy import access
from tenantlm.tenancy.limits import sub_limits
from tenantlm.tenancy.models import Permission, PlatformPermission, PlatformPrincipal, Principal

router = APIRouter(prefix="/admin/v1", default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]


@router.get("/plans")
async def list_plans(request: Request, who: PrincipalDep) -> Any:
    access.platform_only(who, PlatformPermission.PLANS_READ)
    plans = await services(request).limits.list_plans()
    return {"object": "list", "data": [p.public() for p in plans], "has_more": False}


@router.get("/plans/{name}")
async def get_plan(name: str, request: Request, who: PrincipalDep) -> Any:
    access.platform_only(who, PlatformPermission.PLANS_READ)
    return (await services(request).limits.get_plan(name)).public()


@router.put("/plans/{name}")
async def put_plan(name: str, body: PlanPut, request: Request, who: PrincipalDep) -> Any:
    access.platform_only(who, PlatformPermission.PLANS_WRITE)
    plan = await services(request).limits.put_plan(name, body.changes(), actor=access.actor(who))
    return plan.public()


@router.get("/tenants/{tenant_id}/limits")
async def get_limits(tenant_id: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.LIMITS_READ)
    svc = services(request)
    return await svc.limits.view(await svc.tenancy.get_tenant(tenant_id=tenant_id))


@router.put("/tenants/{tenant_id}/limits")
async def put_limits(tenant_id: str, body: TenantLimitsPut, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.LIMITS_WRITE)
    svc = services(request)
    tenant = await svc.tenancy.get_tenant(tenant_id=tenant_id)
    return await svc.limits.put_tenant(tenant, body.changes(), actor=access.actor(who),
                                       platform=isinstance(who, PlatformPrincipal))


@router.get("/tenants/{tenant_id}/keys/{key_id}/limits")
async def get_key_limits(tenant_id: str, key_id: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.LIMITS_READ)
    key = await services(request).tenancy.get_key(tenant_id=tenant_id, key_id=key_id)
    return {"object": "api_key.limits", "tenant_id": tenant_id, "key_id": key_id,
            **sub_limits(key.limits).public()}


@router.put("/tenants/{tenant_id}/keys/{key_id}/limits")
async def put_key_limits(tenant_id: str, key_id: str, body: SubLimitsBody, request: Request,
                         who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.LIMITS_WRITE)
    svc = services(request)
    out = await svc.limits.put_key(tenant_id=tenant_id, key_id=key_id, body=body.changes(),
                                   actor=access.actor(who))
    svc.auth.invalidate_key(key_id)
    return out
