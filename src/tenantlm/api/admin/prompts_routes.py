"""Admin API for prompt templates (``/admin/v1``).

Base prompts (``/prompts``) are the platform's: platform admin keys create them, add versions, move labels and delete
them; any platform key with ``prompts:read`` and any tenant key that may read its tenant can read them (a tenant
needs the blocks and variables to override). Overrides (``/tenants/{tid}/prompts``) are a tenant's content: the
platform admin or that tenant's admin key; another tenant's id is a 404 like a missing one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from tenantlm.api.admin.prompts_protocol import LabelPut, OverridePut, PromptCreate, PromptVersionCreate
from tenantlm.api.deps import principal, services
from tenantlm.api.responses import JSONResponse
from tenantlm.observability.logging import request_id_var
from tenantlm.prompts.service import PromptsService
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, PlatformPermission, PlatformPrincipal, Principal

router = APIRouter(prefix="/admin/v1", default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]
VersionQ = Annotated[str | None, Query(max_length=16)]
OVERRIDE_RIGHT = Permission.TENANT_WRITE  # a tenant's admin key (and the platform admin)


def _prompts(request: Request) -> PromptsService:
    return services(request).prompts


def _may_read_base(who: Principal) -> None:
    if isinstance(who, PlatformPrincipal):
        access.platform_only(who, PlatformPermission.PROMPTS_READ)
    else:
        access.on_tenant(who, who.tenant_id, Permission.TENANT_READ)


@router.post("/prompts", status_code=201)
async def create_prompt(body: PromptCreate, request: Request, who: PrincipalDep) -> Any:
    """``{"name", "template", "variables"?, "model"?}`` → the prompt at version "1", labelled ``production``."""
    access.platform_only(who, PlatformPermission.PROMPTS_WRITE)
    return await _prompts(request).create(body=body.changes(), actor=access.actor(who),
                                          request_id=request_id_var.get())


@router.get("/prompts")
async def list_prompts(request: Request, who: PrincipalDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                       after: Annotated[str | None, Query(max_length=64)] = None) -> Any:
    _may_read_base(who)
    found = await _prompts(request).list_prompts(limit=limit + 1, after=after)
    return {"object": "list", "data": found[:limit], "has_more": len(found) > limit}


@router.get("/prompts/{prompt_id}")
async def get_prompt(prompt_id: str, request: Request, who: PrincipalDep, version: VersionQ = None) -> Any:
    """The prompt with one version's content: ``version``, else the one labelled ``production``."""
    _may_read_base(who)
    return await _prompts(request).get(prompt_id=prompt_id, version=version)


@router.post("/prompts/{prompt_id}/versions", status_code=201)
async def add_version(prompt_id: str, body: PromptVersionCreate, request: Request, who: PrincipalDep) -> Any:
    """``{"template", "variables"?, "model"?}`` → a new immutable version; no label moves."""
    access.platform_only(who, PlatformPermission.PROMPTS_WRITE)
    return await _prompts(request).add_version(prompt_id=prompt_id, body=body.changes(),
                                               actor=access.actor(who), request_id=request_id_var.get())


@router.put("/prompts/{prompt_id}/labels/{label}")
async def move_label(prompt_id: str, label: str, body: LabelPut, request: Request, who: PrincipalDep) -> Any:
    """``{"version": "2"}``: point ``label`` at that version (audited)."""
    access.platform_only(who, PlatformPermission.PROMPTS_WRITE)
    return await _prompts(request).move_label(prompt_id=prompt_id, label=label, body=body.changes(),
                                              actor=access.actor(who), request_id=request_id_var.get())


@router.delete("/prompts/{prompt_id}")
async def delete_prompt(prompt_id: str, request: Request, who: PrincipalDep) -> Any:
    """The prompt, every version and label, and every tenant's override of it."""
    access.platform_only(who, PlatformPermission.PROMPTS_WRITE)
    return await _prompts(request).delete(prompt_id=prompt_id, actor=access.actor(who),
                                          request_id=request_id_var.get())


async def _tenant(request: Request, who: Principal, tenant_id: str) -> None:
    access.on_tenant(who, tenant_id, OVERRIDE_RIGHT)
    await services(request).tenancy.get_tenant(tenant_id=tenant_id)


@router.get("/tenants/{tenant_id}/prompts")
async def list_overrides(tenant_id: str, request: Request, who: PrincipalDep) -> Any:
    await _tenant(request, who, tenant_id)
    return {"object": "list", "data": await _prompts(request).list_overrides(tenant_id=tenant_id), "has_more": False}


@router.put("/tenants/{tenant_id}/prompts/{prompt_id}")
async def put_override(tenant_id: str, prompt_id: str, body: OverridePut, request: Request, who: PrincipalDep
                       ) -> Any:
    """``{"blocks": {"name": "text"}}`` or ``{"template": …}``: a new override version (the first is labelled
    ``production``; later ones move no label)."""
    await _tenant(request, who, tenant_id)
    return await _prompts(request).put_override(tenant_id=tenant_id, prompt_id=prompt_id,
                                                body=body.changes(), actor=access.actor(who),
                                                request_id=request_id_var.get())


@router.get("/tenants/{tenant_id}/prompts/{prompt_id}")
async def get_override(tenant_id: str, prompt_id: str, request: Request, who: PrincipalDep,
                       version: VersionQ = None) -> Any:
    await _tenant(request, who, tenant_id)
    return await _prompts(request).get_override(tenant_id=tenant_id, prompt_id=prompt_id, version=version)


@router.put("/tenants/{tenant_id}/prompts/{prompt_id}/labels/{label}")
async def move_override_label(tenant_id: str, prompt_id: str, label: str, body: LabelPut, request: Request,
                              who: PrincipalDep) -> Any:
    await _tenant(request, who, tenant_id)
    return await _prompts(request).move_override_label(tenant_id=tenant_id, prompt_id=prompt_id, label=label,
                                                       body=body.changes(), actor=access.actor(who),
                                                       request_id=request_id_var.get())


@router.delete("/tenants/{tenant_id}/prompts/{prompt_id}")
async def delete_override(tenant_id: str, prompt_id: str, request: Request, who: PrincipalDep) -> Any:
    await _tenant(request, who, tenant_id)
    return await _prompts(request).delete_override(tenant_id=tenant_id, prompt_id=prompt_id,
                                                   actor=access.actor(who), request_id=request_id_var.get())
