"""Audit storage over SQL. Writes happen only in the platform scope (on Postgres, RLS lets nothing else insert) and
under one lock, so that every appender sees the true head of the platform chain and of the entry's tenant chain:

- Postgres: ``pg_advisory_xact_lock`` taken first in the transaction (released at commit or rollback); every later
  statement reads a fresh READ COMMITTED snapshot, so the head it reads is the last committed one.
- SQLite: a no-op write as the first statement takes the database's single write lock for the whole transaction
  (what ``BEGIN IMMEDIATE`` does), waiting up to ``busy_timeout``.

Reads by a tenant run in ``tenant_tx``, filter on ``tenant_id`` and select the tenant chain's columns only; on
Postgres RLS shows that tenant's rows only. Nothing a tenant reads or verifies needs another tenant's rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tenantlm.audit.chain import GENESIS, to_micros
from tenantlm.audit.models import AuditEntry, Checkpoint, TenantAuditEntry
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import audit_checkpoints, audit_log

# Arbitrary but fixed: the key of the Postgres advisory lock that serializes appends ("tlmaudit" in ASCII).
ADVISORY_LOCK_KEY = 0x746C6D6175646974
_PG_LOCK = sa.text("SELECT pg_advisory_xact_lock(:k)")
_SQLITE_TAKE_WRITE_LOCK = sa.text("UPDATE audit_checkpoints SET key_id = key_id WHERE 0")


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(seq=int(row.seq), ts_us=to_micros(row.ts), actor=row.actor, tenant_id=row.tenant_id,
                      action=row.action, request_id=row.request_id, details=_details(row.details),
                      prev_hash=bytes(row.prev_hash), hash=bytes(row.hash), format_version=int(row.format_version),
                      tenant_seq=None if row.tenant_seq is None else int(row.tenant_seq),
                      tenant_prev_hash=_bytes(row.tenant_prev_hash), tenant_hash=_bytes(row.tenant_hash))


# What a tenant's read selects: its own chain's fields, never the platform's seq or hashes.
_TENANT_COLUMNS = (audit_log.c.tenant_id, audit_log.c.tenant_seq, audit_log.c.ts, audit_log.c.actor,
                   audit_log.c.action, audit_log.c.request_id, audit_log.c.details, audit_log.c.tenant_prev_hash,
                   audit_log.c.tenant_hash)


def _tenant_entry(row: Any) -> TenantAuditEntry:
    return TenantAuditEntry(tenant_id=row.tenant_id, seq=int(row.tenant_seq), ts_us=to_micros(row.ts),
                            actor=row.actor, action=row.action, request_id=row.request_id,
                            details=_details(row.details), prev_hash=bytes(row.tenant_prev_hash),
                            hash=bytes(row.tenant_hash))


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _details(value: Any) -> dict[str, Any]:
    # Only a tampered row holds anything but an object; keep it visible (and unequal to any hashed object).
    return value if isinstance(value, dict) else {"<not an object>": value}


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(seq=int(row.seq), ts=float(row.ts), hash=bytes(row.hash), signature=bytes(row.signature),
                      key_id=row.key_id)


class AuditWriter:
    """The statements of one locked append transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def head(self) -> tuple[int, bytes]:
        """(seq, hash) of the last entry, or (0, GENESIS) for an empty log."""
        q = sa.select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
        row = (await self.conn.execute(q)).first()
        return (0, GENESIS) if row is None else (int(row.seq), bytes(row.hash))

    async def tenant_head(self, *, tenant_id: str) -> tuple[int, bytes]:
        """(tenant_seq, tenant_hash) of the tenant's last entry, or (0, GENESIS): one probe of the unique
        (tenant_id, tenant_seq) index. Under the append lock, so no other append can take the next number."""
        q = sa.select(audit_log.c.tenant_seq, audit_log.c.tenant_hash).where(audit_log.c.tenant_id == tenant_id) \
            .order_by(audit_log.c.tenant_seq.desc()).limit(1)
        row = (await self.conn.execute(q)).first()
        return (0, GENESIS) if row is None else (int(row.tenant_seq), bytes(row.tenant_hash))

    async def insert(self, entry: AuditEntry) -> None:
        await self.conn.execute(audit_log.insert().values(
            seq=entry.seq, ts=entry.ts, actor=entry.actor, tenant_id=entry.tenant_id, action=entry.action,
            request_id=entry.request_id, details=entry.details, prev_hash=entry.prev_hash, hash=entry.hash,
            format_version=entry.format_version, tenant_seq=entry.tenant_seq,
            tenant_prev_hash=entry.tenant_prev_hash, tenant_hash=entry.tenant_hash))

    async def last_checkpoint_seq(self) -> int:
        q = sa.select(sa.func.max(audit_checkpoints.c.seq))
        return int((await self.conn.execute(q)).scalar_one() or 0)

    async def ts_of(self, seq: int) -> float | None:
        q = sa.select(audit_log.c.ts).where(audit_log.c.seq == seq)
        value = (await self.conn.execute(q)).scalar_one_or_none()
        return None if value is None else float(value)

    async def insert_checkpoint(self, cp: Checkpoint) -> None:
        await self.conn.execute(audit_checkpoints.insert().values(
            seq=cp.seq, ts=cp.ts, hash=cp.hash, signature=cp.signature, key_id=cp.key_id))


class AuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[AuditWriter]:
        """A platform transaction holding the append lock until it ends."""
        async with self.db.platform_tx() as conn:
            if self.db.is_postgres:
                await conn.execute(_PG_LOCK, {"k": ADVISORY_LOCK_KEY})
            else:
                await conn.execute(_SQLITE_TAKE_WRITE_LOCK)
            yield AuditWriter(conn)

    async def platform_state(self) -> tuple[int, int, float | None]:
        """Unlocked peek: (head seq, last checkpoint seq, ts of the first entry after it or None)."""
        async with self.db.platform_tx() as conn:
            w = AuditWriter(conn)
            head, _ = await w.head()
            last = await w.last_checkpoint_seq()
            return head, last, (await w.ts_of(last + 1)) if head > last else None

    async def list_platform(self, *, after_seq: int, limit: int, action: str | None = None) -> list[AuditEntry]:
        """Every tenant's and the platform's entries after ``after_seq`` in global seq order (platform scope)."""
        q = sa.select(audit_log).where(audit_log.c.seq > after_seq).order_by(audit_log.c.seq).limit(limit)
        if action is not None:
            q = q.where(audit_log.c.action == action)
        async with self.db.platform_tx() as conn:
            return [_entry(r) for r in await conn.execute(q)]

    async def list_tenant(self, *, tenant_id: str, after_seq: int, limit: int, action: str | None = None
                          ) -> list[TenantAuditEntry]:
        """The tenant's entries after tenant seq ``after_seq``, in its own chain's order, read in the tenant's scope
        (Postgres RLS shows nothing else) and without any platform column."""
        q = sa.select(*_TENANT_COLUMNS).where(audit_log.c.tenant_id == tenant_id, audit_log.c.tenant_seq > after_seq) \
            .order_by(audit_log.c.tenant_seq).limit(limit)
        if action is not None:
            q = q.where(audit_log.c.action == action)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_tenant_entry(r) for r in await conn.execute(q)]

    # --- verification reads ---------------------------------------------------------------------------------
    async def platform_checkpoints(self) -> list[Checkpoint]:
        async with self.db.platform_tx() as conn:
            rows = await conn.execute(sa.select(audit_checkpoints).order_by(audit_checkpoints.c.seq))
            return [_checkpoint(r) for r in rows]

    async def platform_seq_with_hash(self, chain_hash: bytes) -> int | None:
        """The seq of the entry whose stored hash is ``chain_hash`` (a full scan: used only once a link is broken)."""
        q = sa.select(audit_log.c.seq).where(audit_log.c.hash == chain_hash).order_by(audit_log.c.seq).limit(1)
        async with self.db.platform_tx() as conn:
            value = (await conn.execute(q)).scalar_one_or_none()
        return None if value is None else int(value)

    async def platform_seq_with_prev_hash(self, chain_hash: bytes, *, after_seq: int) -> int | None:
        """The seq of an entry after ``after_seq`` that links to ``chain_hash`` (a full scan, on a gap only)."""
        q = sa.select(audit_log.c.seq).where(audit_log.c.prev_hash == chain_hash, audit_log.c.seq > after_seq) \
            .order_by(audit_log.c.seq).limit(1)
        async with self.db.platform_tx() as conn:
            value = (await conn.execute(q)).scalar_one_or_none()
        return None if value is None else int(value)

    async def platform_first_seq_after_time(self, *, after_seq: int, up_to_seq: int, ts: float) -> int | None:
        """The first seq in (after_seq, up_to_seq] whose entry was written after ``ts``."""
        q = sa.select(sa.func.min(audit_log.c.seq)).where(
            audit_log.c.seq > after_seq, audit_log.c.seq <= up_to_seq, audit_log.c.ts > ts)
        async with self.db.platform_tx() as conn:
            value = (await conn.execute(q)).scalar_one_or_none()
        return None if value is None else int(value)

    async def tenant_seq_with_hash(self, chain_hash: bytes, *, tenant_id: str) -> int | None:
        """The tenant seq of the tenant's entry whose tenant hash is ``chain_hash`` (tenant scope, on a break only)."""
        q = sa.select(audit_log.c.tenant_seq).where(audit_log.c.tenant_id == tenant_id,
                                                    audit_log.c.tenant_hash == chain_hash) \
            .order_by(audit_log.c.tenant_seq).limit(1)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            value = (await conn.execute(q)).scalar_one_or_none()
        return None if value is None else int(value)

    async def tenant_seq_with_prev_hash(self, chain_hash: bytes, *, tenant_id: str, after_seq: int) -> int | None:
        """The tenant seq of the tenant's entry after ``after_seq`` that links to ``chain_hash`` (on a gap only)."""
        q = sa.select(audit_log.c.tenant_seq).where(audit_log.c.tenant_id == tenant_id,
                                                    audit_log.c.tenant_prev_hash == chain_hash,
                                                    audit_log.c.tenant_seq > after_seq) \
            .order_by(audit_log.c.tenant_seq).limit(1)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            value = (await conn.execute(q)).scalar_one_or_none()
        return None if value is None else int(value)
