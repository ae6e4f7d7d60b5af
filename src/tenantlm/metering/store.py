"""Usage events and rollups over SQL (SQLite and Postgres).

Writes: the flusher inserts a batch of events from many tenants in ONE ``platform_tx``. Why not ``tenant_tx`` per
tenant: the writer is platform infrastructure replaying its own journal, not a tenant's request; each row's
``tenant_id`` was fixed by the request path from the authenticated key; and one transaction per batch keeps the
events and the rollup deltas they cause atomic and the flush fast with thousands of tenants. Reads for one tenant
always run in ``tenant_tx`` (RLS holds); platform-wide reads run in ``platform_tx``.

Idempotency: ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` yields only the rows that were new, and the rollup
upsert adds exactly those, in the same transaction. A replayed event is neither stored nor counted twice, and a crash
between the two statements commits neither.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tenantlm.metering.models import UsageEvent, from_nano, to_nano, utc_day
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import usage_alerts, usage_events, usage_rollups

SUMS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_nanousd")
_COLUMNS = ("key_id", "end_user", "model", "provider", "upstream_model", "region", "prompt_tokens",
            "completion_tokens", "cached_tokens", "latency_ms", "ttft_ms", "status", "http_status", "created_at",
            "prompt_id", "prompt_version", "prompt_override_version", "history_items")


def event_row(e: UsageEvent) -> dict[str, Any]:
    return payload_row(e.to_dict())


def payload_row(fields: dict[str, Any]) -> dict[str, Any]:
    """The usage_events row of an event's fields (as ``UsageEvent.to_dict`` or the journal has them); reuses the
    dict, because the flusher converts every journaled event and this is its hot loop."""
    fields["cost_nanousd"] = to_nano(fields.pop("cost_usd"))
    fields["day"] = utc_day(fields["created_at"])
    return fields


def row_event(r: Any) -> UsageEvent:
    fields = {c: getattr(r, c) for c in _COLUMNS}
    for c in ("prompt_tokens", "completion_tokens", "cached_tokens"):
        fields[c] = int(fields[c])
    return UsageEvent(id=r.id, tenant_id=r.tenant_id, cost_usd=from_nano(int(r.cost_nanousd)), **fields)


def rollup_deltas(rows: Sequence[dict[str, Any]], *, now: float) -> list[dict[str, Any]]:
    """Sum event rows per (tenant_id, day, model), sorted so concurrent flushers lock rollup rows in one order."""
    acc: dict[tuple[str, str, str], list[int]] = {}
    for r in rows:
        sums = acc.setdefault((r["tenant_id"], r["day"], r["model"]), [0, 0, 0, 0, 0])
        sums[0] += 1
        sums[1] += r["prompt_tokens"]
        sums[2] += r["completion_tokens"]
        sums[3] += r["cached_tokens"]
        sums[4] += r["cost_nanousd"]
    return [{"tenant_id": t, "day": d, "model": m, **dict(zip(SUMS, s, strict=True)), "updated_at": now}
            for (t, d, m), s in sorted(acc.items())]


_EVENT_COLUMNS = tuple(c.name for c in usage_events.columns)
_ROLLUP_COLUMNS = tuple(c.name for c in usage_rollups.columns)
_SQLITE_UPSERT_ROLLUPS = (
    f"INSERT INTO usage_rollups ({', '.join(_ROLLUP_COLUMNS)}) VALUES ({', '.join('?' for _ in _ROLLUP_COLUMNS)}) "
    "ON CONFLICT (tenant_id, day, model) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in SUMS) + ", updated_at = excluded.updated_at")
_SQLITE_ROWS_PER_INSERT = 500  # x 19 columns: well under SQLite's 32766 variables per statement
_SQLITE_ROW = "(" + ", ".join("?" for _ in _EVENT_COLUMNS) + ")"


async def _sqlite_insert(conn: AsyncConnection, rows: Sequence[dict[str, Any]], *,
                         now: float) -> list[dict[str, Any]]:
    """SQLite: the same statements as the Postgres path (multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING``,
    then the rollup upsert of the rows that were new), sent as plain driver statements: SQLAlchemy's per-row work
    for ``insertmanyvalues`` was most of the flusher's cost, on the server's event loop."""
    inserted: set[tuple[str, str]] = set()
    head = f"INSERT INTO usage_events ({', '.join(_EVENT_COLUMNS)}) VALUES "
    for i in range(0, len(rows), _SQLITE_ROWS_PER_INSERT):
        chunk = rows[i:i + _SQLITE_ROWS_PER_INSERT]
        sql = head + ", ".join(_SQLITE_ROW for _ in chunk) + " ON CONFLICT DO NOTHING RETURNING tenant_id, id"
        found = await conn.exec_driver_sql(sql, tuple(r[c] for r in chunk for c in _EVENT_COLUMNS))
        inserted.update((str(row[0]), str(row[1])) for row in found.all())  # type: ignore[misc]
    new = [r for r in rows if (r["tenant_id"], r["id"]) in inserted]
    if new:
        deltas = rollup_deltas(new, now=now)
        await conn.exec_driver_sql(_SQLITE_UPSERT_ROLLUPS, [tuple(d[c] for c in _ROLLUP_COLUMNS) for d in deltas])
    return new


_PG_STAGE = "tenantlm_usage_stage"
_PG_CREATE_STAGE = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {_PG_STAGE} "
                    "(LIKE usage_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
_PG_MOVE_STAGE = (f"INSERT INTO usage_events ({', '.join(_EVENT_COLUMNS)}) "
                  f"SELECT {', '.join(_EVENT_COLUMNS)} FROM {_PG_STAGE} ON CONFLICT DO NOTHING RETURNING tenant_id, id")


async def _postgres_insert(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    """Postgres: ``COPY`` the batch into a per-session temporary table (emptied at commit), then one
    ``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING`` moves what is new, in the caller's transaction (so the
    platform scope set for RLS applies). Measured 2x the multi-row ``INSERT`` SQLAlchemy sends (``bench/ledger.py``)."""
    raw = await conn.get_raw_connection()
    pg: Any = raw.driver_connection  # the asyncpg connection, inside the transaction SQLAlchemy began
    await pg.execute(_PG_CREATE_STAGE)
    await pg.copy_records_to_table(_PG_STAGE, records=[tuple(r[c] for c in _EVENT_COLUMNS) for r in rows],
                                   columns=list(_EVENT_COLUMNS))
    return {(str(r[0]), str(r[1])) for r in await pg.fetch(_PG_MOVE_STAGE)}



@dataclass(frozen=True, slots=True)
class EveryTenant:
    """The scope of a platform-wide usage read. Reads name a tenant id or this, never ``None``: a missing tenant id
    can never widen a read to every tenant."""


EVERY_TENANT = EveryTenant()
Scope = str | EveryTenant


class UsageStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        dialect = postgresql if db.is_postgres else sqlite
        upsert = dialect.insert(usage_rollups)
        add = {c: usage_rollups.c[c] + upsert.excluded[c] for c in SUMS}
        self._upsert_rollups = upsert.on_conflict_do_update(
            index_elements=["tenant_id", "day", "model"], set_={**add, "updated_at": upsert.excluded.updated_at})

    def read_tx(self, scope: Scope) -> AbstractAsyncContextManager[AsyncConnection]:
        """A tenant's reads in its own transaction (RLS); ``EVERY_TENANT``'s in the platform scope."""
        if isinstance(scope, EveryTenant):
            return self.db.platform_tx()
        if not isinstance(scope, str) or not scope:
            raise TypeError(f"a usage read needs a tenant id or EVERY_TENANT, not {scope!r}")
        return self.db.tenant_tx(tenant_id=scope)

    async def insert(self, events: Sequence[UsageEvent], *, now: float) -> list[UsageEvent]:
        """Store ``events`` (any tenants) once each; return those that were new. Replays are skipped."""
        by_key = {(e.tenant_id, e.id): e for e in events}
        new = await self.insert_rows([event_row(e) for e in by_key.values()], now=now)
        return [by_key[key] for key in new]

    async def insert_rows(self, rows: Sequence[dict[str, Any]], *, now: float) -> list[tuple[str, str]]:
        """Store event rows (``payload_row``) once each; return the (tenant_id, id) of those that were new."""
        unique = list({(r["tenant_id"], r["id"]): r for r in rows}.values())
        if not unique:
            return []
        async with self.db.platform_tx() as conn:
            if self.db.is_postgres:
                inserted = await _postgres_insert(conn, unique)
                new = [r for r in unique if (r["tenant_id"], r["id"]) in inserted]
                if new:
                    await conn.execute(self._upsert_rollups, rollup_deltas(new, now=now))
            else:
                new = await _sqlite_insert(conn, unique, now=now)
        return [(r["tenant_id"], r["id"]) for r in new]

    async def events(self, *, scope: Scope, start: float, end: float,
                     page: int = 1000) -> AsyncIterator[list[UsageEvent]]:
        """Every event with ``start <= created_at < end`` in (created_at, id) order, one page per transaction."""
        after: tuple[float, str, str] | None = None
        while True:
            q = self._events_query(scope, start, end, after).limit(page)
            async with self.read_tx(scope) as conn:
                found = [row_event(r) for r in await conn.execute(q)]
            if not found:
                return
            yield found
            if len(found) < page:
                return
            last = found[-1]
            after = (last.created_at, last.tenant_id, last.id)

    @staticmethod
    def _events_query(scope: Scope, start: float, end: float,
                      after: tuple[float, str, str] | None) -> sa.Select[Any]:
        c = usage_events.c
        q = sa.select(usage_events).where(c.created_at >= start, c.created_at < end)
        if isinstance(scope, str):
            q = q.where(c.tenant_id == scope)
        if after is not None:
            q = q.where(sa.tuple_(c.created_at, c.tenant_id, c.id) > sa.tuple_(*after))
        return q.order_by(c.created_at, c.tenant_id, c.id)

    async def forget_tenant(self, *, tenant_id: str) -> None:
        """Erasure: the tenant's usage rows, rollups and alert records."""
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            for table in (usage_events, usage_rollups, usage_alerts):
                await conn.execute(table.delete().where(table.c.tenant_id == tenant_id))
