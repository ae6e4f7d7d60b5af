"""Request log storage. Rows hold only routing metadata in clear; the prompt and response are one sealed blob."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tenantlm.crypto import aead
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import request_log


@dataclass(frozen=True, slots=True)
class LogRow:
    tenant_id: str
    id: str
    created_at: float
    expires_at: float
    key_id: str | None
    model: str
    endpoint: str
    status: int
    sealed: bytes
    end_user: str | None = None

    def meta(self) -> dict[str, Any]:
        return {"id": self.id, "object": "request_log.entry", "created_at": round(self.created_at, 3),
                "expires_at": int(self.expires_at), "key_id": self.key_id, "model": self.model,
                "endpoint": self.endpoint, "status": self.status, "key_version": aead.key_version(self.sealed)}


def _row(r: Any) -> LogRow:
    return LogRow(tenant_id=r.tenant_id, id=r.id, created_at=r.created_at, expires_at=r.expires_at, key_id=r.key_id,
                  model=r.model, endpoint=r.endpoint, status=r.status, sealed=bytes(r.sealed),
                  end_user=r.end_user)


class RequestLogStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, *, tenant_id: str, rows: list[LogRow]) -> None:
        values = [{"tenant_id": tenant_id, "id": r.id, "created_at": r.created_at, "expires_at": r.expires_at,
                   "key_id": r.key_id, "model": r.model, "endpoint": r.endpoint, "status": r.status,
                   "sealed": r.sealed, "end_user": r.end_user} for r in rows if r.tenant_id == tenant_id]
        if values:
            async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
                await conn.execute(request_log.insert(), values)

    async def list(self, *, tenant_id: str, before: float | None, limit: int) -> list[LogRow]:
        q = sa.select(request_log).where(request_log.c.tenant_id == tenant_id)
        if before is not None:
            q = q.where(request_log.c.created_at < before)
        q = q.order_by(request_log.c.created_at.desc()).limit(limit)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_row(r) for r in await conn.execute(q)]

    async def get(self, *, tenant_id: str, entry_id: str) -> LogRow | None:
        q = sa.select(request_log).where(request_log.c.tenant_id == tenant_id, request_log.c.id == entry_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            row = (await conn.execute(q)).first()
        return None if row is None else _row(row)

    async def all_sealed(self, *, tenant_id: str, after_id: str | None, limit: int) -> builtins.list[LogRow]:
        q = sa.select(request_log).where(request_log.c.tenant_id == tenant_id)
        if after_id is not None:
            q = q.where(request_log.c.id > after_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_row(r) for r in await conn.execute(q.order_by(request_log.c.id).limit(limit))]

    async def replace_sealed(self, *, tenant_id: str, entry_id: str, sealed: bytes) -> None:
        cond = sa.and_(request_log.c.tenant_id == tenant_id, request_log.c.id == entry_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(request_log.update().where(cond).values(sealed=sealed))

    async def clamp_retention(self, *, tenant_id: str, days: int) -> int:
        """Shorten every entry's life to ``days`` after it was written (0 deletes them all)."""
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            if days <= 0:
                res = await conn.execute(request_log.delete().where(request_log.c.tenant_id == tenant_id))
            else:
                limit = request_log.c.created_at + days * 86400.0
                res = await conn.execute(request_log.update().where(
                    request_log.c.tenant_id == tenant_id, request_log.c.expires_at > limit).values(expires_at=limit))
        return int(res.rowcount or 0)

    async def end_user_entries(self, *, tenant_id: str, end_user: str) -> builtins.list[LogRow]:
        q = sa.select(request_log).where(request_log.c.tenant_id == tenant_id, request_log.c.end_user == end_user)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_row(r) for r in await conn.execute(q.order_by(request_log.c.created_at))]

    async def delete_end_user(self, *, tenant_id: str, end_user: str) -> int:
        cond = sa.and_(request_log.c.tenant_id == tenant_id, request_log.c.end_user == end_user)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            res = await conn.execute(request_log.delete().where(cond))
        return int(res.rowcount or 0)

    async def delete_tenant(self, *, tenant_id: str) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(request_log.delete().where(request_log.c.tenant_id == tenant_id))

    async def platform_sweep(self, *, now: float) -> int:
        """Delete expired entries of every tenant (the retention sweeper)."""
        deleted = 0
        async for conn in self.db.platform_each():
            res = await conn.execute(request_log.delete().where(request_log.c.expires_at <= now))
            deleted += int(res.rowcount or 0)
        return deleted
