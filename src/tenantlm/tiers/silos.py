"""Where silo databases live. Embedded (SQLite): one file per tenant, ``<data_dir>/tenants/<tenant_id>/tenant.db``,
migrated to the same head as the pool; it sits in the tenant's own directory, which erasure removes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import migrate


class SqliteSilos:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def path(self, tenant_id: str) -> Path:
        return self.data_dir / "tenants" / tenant_id / "tenant.db"

    def url(self, tenant_id: str) -> str:
        return f"sqlite+aiosqlite:///{self.path(tenant_id)}"

    def exists(self, tenant_id: str) -> bool:
        return self.path(tenant_id).exists()

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
