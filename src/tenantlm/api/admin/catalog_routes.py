"""Admin API for a tenant's own catalog entries (``/admin/v1/tenants/{id}``): private models and LoRA adapters.

- ``POST|GET /tenants/{id}/models``, ``GET|DELETE /tenants/{id}/models/{name}``: private models.
- ``POST|GET /tenants/{id}/adapters``, ``GET|DELETE /tenants/{id}/adapters/{name}``: adapters.

The operator (a platform key) creates and deletes them: they name providers and upstream deployments. A tenant's
own keys with ``tenant:read`` may list and read them; a foreign tenant id is a 404 like a missing one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from tenantlm.api.admin.protocol import AdapterCreate, TenantModelCreate
from tenantlm.api.deps import principal, services
from tenantlm.api.responses import JSONResponse
from tenantlm.errors import PermissionDenied
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, PlatformPrincipal, Principal

router = APIRouter(prefix="/admin/v1", default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]


def _list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": items, "has_more": False}


def _operator(who: Principal, tenant_id: str) -> None:
    access.on_tenant(who, tenant_id, Permission.TENANT_WRITE)  # a foreign tenant id: 404 like a missing one
    if not isinstance(who, PlatformPrincipal):
        raise PermissionDenied("only the operator (a platform key) manages a tenant's private models and adapters")


@router.post("/tenants/{tenant_id}/models", status_code=201)
async def create_model(tenant_id: str, body: TenantModelCreate, request: Request, who: PrincipalDep) -> Any:
    _operator(who, tenant_id)
    model = await services(request).private_catalog.create_model(tenant_id=tenant_id, body=body.changes(),
                                                                 actor=access.actor(who))
    return model.public()


@router.get("/tenants/{tenant_id}/models")
async def list_models(tenant_id: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.TENANT_READ)
    return _list([m.public() for m in await services(request).private_catalog.list_models(tenant_id=tenant_id)])


@router.get("/tenants/{tenant_id}/models/{name}")
async def get_model(tenant_id: str, name: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.TENANT_READ)
    return (await services(request).private_catalog.get_model(tenant_id=tenant_id, name=name)).public()


@router.delete("/tenants/{tenant_id}/models/{name}")
async def delete_model(tenant_id: str, name: str, request: Request, who: PrincipalDep) -> Any:
    _operator(who, tenant_id)
    await services(request).private_catalog.delete_model(tenant_id=tenant_id, name=name, actor=access.actor(who))
    return {"id": name, "object": "tenant.model.deleted", "deleted": True}


@router.post("/tenants/{tenant_id}/adapters", status_code=201)
async def create_adapter(tenant_id: str, body: AdapterCreate, request: Request, who: PrincipalDep) -> Any:
    _operator(who, tenant_id)
    adapter = await services(request).private_catalog.create_adapter(tenant_id=tenant_id, body=body.changes(),
                                                                     actor=access.actor(who))
    return adapter.public()


@router.get("/tenants/{tenant_id}/adapters")
async def list_adapters(tenant_id: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.TENANT_READ)
    return _list([a.public() for a in await services(request).private_catalog.list_adapters(tenant_id=tenant_id)])


@router.get("/tenants/{tenant_id}/adapters/{name}")
async def get_adapter(tenant_id: str, name: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, Permission.TENANT_READ)
    return (await services(request).private_catalog.get_adapter(tenant_id=tenant_id, name=name)).public()


@router.delete("/tenants/{tenant_id}/adapters/{name}")
async def delete_adapter(tenant_id: str, name: str, request: Request, who: PrincipalDep) -> Any:
    _operator(who, tenant_id)
    await services(request).private_catalog.delete_adapter(tenant_id=tenant_id, name=name, actor=access.actor(who))
    return {"id": name, "object": "tenant.adapter.deleted", "deleted": True}
