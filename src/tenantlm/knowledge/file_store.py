"""Files over SQL. Every method takes ``tenant_id`` and runs in that tenant's transaction (row-level security on
Postgres); the few platform sweeps are named ``platform_*``. Content is stored as sealed parts (``file_parts``); the
store never sees plaintext.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import file_parts, files

UPLOADING = "uploading"
UPLOADED = "uploaded"


@dataclass(frozen=True, slots=True)
class FileRow:
    tenant_id: str
    id: str
    purpose: str
    size: int
    parts: int
    status: str
    created_at: float
    expires_at: float | None
    sealed_name: bytes


def _row(r: Any) -> FileRow:
    return FileRow(tenant_id=r.tenant_id, id=r.id, purpose=r.purpose, size=int(r.bytes), parts=int(r.parts),
                   status=r.status, created_at=r.created_at, expires_at=r.expires_at,
                   sealed_name=bytes(r.sealed_name))


class StorageQuotaExceeded(Exception):
    """Completing an upload would take the tenant's stored bytes past its limit (nothing was committed)."""

    def __init__(self, used: int, limit: int) -> None:
        super().__init__(f"{used} > {limit}")
        self.used = used
        self.limit = limit


class FileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def begin(self, *, tenant_id: str, row: FileRow) -> None:
        """The row of an upload in progress (status ``uploading``: not listed, not readable)."""
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(files.insert().values(
                tenant_id=tenant_id, id=row.id, purpose=row.purpose, bytes=0, parts=0, status=UPLOADING,
                created_at=row.created_at, expires_at=row.expires_at, sealed_name=row.sealed_name))

    async def add_part(self, *, tenant_id: str, file_id: str, part: int, sealed: bytes) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(file_parts.insert().values(tenant_id=tenant_id, file_id=file_id, part=part,
                                                          sealed=sealed))

    async def complete(self, *, tenant_id: str, file_id: str, purpose: str, size: int, parts: int,
                       expires_at: float | None, storage_limit: int | None) -> FileRow:
        """Mark the upload complete, in one transaction with the check of the tenant's storage quota (serialized per
        tenant on Postgres by an advisory lock, by the write lock on SQLite)."""
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            if self.db.is_postgres:
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("files:" + tenant_id))))
            if storage_limit is not None:
                used = await self._used(conn, tenant_id)
                if used + size > storage_limit:
                    raise StorageQuotaExceeded(used + size, storage_limit)
            await conn.execute(files.update().where(files.c.tenant_id == tenant_id, files.c.id == file_id).values(
                purpose=purpose, bytes=size, parts=parts, status=UPLOADED, expires_at=expires_at))
            row = (await conn.execute(sa.select(files).where(files.c.tenant_id == tenant_id,
                                                             files.c.id == file_id))).one()
        return _row(row)

    async def used_bytes(self, *, tenant_id: str) -> int:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return await self._used(conn, tenant_id)

    @staticmethod
    async def _used(conn: Any, tenant_id: str) -> int:
        q = sa.select(sa.func.coalesce(sa.func.sum(files.c.bytes), 0)).where(files.c.tenant_id == tenant_id,
                                                                              files.c.status == UPLOADED)
        return int((await conn.execute(q)).scalar_one())

    async def get(self, *, tenant_id: str, file_id: str) -> FileRow | None:
        q = sa.select(files).where(files.c.tenant_id == tenant_id, files.c.id == file_id,
                                   files.c.status == UPLOADED)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            row = (await conn.execute(q)).first()
        return None if row is None else _row(row)

    async def page(self, *, tenant_id: str, purpose: str | None, after: FileRow | None, limit: int,
                   order: Literal["asc", "desc"]) -> list[FileRow]:
        c = files.c
        q = sa.select(files).where(c.tenant_id == tenant_id, c.status == UPLOADED)
        if purpose is not None:
            q = q.where(c.purpose == purpose)
        key = sa.tuple_(c.created_at, c.id)
        if after is not None:
            cursor = sa.tuple_(sa.literal(after.created_at), sa.literal(after.id))
            q = q.where(key > cursor if order == "asc" else key < cursor)
        ordering = (c.created_at.asc(), c.id.asc()) if order == "asc" else (c.created_at.desc(), c.id.desc())
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_row(r) for r in await conn.execute(q.order_by(*ordering).limit(limit))]

    async def parts(self, *, tenant_id: str, file_id: str, count: int) -> AsyncIterator[tuple[int, bytes]]:
        """The sealed parts in order, one transaction each (a large file is not held in one)."""
        for part in range(count):
            q = sa.select(file_parts.c.sealed).where(file_parts.c.tenant_id == tenant_id,
                                                     file_parts.c.file_id == file_id, file_parts.c.part == part)
            async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
                sealed = (await conn.execute(q)).scalar_one()
            yield part, bytes(sealed)

    async def replace_sealed(self, *, tenant_id: str, file_id: str, part: int | None, sealed: bytes) -> None:
        """Store a record re-sealed under a newer data key: a part, or the name (``part`` None)."""
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            if part is None:
                await conn.execute(files.update().where(files.c.tenant_id == tenant_id, files.c.id == file_id)
                                   .values(sealed_name=sealed))
            else:
                await conn.execute(file_parts.update().where(
                    file_parts.c.tenant_id == tenant_id, file_parts.c.file_id == file_id,
                    file_parts.c.part == part).values(sealed=sealed))

    async def name_of(self, *, tenant_id: str, file_id: str) -> bytes | None:
        q = sa.select(files.c.sealed_name).where(files.c.tenant_id == tenant_id, files.c.id == file_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            found = (await conn.execute(q)).scalar_one_or_none()
        return None if found is None else bytes(found)

    async def delete(self, *, tenant_id: str, file_id: str) -> bool:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(file_parts.delete().where(file_parts.c.tenant_id == tenant_id,
                                                         file_parts.c.file_id == file_id))
            res = await conn.execute(files.delete().where(files.c.tenant_id == tenant_id, files.c.id == file_id))
        return bool(res.rowcount)

    async def forget_tenant(self, *, tenant_id: str) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(file_parts.delete().where(file_parts.c.tenant_id == tenant_id))
            await conn.execute(files.delete().where(files.c.tenant_id == tenant_id))

    async def platform_expired(self, *, now: float, stale_before: float, limit: int = 500) -> list[tuple[str, str]]:
        """(tenant_id, file_id) of files past their expiry, and of uploads abandoned before ``stale_before``."""
        c = files.c
        q = sa.select(c.tenant_id, c.id).where(sa.or_(
            sa.and_(c.expires_at.is_not(None), c.expires_at <= now),
            sa.and_(c.status == UPLOADING, c.created_at < stale_before))).limit(limit)
        found: list[tuple[str, str]] = []
        async for conn in self.db.platform_each():
            found += [(r.tenant_id, r.id) for r in await conn.execute(q)]
        return found[:limit]
