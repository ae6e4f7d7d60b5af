"""Copy one tenant's content rows from one database to another, bring the copy up to date, and prove it equal.

``sync`` reads the tenant's rows of every content table on both sides, then deletes what the target has and the
source no longer has (children first), and inserts or updates what differs (parents first), in batches of short
transactions so that a pool target is never locked for long. Run once it is the bulk copy; run again it is the
catch-up, and what it changes is only the delta. For the switch, the move reads both sides, applies the delta, reads
the target again and compares it with the source row by row and value by value (``differing_tables``).
``fingerprint`` gives per table the row count and a SHA-256 over the rows in key order (for tests and reports).

Tables with a surrogate key that a database numbers itself (``chunks.id``) are matched on their natural key and
inserted without the surrogate, so two databases' numbering never collide; the caller drops anything cached by
those ids (the search indexes).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import (
    chunks,
    conversation_items,
    conversations,
    file_parts,
    files,
    memories,
    request_log,
    responses,
    vector_store_file_batches,
    vector_store_files,
    vector_stores,
)

# The content a silo holds, parents before children.
# (Control-plane rows stay in the pool: the tenant, its keys, end users, limits, data keys, audit, the usage and storage
# ledgers, private models and adapters.)
CONTENT_TABLES: tuple[sa.Table, ...] = (files, file_parts, vector_stores, vector_store_file_batches,
                                        vector_store_files, chunks, request_log, responses, conversations,
                                        conversation_items, memories)
# Surrogate keys numbered by each database, and the natural key rows are matched on instead.
_NATURAL_KEYS: dict[str, tuple[str, ...]] = {"chunks": ("tenant_id", "vector_store_id", "file_id", "seq")}
_SURROGATES: dict[str, str] = {"chunks": "id"}
BATCH_ROWS = 500

Progress = Callable[[int], Awaitable[None] | None]


def _key_columns(table: sa.Table) -> tuple[str, ...]:
    return _NATURAL_KEYS.get(table.name) or tuple(c.name for c in table.primary_key.columns)


def _value_columns(table: sa.Table) -> tuple[str, ...]:
    skip = _SURROGATES.get(table.name)
    return tuple(c.name for c in table.columns if c.name != skip)


Rows = dict[tuple[Any, ...], tuple[Any, ...]]  # key -> the row's values, in _value_columns order
Snapshot = dict[str, Rows]
Fingerprint = dict[str, tuple[int, str]]


async def read(db: Database, tenant_id: str) -> Snapshot:
    """Every content table of the tenant, read in ONE snapshot transaction (a file's parts are never read without
    the file they belong to, though the tenant keeps writing)."""
    out: Snapshot = {}
    async with db.tenant_snapshot(tenant_id=tenant_id) as conn:
        for table in CONTENT_TABLES:
            cols = _value_columns(table)
            at = [cols.index(k) for k in _key_columns(table)]
            q = sa.select(*(table.c[c] for c in cols)).where(table.c.tenant_id == tenant_id)
            out[table.name] = {tuple(row[i] for i in at): tuple(row) for row in await conn.execute(q)}
    return out


@dataclass
class TableDiff:
    table: sa.Table
    insert: list[dict[str, Any]] = field(default_factory=list)
    update: list[dict[str, Any]] = field(default_factory=list)
    delete: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return len(self.insert) + len(self.update) + len(self.delete)


def compare(sources: Snapshot, targets: Snapshot) -> list[TableDiff]:
    """What to change in the target to make it equal the source."""
    out = []
    for table in CONTENT_TABLES:
        cols = _value_columns(table)
        have, want = targets[table.name], sources[table.name]
        d = TableDiff(table, delete=[k for k in have if k not in want])
        for k, row in want.items():
            old = have.get(k)
            if old is None:
                d.insert.append(dict(zip(cols, row, strict=True)))
            elif old != row:
                d.update.append(dict(zip(cols, row, strict=True)))
        out.append(d)
    return out


async def read_both(source: Database, target: Database, tenant_id: str) -> tuple[Snapshot, Snapshot]:
    """Both sides at once (two databases, two connections)."""
    sources, targets = await asyncio.gather(read(source, tenant_id), read(target, tenant_id))
    return sources, targets


def _match(table: sa.Table, key: tuple[Any, ...]) -> sa.ColumnElement[bool]:
    return sa.and_(*(table.c[c] == v for c, v in zip(_key_columns(table), key, strict=True)))


async def _batches(target: Database, tenant_id: str, items: list[Any],
                   apply: Callable[[Any, list[Any]], Awaitable[None]], progress: Progress | None) -> None:
    for start in range(0, len(items), BATCH_ROWS):
        batch = items[start:start + BATCH_ROWS]
        async with target.tenant_tx(tenant_id=tenant_id) as conn:
            await apply(conn, batch)
        if progress is not None:
            done = progress(len(batch))
            if done is not None:
                await done


async def apply(target: Database, tenant_id: str, diffs: list[TableDiff], progress: Progress | None = None) -> int:
    """Deletes children first, then inserts and updates parents first."""
    for d in reversed(diffs):
        table = d.table

        async def delete(conn: Any, keys: list[tuple[Any, ...]], table: sa.Table = table) -> None:
            await conn.execute(table.delete().where(sa.or_(*(_match(table, k) for k in keys))))
        await _batches(target, tenant_id, d.delete, delete, progress)
    for d in diffs:
        table = d.table

        async def insert(conn: Any, rows: list[dict[str, Any]], table: sa.Table = table) -> None:
            await conn.execute(table.insert(), rows)

        async def update(conn: Any, rows: list[dict[str, Any]], table: sa.Table = table) -> None:
            keys = _key_columns(table)
            for row in rows:
                await conn.execute(table.update().where(_match(table, tuple(row[k] for k in keys))).values(row))
        await _batches(target, tenant_id, d.insert, insert, progress)
        await _batches(target, tenant_id, d.update, update, progress)
    return sum(d.changes for d in diffs)


async def sync(source: Database, target: Database, tenant_id: str, progress: Progress | None = None) -> int:
    """Make the target's rows of the tenant equal to the source's; returns how many rows changed."""
    sources, targets = await read_both(source, target, tenant_id)
    return await apply(target, tenant_id, compare(sources, targets), progress)


def differing_tables(a: Snapshot, b: Snapshot) -> list[str]:
    """The tables whose rows differ, compared row by row and value by value."""
    return [name for name in a if a[name] != b.get(name)]


async def verify(source: Database, target: Database, tenant_id: str) -> list[str]:
    """Read both sides again and name the tables whose rows differ (empty: the copy equals the source)."""
    sources, targets = await read_both(source, target, tenant_id)
    return differing_tables(sources, targets)


async def count_rows(db: Database, tenant_id: str) -> int:
    total = 0
    async with db.tenant_tx(tenant_id=tenant_id) as conn:
        for table in CONTENT_TABLES:
            q = sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == tenant_id)
            total += int((await conn.execute(q)).scalar_one())
    return total


def _fingerprint(tables: Snapshot) -> Fingerprint:
    out = {}
    for table_name, rows in tables.items():
        digest = hashlib.sha256()
        for key in sorted(rows, key=repr):
            digest.update(repr(rows[key]).encode())
        out[table_name] = (len(rows), digest.hexdigest())
    return out


async def fingerprint(db: Database, tenant_id: str) -> Fingerprint:
    """Per content table: (rows, SHA-256 of the rows in key order)."""
    return _fingerprint(await read(db, tenant_id))


async def delete_tenant_rows(db: Database, tenant_id: str) -> None:
    """Remove the tenant's content rows from ``db`` (children first), one table per transaction."""
    for table in reversed(CONTENT_TABLES):
        async with db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(table.delete().where(table.c.tenant_id == tenant_id))
