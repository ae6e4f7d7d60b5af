"""The ``tenant_keys`` table: one row per (tenant, data-key version) holding the wrapped data key and the ref of the
KEK version that wrapped it. States: ``active`` (the one new writes use; the highest active version wins),
``retired`` (still opens older records) and ``shredded`` (version 0, a tombstone left by a shred so that no later
call re-creates keys for that tenant). Races between processes are settled by the (tenant_id, version) primary key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import tenant_keys, tenants

ACTIVE = "active"
RETIRED = "retired"
SHREDDED = "shredded"
TOMBSTONE_VERSION = 0


@dataclass(frozen=True)
class DekRow:
    version: int
    wrapped: bytes
    kek_ref: str
    state: str
    created_at: float = 0.0


def _row(r: Any) -> DekRow:
    return DekRow(version=int(r.version), wrapped=bytes(r.wrapped_dek), kek_ref=r.kek_ref, state=r.state,
                  created_at=float(r.created_at))


_COLS = (tenant_keys.c.version, tenant_keys.c.wrapped_dek, tenant_keys.c.kek_ref, tenant_keys.c.state,
         tenant_keys.c.created_at)


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_rows(self, *, tenant_id: str) -> list[DekRow]:
        q = sa.select(*_COLS).where(tenant_keys.c.tenant_id == tenant_id).order_by(tenant_keys.c.version)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_row(r) for r in await conn.execute(q)]

    async def get(self, *, tenant_id: str, version: int) -> list[DekRow]:
        """The row for ``version`` and the tombstone, whichever exist."""
        q = sa.select(*_COLS).where(tenant_keys.c.tenant_id == tenant_id,
                                    tenant_keys.c.version.in_((TOMBSTONE_VERSION, version)))
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_row(r) for r in await conn.execute(q)]

    async def active(self, *, tenant_id: str) -> list[DekRow]:
        """The newest active row and the tombstone, whichever exist (highest version first)."""
        q = (sa.select(*_COLS)
             .where(tenant_keys.c.tenant_id == tenant_id, tenant_keys.c.state.in_((ACTIVE, SHREDDED)))
             .order_by(tenant_keys.c.version.desc()).limit(2))
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_row(r) for r in await conn.execute(q)]

    async def tenant_exists(self, *, tenant_id: str) -> bool:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return (await conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id))).first() is not None

    async def insert_first(self, *, tenant_id: str, row: DekRow) -> bool:
        """Insert a tenant's first data key; False if another caller's insert won."""
        try:
            async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
                await conn.execute(tenant_keys.insert().values(**self._values(tenant_id, row)))
        except sa.exc.IntegrityError:
            return False
        return True

    async def rotate(self, *, tenant_id: str, row: DekRow) -> bool:
        """Retire the active version(s) and insert ``row`` as active, in one transaction; False on a lost race."""
        cond = sa.and_(tenant_keys.c.tenant_id == tenant_id, tenant_keys.c.state == ACTIVE)
        try:
            async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
                await conn.execute(tenant_keys.update().where(cond).values(state=RETIRED))
                await conn.execute(tenant_keys.insert().values(**self._values(tenant_id, row)))
        except sa.exc.IntegrityError:
            return False
        return True

    async def replace_wrapped(self, *, tenant_id: str, version: int, old: bytes, new: bytes, kek_ref: str) -> bool:
        """Compare-and-set the wrapped key of one version (KEK rotation); False if it changed meanwhile."""
        q = (tenant_keys.update()
             .where(tenant_keys.c.tenant_id == tenant_id, tenant_keys.c.version == version,
                    tenant_keys.c.wrapped_dek == old)
             .values(wrapped_dek=new, kek_ref=kek_ref))
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return bool((await conn.execute(q)).rowcount)

    async def delete_version(self, *, tenant_id: str, version: int) -> bool:
        """Delete one retired version (after every record has been rewrapped off it)."""
        q = tenant_keys.delete().where(tenant_keys.c.tenant_id == tenant_id, tenant_keys.c.version == version,
                                       tenant_keys.c.state == RETIRED)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return bool((await conn.execute(q)).rowcount)

    async def shred(self, *, tenant_id: str) -> None:
        """Delete every wrapped data key of the tenant and leave the tombstone."""
        tomb = DekRow(TOMBSTONE_VERSION, b"", SHREDDED, SHREDDED, time.time())
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(tenant_keys.delete().where(tenant_keys.c.tenant_id == tenant_id))
            exists = (await conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id))).first()
            if exists is not None:  # a deleted tenant needs no tombstone (and its foreign key would refuse one)
                await conn.execute(tenant_keys.insert().values(**self._values(tenant_id, tomb)))

    @staticmethod
    def _values(tenant_id: str, row: DekRow) -> dict[str, object]:
        return {"tenant_id": tenant_id, "version": row.version, "wrapped_dek": row.wrapped, "kek_ref": row.kek_ref,
                "state": row.state, "created_at": row.created_at or time.time()}
