"""Long-term memories over SQL. Every method takes ``tenant_id`` and runs in that tenant's transaction (row-level
security on Postgres); every method that reads or changes memories of a person also takes ``end_user`` and puts it
in the query. Rows hold sealed text and vectors only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.paging import tenant_pages
from tenantlm.storage.sql.tables import memories

PAGE = 500


@dataclass(frozen=True, slots=True)
class MemoryRow:
    tenant_id: str
    end_user: str
    id: str
    created_at: float
    source: str | None
    sealed_text: bytes
    sealed_vector: bytes | None


def _row(r: Any) -> MemoryRow:
    return MemoryRow(tenant_id=r.tenant_id, end_user=r.end_user, id=r.id, created_at=r.created_at, source=r.source,
                     sealed_text=bytes(r.sealed_text),
                     sealed_vector=None if r.sealed_vector is None else bytes(r.sealed_vector))


def _of(tenant_id: str, end_user: str) -> sa.ColumnElement[bool]:
    return sa.and_(memories.c.tenant_id == tenant_id, memories.c.end_user == end_user)


class MemoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, *, tenant_id: str, row: MemoryRow) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(memories.insert().values(
                tenant_id=tenant_id, end_user=row.end_user, id=row.id, created_at=row.created_at, source=row.source,
                sealed_text=row.sealed_text, sealed_vector=row.sealed_vector))

    async def of_end_user(self, *, tenant_id: str, end_user: str) -> list[MemoryRow]:
        """Every memory of one end user, oldest first."""
        q = sa.select(memories).where(_of(tenant_id, end_user)).order_by(memories.c.created_at, memories.c.id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_row(r) for r in await conn.execute(q)]

    async def signature(self, *, tenant_id: str, end_user: str) -> tuple[int, float]:
        """(how many memories, the newest one's time): changes whenever any replica adds or deletes one."""
        q = sa.select(sa.func.count(), sa.func.coalesce(sa.func.max(memories.c.created_at), 0.0)) \
            .where(_of(tenant_id, end_user))
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            count, newest = (await conn.execute(q)).one()
        return int(count), float(newest)

    async def some(self, *, tenant_id: str, end_user: str, ids: Sequence[str]) -> dict[str, MemoryRow]:
        if not ids:
            return {}
        q = sa.select(memories).where(_of(tenant_id, end_user), memories.c.id.in_(list(ids)))
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return {r.id: _row(r) for r in await conn.execute(q)}

    async def delete(self, *, tenant_id: str, end_user: str, memory_id: str) -> bool:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            res = await conn.execute(memories.delete().where(_of(tenant_id, end_user), memories.c.id == memory_id))
        return bool(res.rowcount)

    async def delete_end_user(self, *, tenant_id: str, end_user: str) -> int:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            res = await conn.execute(memories.delete().where(_of(tenant_id, end_user)))
        return int(res.rowcount or 0)

    async def delete_sources(self, *, tenant_id: str, sources: Sequence[str]) -> dict[str, int]:
        """Delete the memories written from any of ``sources`` (response ids); returns the count per end user."""
        if not sources:
            return {}
        cond = sa.and_(memories.c.tenant_id == tenant_id, memories.c.source.in_(list(sources)))
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            users = [r.end_user for r in await conn.execute(sa.select(memories.c.end_user).where(cond))]
            await conn.execute(memories.delete().where(cond))
        counts: dict[str, int] = {}
        for user in users:
            counts[user] = counts.get(user, 0) + 1
        return counts

    async def replace_sealed(self, *, tenant_id: str, end_user: str, memory_id: str, sealed_text: bytes,
                             sealed_vector: bytes | None) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(memories.update().where(_of(tenant_id, end_user), memories.c.id == memory_id)
                               .values(sealed_text=sealed_text, sealed_vector=sealed_vector))

    def pages(self, *, tenant_id: str) -> AsyncIterator[list[MemoryRow]]:
        """Every memory of the tenant (all its end users), a page per transaction, by end user then id."""
        return tenant_pages(self.db, memories, tenant_id=tenant_id, convert=_row, page=PAGE, keys=("end_user", "id"))

    async def forget_tenant(self, *, tenant_id: str) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(memories.delete().where(memories.c.tenant_id == tenant_id))
