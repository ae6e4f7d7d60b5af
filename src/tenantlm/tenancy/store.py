"""Tenancy storage over SQL. Every tenant method takes ``tenant_id`` as a keyword and scopes each query by it, inside
``Database.tenant_tx`` (which is also what Postgres row-level security checks). Platform methods are few and named
``platform_*``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tenantlm.errors import Conflict
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import admin_keys, api_keys, end_users, tenants
from tenantlm.tenancy.keys import KeyKind
from tenantlm.tenancy.models import AdminKey, ApiKey, PlatformRole, Role, Tenant, TenantStatus


def _tenant(row: Any) -> Tenant:
    return Tenant(
        id=row.id, name=row.name, status=TenantStatus(row.status), plan=row.plan, region=row.region,
        metadata=dict(row.metadata or {}), settings=dict(row.settings or {}),
        allowed_models=None if row.allowed_models is None else list(row.allowed_models),
        model_aliases=dict(row.model_aliases or {}), created_at=row.created_at, updated_at=row.updated_at,
        billing=dict(row.billing or {}), tier=row.tier, reserved_share=row.reserved_share,
        storage_region=row.storage_region,
        allowed_regions=None if row.allowed_regions is None else list(row.allowed_regions),
    )


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id, tenant_id=row.tenant_id, name=row.name, role=Role(row.role),
        scopes=None if row.scopes is None else list(row.scopes), secret_hash=bytes(row.secret_hash),
        hint=row.hint, created_at=row.created_at, expires_at=row.expires_at, revoked_at=row.revoked_at,
        last_used_at=row.last_used_at, limits=None if row.limits is None else dict(row.limits),
    )


def _admin_key(row: Any) -> AdminKey:
    return AdminKey(id=row.id, name=row.name, role=PlatformRole(row.role), secret_hash=bytes(row.secret_hash),
                    hint=row.hint, created_at=row.created_at, revoked_at=row.revoked_at,
                    last_used_at=row.last_used_at)


def _tenant_values(t: Tenant) -> dict[str, Any]:
    return {
        "id": t.id, "name": t.name, "status": t.status.value, "plan": t.plan, "region": t.region,
        "metadata": t.metadata, "settings": t.settings, "allowed_models": t.allowed_models,
        "model_aliases": t.model_aliases, "created_at": t.created_at, "updated_at": t.updated_at,
        "billing": t.billing, "allowed_regions": t.allowed_regions, "tier": t.tier, "reserved_share": t.reserved_share,
        "storage_region": t.storage_region,
    }


class TenancyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- platform scope -------------------------------------------------------------------------------------
    async def platform_list_tenants(self, *, limit: int, after: str | None) -> list[Tenant]:
        q = sa.select(tenants).order_by(tenants.c.id).limit(limit)
        if after:
            q = q.where(tenants.c.id > after)
        async with self.db.platform_tx() as conn:
            return [_tenant(r) for r in await conn.execute(q)]

    async def platform_key_for_auth(self, *, key_id: str) -> tuple[ApiKey, Tenant] | None:
        async with self.db.platform_tx() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
            if row is None:
                return None
            trow = (await conn.execute(sa.select(tenants).where(tenants.c.id == row.tenant_id))).one()
        return _key(row), _tenant(trow)

    async def platform_admin_key(self, *, key_id: str) -> AdminKey | None:
        async with self.db.platform_tx() as conn:
            row = (await conn.execute(sa.select(admin_keys).where(admin_keys.c.id == key_id))).first()
        return None if row is None else _admin_key(row)

    async def platform_key_ids(self, *, created_since: float | None) -> list[tuple[KeyKind, str, float]]:
        """(kind, id, created_at) of every stored key, tenant and platform, or of those created since a time."""
        tenant_q = sa.select(api_keys.c.id, api_keys.c.created_at)
        admin_q = sa.select(admin_keys.c.id, admin_keys.c.created_at)
        if created_since is not None:
            tenant_q = tenant_q.where(api_keys.c.created_at >= created_since)
            admin_q = admin_q.where(admin_keys.c.created_at >= created_since)
        out: list[tuple[KeyKind, str, float]] = []
        async with self.db.platform_tx() as conn:
            out.extend(("tenant", r.id, r.created_at) for r in await conn.execute(tenant_q))
            out.extend(("admin", r.id, r.created_at) for r in await conn.execute(admin_q))
        return out

    async def platform_count_admin_keys(self) -> int:
        async with self.db.platform_tx() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(admin_keys))).scalar_one())

    async def platform_insert_admin_key(self, key: AdminKey) -> None:
        async with self.db.platform_tx() as conn:
            await conn.execute(admin_keys.insert().values(
                id=key.id, name=key.name, role=key.role.value, secret_hash=key.secret_hash, hint=key.hint,
                created_at=key.created_at))

    async def platform_list_admin_keys(self) -> list[AdminKey]:
        async with self.db.platform_tx() as conn:
            return [_admin_key(r) for r in await conn.execute(sa.select(admin_keys).order_by(admin_keys.c.created_at))]

    async def platform_revoke_admin_key(self, *, key_id: str, at: float) -> AdminKey | None:
        async with self.db.platform_tx() as conn:
            await conn.execute(admin_keys.update().where(admin_keys.c.id == key_id, admin_keys.c.revoked_at.is_(None))
                               .values(revoked_at=at))
            row = (await conn.execute(sa.select(admin_keys).where(admin_keys.c.id == key_id))).first()
        return None if row is None else _admin_key(row)

    async def platform_touch_keys(self, used: Mapping[str, float]) -> None:
        """Record last-use times (tenant and platform keys), batched off the request path."""
        if not used:
            return
        async with self.db.platform_tx() as conn:
            for key_id, at in used.items():
                await conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=at))
                await conn.execute(admin_keys.update().where(admin_keys.c.id == key_id).values(last_used_at=at))

    async def platform_placements(self) -> list[tuple[str, str, str | None]]:
        """(id, tier, storage region) of the tenants whose content lives elsewhere than the home database's pool."""
        q = sa.select(tenants.c.id, tenants.c.tier, tenants.c.storage_region).where(
            sa.or_(tenants.c.tier != "pool", tenants.c.storage_region.is_not(None))).order_by(tenants.c.id)
        async with self.db.platform_tx() as conn:
            return [(r.id, r.tier, r.storage_region) for r in await conn.execute(q)]

    # --- tenant scope ---------------------------------------------------------------------------------------
    async def insert_tenant(self, *, tenant_id: str, tenant: Tenant) -> None:
        assert tenant.id == tenant_id
        try:
            async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
                await conn.execute(tenants.insert().values(**_tenant_values(tenant)))
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"a tenant named {tenant.name!r} already exists", param="name") from exc

    async def get_tenant(self, *, tenant_id: str) -> Tenant | None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            row = (await conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id))).first()
        return None if row is None else _tenant(row)

    async def update_tenant(self, *, tenant_id: str, values: dict[str, Any]) -> Tenant | None:
        try:
            async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
                await conn.execute(tenants.update().where(tenants.c.id == tenant_id).values(**values))
                row = (await conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id))).first()
        except sa.exc.IntegrityError as exc:
            raise Conflict("a tenant with that name already exists", param="name") from exc
        return None if row is None else _tenant(row)

    async def delete_tenant(self, *, tenant_id: str) -> bool:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(end_users.delete().where(end_users.c.tenant_id == tenant_id))
            await conn.execute(api_keys.delete().where(api_keys.c.tenant_id == tenant_id))
            res = await conn.execute(tenants.delete().where(tenants.c.id == tenant_id))
        return bool(res.rowcount)

    async def insert_key(self, *, tenant_id: str, key: ApiKey) -> None:
        assert key.tenant_id == tenant_id
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(api_keys.insert().values(
                id=key.id, tenant_id=tenant_id, name=key.name, role=key.role.value, scopes=key.scopes,
                secret_hash=key.secret_hash, hint=key.hint, created_at=key.created_at, expires_at=key.expires_at))

    async def list_keys(self, *, tenant_id: str) -> list[ApiKey]:
        q = sa.select(api_keys).where(api_keys.c.tenant_id == tenant_id).order_by(api_keys.c.created_at)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_key(r) for r in await conn.execute(q)]

    async def get_key(self, *, tenant_id: str, key_id: str) -> ApiKey | None:
        q = sa.select(api_keys).where(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            row = (await conn.execute(q)).first()
        return None if row is None else _key(row)

    async def revoke_key(self, *, tenant_id: str, key_id: str, at: float) -> ApiKey | None:
        cond = sa.and_(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(api_keys.update().where(cond, api_keys.c.revoked_at.is_(None)).values(revoked_at=at))
            row = (await conn.execute(sa.select(api_keys).where(cond))).first()
        return None if row is None else _key(row)

    async def upsert_end_users(self, *, tenant_id: str, seen: Iterable[tuple[str, int, float, float]]) -> None:
        """``seen`` rows are (user_id, requests, first_seen_at, last_seen_at) gathered since the last flush."""
        rows = [{"tenant_id": tenant_id, "user_id": u, "request_count": n, "first_seen_at": f, "last_seen_at": last}
                for u, n, f, last in seen]
        if not rows:
            return
        ins = (pg_insert if self.db.is_postgres else sqlite_insert)(end_users)
        stmt = ins.on_conflict_do_update(
            index_elements=[end_users.c.tenant_id, end_users.c.user_id],
            set_={"request_count": end_users.c.request_count + ins.excluded.request_count,
                  "last_seen_at": ins.excluded.last_seen_at},
        )
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(stmt, rows)

    async def list_end_users(self, *, tenant_id: str, limit: int) -> list[dict[str, Any]]:
        q = sa.select(end_users).where(end_users.c.tenant_id == tenant_id) \
            .order_by(end_users.c.last_seen_at.desc()).limit(limit)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [{"user": r.user_id, "first_seen_at": int(r.first_seen_at), "last_seen_at": int(r.last_seen_at),
                     "requests": int(r.request_count)} for r in await conn.execute(q)]

    async def end_user(self, *, tenant_id: str, user_id: str) -> dict[str, Any] | None:
        q = sa.select(end_users).where(end_users.c.tenant_id == tenant_id, end_users.c.user_id == user_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            r = (await conn.execute(q)).first()
        return None if r is None else {"user": r.user_id, "first_seen_at": int(r.first_seen_at),
                                       "last_seen_at": int(r.last_seen_at), "requests": int(r.request_count)}

    async def delete_end_user(self, *, tenant_id: str, user_id: str) -> int:
        cond = sa.and_(end_users.c.tenant_id == tenant_id, end_users.c.user_id == user_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            res = await conn.execute(end_users.delete().where(cond))
        return int(res.rowcount or 0)
