"""Audit storage over SQL. Writes happen only in the platform scope (on Postgres, RLS lets nothing else insert) and
under one lock, so that every appender sees the true head of the chain:

- Postgres: ``pg_advisory_xact_lock`` taken first in the transaction (released at commit or rollback); every later
  statement reads a fresh READ COMMITTED snapshot, so the head it reads is the last committed one.
- SQLite: a no-op write as the first statement takes the database's single write lock for the whole transaction
  (what ``BEGIN IMMEDIATE`` does), waiting up to ``busy_timeout``.

Reads by a tenant run in ``tenant_tx`` and filter on ``tenant_id``; on Postgres RLS shows that tenant's rows only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tenantlm.audit.chain import GENESIS, to_micros
from tenantlm.audit.models import AuditEntry, Checkpoint
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import audit_checkpoints, audit_log

# Arbitrary but fixed: the key of the Postgres advisory lock that serializes appends ("tlmaudit" in ASCII).
ADVISORY_LOCK_KEY = 0x746C6D6175646974
_PG_LOCK = sa.text("SELECT pg_advisory_xact_lock(:k)")
_SQLITE_TAKE_WRITE_LOCK = sa.text("UPDATE audit_checkpoints SET key_id = key_id WHERE 0")


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(seq=int(row.seq), ts_us=to_micros(row.ts), actor=row.actor, tenant_id=row.tenant_id,
                      action=row.action, request_id=row.request_id, details=_details(row.details),
                      prev_hash=bytes(row.prev_hash), hash=bytes(row.hash))


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

    async def insert(self, entry: AuditEntry) -> None:
        await self.conn.execute(audit_log.insert().values(
            seq=entry.seq, ts=entry.ts, actor=entry.actor, tenant_id=entry.tenant_id, action=entry.action,
            request_id=entry.request_id, details=entry.details, prev_hash=entry.prev_hash, hash=entry.hash))

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

    async def list_entries(self, *, tenant_id: str | None, after_seq: int, limit: int,
                   action: str | None = None) -> list[AuditEntry]:
        q = sa.select(audit_log).where(audit_log.c.seq > after_seq).order_by(audit_log.c.seq).limit(limit)
        if action is not None:
            q = q.where(audit_log.c.action == action)
        if tenant_id is None:
            async with self.db.platform_tx() as conn:
                return [_entry(r) for r in await conn.execute(q)]
        q = q.where(audit_log.c.tenant_id == tenant_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_entry(r) for r in await conn.execute(q)]

    # --- verification reads (platform scope) ----------------------------------------------------------------
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
