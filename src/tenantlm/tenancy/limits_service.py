"""Plans and limits as a service: effective limits for the request path (cached, no database round trip per
request), and the admin operations behind ``/admin/v1/plans`` and ``/admin/v1/tenants/{id}/limits``.

Who may change what: plans and a tenant's own limits are the operator's (platform admin keys). A tenant's admin may
read its limits and set the sub-limits that only narrow them (per key, per end user). Every change is audited.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenantlm.cache import TtlCache
from tenantlm.errors import InvalidRequest, NotFound, PermissionDenied
from tenantlm.observability.logging import request_id_var
from tenantlm.tenancy.limits import (
    DEFAULT_PLANS,
    SUB_FIELDS,
    TENANT_FIELDS,
    SubLimits,
    TenantLimits,
    check_overrides,
    sub_limits,
    tenant_limits,
)
from tenantlm.tenancy.limits_store import LimitsStore, Plan, TenantOverrides
from tenantlm.tenancy.models import Tenant
from tenantlm.tenancy.service import AuditSink

_PLAN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Effective:
    tenant: TenantLimits
    end_user: SubLimits


class LimitsService:
    def __init__(self, *, store: LimitsStore, audit: AuditSink, ttl_s: float = 1.0, max_entries: int = 100_000,
                 seed_plans: dict[str, dict[str, Any]] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.audit = audit
        self.seed_plans = seed_plans if seed_plans is not None else DEFAULT_PLANS
        self.wall = wall
        self._plans: TtlCache[str, dict[str, Plan]] = TtlCache(ttl_s=ttl_s, clock=clock, max_entries=1)
        # keyed by (tenant id, plan name): a tenant moved to another plan misses at once
        self._effective: TtlCache[tuple[str, str], Effective] = TtlCache(ttl_s=ttl_s, clock=clock,
                                                                         max_entries=max_entries)

    # --- start-up ---------------------------------------------------------------------------------------------
    async def ensure_plans(self) -> list[str]:
        """Create the seed plans that do not exist yet (never overwrites an operator's edits)."""
        created = []
        for name, spec in self.seed_plans.items():
            limits = check_overrides(spec.get("limits", {}), allowed=TENANT_FIELDS, param=f"plans.{name}")
            now = self.wall()
            if await self.store.platform_insert_plan_if_absent(
                    Plan(name, str(spec.get("description", "")), limits, now, now)):
                created.append(name)
        self._plans.clear()
        return created

    # --- the request path -------------------------------------------------------------------------------------
    async def effective(self, tenant: Tenant) -> Effective:
        return await self._effective.get_or_load((tenant.id, tenant.plan), lambda: self._load(tenant))

    async def _load(self, tenant: Tenant) -> Effective:
        return (await self._read(tenant))[0]

    async def _read(self, tenant: Tenant) -> tuple[Effective, TenantOverrides]:
        plan = (await self._all_plans()).get(tenant.plan)
        overrides = await self.store.get_overrides(tenant_id=tenant.id)
        value = Effective(tenant_limits(plan.limits if plan else {}, overrides.limits), sub_limits(overrides.end_user))
        return value, overrides

    async def _all_plans(self) -> dict[str, Plan]:
        return await self._plans.get_or_load("all", self._load_plans)

    async def _load_plans(self) -> dict[str, Plan]:
        return {p.name: p for p in await self.store.platform_plans()}

    async def has_plan(self, name: str) -> bool:
        if name in await self._all_plans():
            return True
        self._plans.clear()  # created moments ago on another replica?
        return name in await self._all_plans()

    # --- plans ------------------------------------------------------------------------------------------------
    async def list_plans(self) -> list[Plan]:
        return list((await self._reload()).values())

    async def get_plan(self, name: str) -> Plan:
        plan = (await self._reload()).get(name)
        if plan is None:
            raise NotFound(f"no plan {name!r}", param="plan")
        return plan

    async def put_plan(self, name: str, body: dict[str, Any], *, actor: str) -> Plan:
        if not _PLAN_NAME.fullmatch(name):
            raise InvalidRequest("plan names are 1-64 characters of a-z, 0-9, '_' and '-'", param="name")
        unknown = set(body) - {"description", "limits"}
        if unknown:
            raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0])
        limits = check_overrides(body.get("limits", {}), allowed=TENANT_FIELDS, param="limits")
        description = body.get("description", "")
        if not isinstance(description, str) or len(description) > 500:
            raise InvalidRequest("description must be a string of at most 500 characters", param="description")
        now = self.wall()
        plan = await self.store.platform_upsert_plan(Plan(name, description, limits, now, now))
        self._plans.clear()
        self._effective.clear()
        await self._audit(actor, "plan.updated", None, plan=name, limits=limits)
        return plan

    async def _reload(self) -> dict[str, Plan]:
        self._plans.clear()
        return await self._all_plans()

    # --- a tenant's limits ------------------------------------------------------------------------------------
    async def view(self, tenant: Tenant) -> dict[str, Any]:
        """The effective limits read fresh (one read of the overrides), also refreshing the request path's cache."""
        value, overrides = await self._read(tenant)
        self._effective.put((tenant.id, tenant.plan), value)
        return {"object": "tenant.limits", "tenant_id": tenant.id, "plan": tenant.plan, **value.tenant.public(),
                "overrides": overrides.limits, "end_user": value.end_user.public()}

    async def put_tenant(self, tenant: Tenant, body: Any, *, actor: str, platform: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object of limits")
        body = dict(body)
        end_user = body.pop("end_user", None)
        if body and not platform:
            raise PermissionDenied("a tenant's limits are set by the platform operator; tenant admins may set "
                                   "end_user sub-limits and per-key limits only")
        changes = check_overrides(body, allowed=TENANT_FIELDS)
        current = await self.store.get_overrides(tenant_id=tenant.id)
        new_end_user = current.end_user
        if end_user is not None:
            new_end_user = {**(current.end_user or {}),
                            **check_overrides(end_user, allowed=SUB_FIELDS, param="end_user")}
        await self.store.put_overrides(tenant_id=tenant.id, at=self.wall(),
                                       overrides=TenantOverrides({**current.limits, **changes}, new_end_user))
        self._effective.evict(lambda cached, _value: cached[0] == tenant.id)
        await self._audit(actor, "limits.updated", tenant.id, limits=changes, end_user=end_user)
        return await self.view(tenant)

    async def put_key(self, *, tenant_id: str, key_id: str, body: Any, actor: str) -> dict[str, Any]:
        limits = check_overrides(body, allowed=SUB_FIELDS)
        clean = {k: v for k, v in limits.items() if v is not None} or None
        if not await self.store.set_key_limits(tenant_id=tenant_id, key_id=key_id, limits=clean):
            raise NotFound(f"no key {key_id!r}", param="key_id")
        await self._audit(actor, "limits.key_updated", tenant_id, key_id=key_id, limits=limits)
        return {"object": "api_key.limits", "tenant_id": tenant_id, "key_id": key_id,
                **sub_limits(clean).public()}

    async def _audit(self, actor: str, action: str, tenant_id: str | None, **details: Any) -> None:
        await self.audit.append(actor=actor, action=action, tenant_id=tenant_id, request_id=request_id_var.get(),
                                details=details)
