"""Admin routes on a bare FastAPI app, for unit tests: a fixed set of principals behind a fake authenticator, and
an httpx client over ASGI. Each test module brings the services its router reads."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI

from tenantlm.api import errors as api_errors
from tenantlm.errors import AuthenticationFailed
from tenantlm.tenancy.models import (
    PlatformPrincipal,
    Principal,
    Role,
    Tenant,
    TenantContext,
    TenantStatus,
    effective_permissions,
)


def tenant(tenant_id: str, metadata: dict[str, Any] | None = None, *, at: float | None = None) -> Tenant:
    at = time.time() if at is None else at
    return Tenant(id=tenant_id, name=tenant_id, status=TenantStatus.ACTIVE, plan="free", region="local",
                  metadata=metadata or {}, settings={}, allowed_models=None, model_aliases={}, created_at=at,
                  updated_at=at)


def tenant_key(tenant_id: str, role: Role) -> TenantContext:
    return TenantContext(tenant=tenant(tenant_id), key_id=f"k_{tenant_id}_{role.value}", role=role,
                         permissions=effective_permissions(role, None))


# bearer token -> who it authenticates as
PRINCIPALS: dict[str, Principal] = {
    "platform": PlatformPrincipal(key_id="adm_1"),
    "a_admin": tenant_key("ten_a", Role.ADMIN),
    "a_member": tenant_key("ten_a", Role.MEMBER),
    "a_viewer": tenant_key("ten_a", Role.VIEWER),
    "b_admin": tenant_key("ten_b", Role.ADMIN),
}


class FakeAuth:
    async def authenticate(self, authorization: str | None) -> Principal:
        who = PRINCIPALS.get((authorization or "").removeprefix("Bearer "))
        if who is None:
            raise AuthenticationFailed("bad key")
        return who


def auth(who: str) -> dict[str, str]:
    """The headers of a request made as ``who`` (a key of PRINCIPALS)."""
    return {"authorization": f"Bearer {who}"}


@asynccontextmanager
async def route_client(router: APIRouter, services: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client for ``router`` mounted alone, with the product's error handlers and ``services`` as app state."""
    app = FastAPI()
    app.state.services = services
    api_errors.install(app, metrics=None)
    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client
