"""The SQL engine and the two kinds of transaction every store uses.

``tenant_tx(tenant_id=...)`` is the only way to touch tenant-owned rows: on Postgres it sets the transaction-local
``tenantlm.tenant_id`` that the row-level-security policies compare against, so a query that forgot its
``WHERE tenant_id = ...`` still sees one tenant only. ``platform_tx()`` is for the few operations that are about the
platform itself (listing tenants, resolving an API key to its tenant); it sets ``tenantlm.scope = 'platform'``, which
the policies also accept. Routes never open transactions themselves; stores do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tenantlm.errors import ServiceUnavailable

_SET_TENANT = sa.text("SELECT set_config('tenantlm.tenant_id', :t, true), set_config('tenantlm.scope', '', true)")
_SET_PLATFORM = sa.text(
    "SELECT set_config('tenantlm.scope', 'platform', true), set_config('tenantlm.tenant_id', '', true)")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA synchronous=NORMAL")
    # a deleted record's bytes are overwritten, not left in free space (many builds default to it; not all do)
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


def make_engine(url: str, *, pool_size: int = 10, search_path: str | None = None) -> AsyncEngine:
    """``search_path`` (Postgres): the only schema unqualified names resolve to (a tenant's silo schema)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = {"server_settings": {"search_path": search_path}} if search_path else {}
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                               connect_args=connect_args)


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"

    @classmethod
    def from_url(cls, url: str) -> Database:
        return cls(make_engine(url))

    @asynccontextmanager
    async def tenant_tx(self, *, tenant_id: str) -> AsyncIterator[AsyncConnection]:
        if not tenant_id:
            raise ValueError("tenant_tx needs a tenant_id")
        async with self._begin() as conn:
            if self.is_postgres:
                await conn.execute(_SET_TENANT, {"t": tenant_id})
            yield conn

    @asynccontextmanager
    async def tenant_snapshot(self, *, tenant_id: str) -> AsyncIterator[AsyncConnection]:
        """A tenant transaction for reading whose every statement sees the same snapshot, while writers go on
        (Postgres: REPEATABLE READ; SQLite: an explicit BEGIN, as its driver starts one only at the first write)."""
        if not tenant_id:
            raise ValueError("tenant_snapshot needs a tenant_id")
        if not self.is_postgres:
            async with self._begin() as conn:
                await conn.exec_driver_sql("BEGIN")
                yield conn
            return
        try:
            conn = await self.engine.connect()
        except (OSError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise ServiceUnavailable("the database is unreachable") from exc
        try:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                await conn.execute(_SET_TENANT, {"t": tenant_id})
                yield conn
        finally:
            await conn.close()

    @asynccontextmanager
    async def platform_tx(self) -> AsyncIterator[AsyncConnection]:
        async with self._begin() as conn:
            if self.is_postgres:
                await conn.execute(_SET_PLATFORM)
            yield conn

    async def platform_each(self) -> AsyncIterator[AsyncConnection]:
        """One platform transaction per database that holds tenant content: here only this one (a
        ``TenantRouter`` adds each silo). For the sweeps that look across tenants."""
        async with self.platform_tx() as conn:
            yield conn

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        try:
            ctx = self.engine.begin()
            conn = await ctx.__aenter__()
        except (OSError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise ServiceUnavailable("the database is unreachable") from exc
        try:
            yield conn
        except BaseException as exc:
            await ctx.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            await ctx.__aexit__(None, None, None)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    async def reclaim(self) -> None:
        """Make deleted rows leave the disk now (after an erasure). SQLite: the write-ahead log, which still holds
        the pages as they were before the delete, is checkpointed into the database (whose deleted records
        ``secure_delete`` zeroed) and truncated. Postgres: nothing here (VACUUM reclaims dead tuples)."""
        if self.is_postgres:
            return
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    async def dispose(self) -> None:
        await self.engine.dispose()
