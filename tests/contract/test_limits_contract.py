"""Plans and limits storage on every SQL backend: default plans at first start, effective limits, caching."""

from __future__ import annotations

import time
from typing import Any

from tenantlm.storage.sql.engine import Database
from tenantlm.tenancy.limits import DEFAULT_PLANS
from tenantlm.tenancy.limits_service import LimitsService
from tenantlm.tenancy.limits_store import LimitsStore
from tenantlm.tenancy.models import Tenant, TenantStatus
from tenantlm.tenancy.store import TenancyStore


class Audit:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str | None]] = []

    async def append(self, *, actor: str, action: str, tenant_id: str | None, request_id: str | None,
                     details: dict[str, Any]) -> None:
        self.entries.append((action, tenant_id))


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def tenant(tid: str, plan: str) -> Tenant:
    now = time.time()
    return Tenant(id=tid, name=tid, status=TenantStatus.ACTIVE, plan=plan, region="local", metadata={}, settings={},
                  allowed_models=None, model_aliases={}, created_at=now, updated_at=now)


async def test_default_plans_are_created_once_and_never_overwritten(database: Database) -> None:
    svc = LimitsService(store=LimitsStore(database), audit=Audit())
    assert sorted(await svc.ensure_plans()) == ["enterprise", "free", "pro"]
    await svc.put_plan("free", {"limits": {"rpm": 1}}, actor="platform:x")
    assert await svc.ensure_plans() == []
    assert (await svc.get_plan("free")).limits == {"rpm": 1}
    assert (await svc.get_plan("pro")).limits["weight"] == DEFAULT_PLANS["pro"]["limits"]["weight"]


async def test_effective_limits_overlay_and_cache(database: Database) -> None:
    clock = Clock()
    svc = LimitsService(store=LimitsStore(database), audit=Audit(), clock=clock)
    await svc.ensure_plans()
    t = tenant("ten_lim", "pro")
    await TenancyStore(database).insert_tenant(tenant_id=t.id, tenant=t)
    eff = await svc.effective(t)
    assert eff.tenant.rpm == DEFAULT_PLANS["pro"]["limits"]["rpm"] and eff.tenant.weight == 4.0
    assert eff.end_user.empty
    view = await svc.put_tenant(t, {"rpm": 3, "end_user": {"tpm": 10}}, actor="platform:x", platform=True)
    assert view["rpm"] == 3 and view["end_user"]["tpm"] == 10
    other = LimitsService(store=LimitsStore(database), audit=Audit(), clock=clock)  # another replica
    await other.effective(t)
    await svc.put_tenant(t, {"rpm": 4}, actor="platform:x", platform=True)
    assert (await other.effective(t)).tenant.rpm == 3  # cached...
    clock.now += 1.01
    assert (await other.effective(t)).tenant.rpm == 4  # ...for at most the TTL
    free = tenant("ten_lim", "free")  # a plan change is seen at once
    assert (await other.effective(free)).tenant.weight == 1.0
