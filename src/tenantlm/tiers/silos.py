"""Where silo databases live.

- Embedded (SQLite): one file per tenant, ``<data_dir>/tenants/<tenant_id>/tenant.db``, migrated to the same head
  as the pool; it sits in the tenant's own directory, which erasure removes.
- Scaled out (Postgres): one schema per tenant, ``silo_<tenant_id>``, in the pool's database, created and migrated by
  the owner role (so it needs ``TENANTLM_DATABASE_MIGRATE_URL``), used by the server's own role with the same
  row-level security as the pool; the server connects to it with ``search_path`` set to that schema alone.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Protocol

from tenantlm.storage.sql.engine import Database, make_engine
from tenantlm.storage.sql.migrate import drop_schema, migrate

log = logging.getLogger(__name__)
SILO_POOL_SIZE = 4  # connections per silo (its engine is separate from the pool's)


class Silos(Protocol):
    can_create: bool

    async def create(self, tenant_id: str) -> Database: ...

    def open(self, tenant_id: str) -> Database: ...

    async def remove(self, tenant_id: str, db: Database | None) -> None: ...


class SqliteSilos:
    can_create = True

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def path(self, tenant_id: str) -> Path:
        return self.data_dir / "tenants" / tenant_id / "tenant.db"

    def url(self, tenant_id: str) -> str:
        return f"sqlite+aiosqlite:///{self.path(tenant_id)}"

    async def create(self, tenant_id: str) -> Database:
        """Create (or reopen) the tenant's database and bring its schema to head."""
        await asyncio.to_thread(self.path(tenant_id).parent.mkdir, parents=True, exist_ok=True)
        await migrate(url=self.url(tenant_id), migrate_url=None)
        return self.open(tenant_id)

    def open(self, tenant_id: str) -> Database:
        return Database.from_url(self.url(tenant_id))

    async def remove(self, tenant_id: str, db: Database | None) -> None:
        """Close the silo's connections and delete its file (with SQLite's WAL and shared-memory files)."""
        if db is not None:
            await db.dispose()
        base = self.path(tenant_id)
        for path in (base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")):
            await asyncio.to_thread(path.unlink, missing_ok=True)


def schema_name(tenant_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_]{1,50}", tenant_id):
        raise ValueError(f"tenant id {tenant_id!r} cannot name a schema")
    return f"silo_{tenant_id.lower()}"


class PostgresSchemaSilos:
    """Without the owner's migrate URL, existing silos are opened (the server's role cannot create schemas)."""

    def __init__(self, *, url: str, migrate_url: str | None) -> None:
        self.url = url
        self.migrate_url = migrate_url
        self.can_create = migrate_url is not None

    async def create(self, tenant_id: str) -> Database:
        if self.migrate_url is None:
            raise RuntimeError("creating a silo schema needs the owner role's migrate URL")
        await migrate(url=self.url, migrate_url=self.migrate_url, schema=schema_name(tenant_id))
        return self.open(tenant_id)

    def open(self, tenant_id: str) -> Database:
        return Database(make_engine(self.url, pool_size=SILO_POOL_SIZE, search_path=schema_name(tenant_id)))

    async def remove(self, tenant_id: str, db: Database | None) -> None:
        if db is not None:
            await db.dispose()
        if self.migrate_url is None:  # its rows are deleted already; the empty schema waits for the owner
            log.warning("silo schema %s left for the owner role to drop (no migrate URL)", schema_name(tenant_id))
            return
        await drop_schema(migrate_url=self.migrate_url, schema=schema_name(tenant_id))
