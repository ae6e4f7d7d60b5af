"""Storage of plans (platform rows), tenant overrides and key sub-limits (tenant rows, scoped like every tenant
query)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import api_keys, plans, tenant_limits


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    description: str
    limits: dict[str, Any]
    created_at: float
    updated_at: float

    def public(self) -> dict[str, Any]:
        return {"object": "plan", "name": self.name, "description": self.description, "limits": self.limits,
                "created_at": int(self.created_at), "updated_at": int(self.updated_at)}


@dataclass(frozen=True, slots=True)
class TenantOverrides:
    limits: dict[str, Any]
    end_user: dict[str, Any] | None


def _plan(r: Any) -> Plan:
    return Plan(r.name, r.description, dict(r.limits or {}), r.created_at, r.updated_at)


class LimitsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- plans (platform) -----------------------------------------------------------------------------------
    async def platform_plans(self) -> list[Plan]:
        async with self.db.platform_tx() as conn:
            return [_plan(r) for r in await conn.execute(sa.select(plans).order_by(plans.c.name))]

    async def platform_insert_plan_if_absent(self, plan: Plan) -> bool:
        async with self.db.platform_tx() as conn:
            found = (await conn.execute(sa.select(plans.c.name).where(plans.c.name == plan.name))).first()
            if found is not None:
                return False
            await conn.execute(plans.insert().values(name=plan.name, description=plan.description,
                                                     limits=plan.limits, created_at=plan.created_at,
                                                     updated_at=plan.updated_at))
            return True

    async def platform_upsert_plan(self, plan: Plan) -> Plan:
        async with self.db.platform_tx() as conn:
            res = await conn.execute(plans.update().where(plans.c.name == plan.name).values(
                description=plan.description, limits=plan.limits, updated_at=plan.updated_at))
            if not res.rowcount:
                await conn.execute(plans.insert().values(name=plan.name, description=plan.description,
                                                         limits=plan.limits, created_at=plan.created_at,
                                                         updated_at=plan.updated_at))
            row = (await conn.execute(sa.select(plans).where(plans.c.name == plan.name))).one()
        return _plan(row)

    async def platform_delete_plan(self, *, name: str) -> bool:
        async with self.db.platform_tx() as conn:
            res = await conn.execute(plans.delete().where(plans.c.name == name))
        return bool(res.rowcount)

    # --- tenant overrides -----------------------------------------------------------------------------------
    async def get_overrides(self, *, tenant_id: str) -> TenantOverrides:
        q = sa.select(tenant_limits).where(tenant_limits.c.tenant_id == tenant_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            return TenantOverrides({}, None)
        return TenantOverrides(dict(row.limits or {}), None if row.end_user_limits is None
                               else dict(row.end_user_limits))

    async def put_overrides(self, *, tenant_id: str, overrides: TenantOverrides, at: float) -> None:
        values = {"limits": overrides.limits, "end_user_limits": overrides.end_user, "updated_at": at}
        cond = tenant_limits.c.tenant_id == tenant_id
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            res = await conn.execute(tenant_limits.update().where(cond).values(**values))
            if not res.rowcount:
                await conn.execute(tenant_limits.insert().values(tenant_id=tenant_id, **values))

    async def set_key_limits(self, *, tenant_id: str, key_id: str, limits: dict[str, Any] | None) -> bool:
        cond = sa.and_(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            res = await conn.execute(api_keys.update().where(cond).values(limits=limits))
        return bool(res.rowcount)
