"""Copy one tenant's content rows from one database to another, bring the copy up to date, and prove it equal, in
memory bounded by a few pages of rows, not by the tenant.

``sync`` reads every content table of both sides in key order, a page at a time (keyset pagination on the key
columns), and merges the two sides range by range. A page is at most ``PAGE_ROWS`` rows and, where a page of the
table's widest rows would pass ``PAGE_BYTES`` (file parts), the rows' sizes are read first (the database measures them
without reading them) and the page ends where they reach it, at least one row. One query per side first counts each
table's rows and finds its widest. Then two passes: the first reads keys only and deletes what the target has and the
source no longer has (children first); the second reads whole rows and inserts or updates what differs (parents
first); changes are written in transactions of at most ``BATCH_ROWS`` rows, so that a pool target is never locked for
long. Run once it is the bulk copy; run again it is the catch-up, and what it changes is only the delta. ``verify``
compares the counts, then merges both sides the same way and names the tables whose rows differ, value by value.
``fingerprint`` gives per table the row count and a SHA-256 over the rows in key order (for tests and reports).
Memory: a page of each side, the changes of one range and the driver's buffers for them; with the defaults the
process grows by some 30 MiB (SQLite) to 45 MiB (Postgres), whatever the tenant holds (``docs/benchmarks.md``, Tenant
move memory).

The source is read in ONE snapshot transaction for a whole ``sync`` or ``verify`` (paging inside it), so what is
copied is one consistent state of the tenant, though it keeps writing: a file's parts are never copied without the
file, and as parents are applied before their children from the same snapshot, every foreign key holds on the target
at every commit. What the tenant writes meanwhile is the next pass's delta (the catch-up; under the fence nothing
writes). The target, which only the copy writes for this tenant, is read page by page in short transactions; every
change a range makes is at or before that range's end, where the next page starts, so reads never see the copy's own
writes ahead of them.

Ranges, not a comparison of keys in Python: both sides' next pages are read at once; the range ends at the last key
of one side's page where the other side's page holds that key too (usually both pages end on the same key: the sides
hold mostly the same rows), and where neither does, the target's rows up to the source page's last key are read with
the database's own comparison (when those fill a page, the range ends at the last of them and the source's rows up to
it are read again). Rows of one range are matched by key equality, so the merge never orders keys itself and holds
whatever collation the two databases share (a silo is on the pool's server: the same database on Postgres, binary on
SQLite).

Tables with a surrogate key that a database numbers itself (``chunks.id``) are matched on their natural key and
inserted without the surrogate, so two databases' numbering never collide; the caller drops anything cached by
those ids (the search indexes).
"""

from __future__ import annotations

import asyncio
import hashlib
import operator
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

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
PAGE_ROWS = 5000
PAGE_BYTES = 8 << 20
BATCH_ROWS = 500  # rows changed per transaction on the target

Progress = Callable[[int], Awaitable[None] | None]
Fingerprint = dict[str, tuple[int, str]]
Key = tuple[Any, ...]
Row = tuple[Any, ...]
_T = TypeVar("_T")


@dataclass(frozen=True)
class Paging:
    """How much one page may hold: ``rows`` rows and about ``bytes`` bytes of binary values (at least one row)."""

    rows: int = PAGE_ROWS
    bytes: int = PAGE_BYTES


def _key_columns(table: sa.Table) -> tuple[str, ...]:
    return _NATURAL_KEYS.get(table.name) or tuple(c.name for c in table.primary_key.columns)


def _value_columns(table: sa.Table) -> tuple[str, ...]:
    skip = _SURROGATES.get(table.name)
    return tuple(c.name for c in table.columns if c.name != skip)


def _size_of(table: sa.Table, columns: tuple[str, ...]) -> sa.ColumnElement[Any] | None:
    """A row's bytes in its binary columns (None: it has none), as the database measures them without reading
    them."""
    blobs = [table.c[c] for c in columns if isinstance(table.c[c].type, sa.LargeBinary)]
    if not blobs:
        return None
    size: sa.ColumnElement[Any] = sa.func.coalesce(sa.func.length(blobs[0]), 0)
    for blob in blobs[1:]:
        size = size + sa.func.coalesce(sa.func.length(blob), 0)
    return size


@dataclass(frozen=True)
class _Count:
    rows: int
    widest: int  # the most bytes one of the rows holds in its binary columns
    bytes: int  # all of them


async def _survey(conn: AsyncConnection, tenant_id: str) -> dict[str, _Count]:
    """Per content table, the tenant's rows, the widest of them and their bytes, in one query."""
    parts = []
    for table in CONTENT_TABLES:
        size = _size_of(table, _value_columns(table))
        widest, total = (sa.literal(0), sa.literal(0)) if size is None else (
            sa.func.coalesce(sa.func.max(size), 0), sa.func.coalesce(sa.func.sum(size), 0))
        parts.append(sa.select(sa.literal(table.name), sa.func.count(), widest, total)
                     .select_from(table).where(table.c.tenant_id == tenant_id))
    return {name: _Count(int(n), int(w), int(b)) for name, n, w, b in await conn.execute(sa.union_all(*parts))}


@dataclass(frozen=True)
class _Page:
    rows: list[Row]
    more: bool  # cut short: rows after the last one may remain within the range asked for (or after it, unbounded)


@dataclass
class _Reader:
    """Pages of one table's rows of one tenant (``columns``, the key columns among them), in key order."""

    table: sa.Table
    columns: tuple[str, ...]
    tenant_id: str
    paging: Paging
    fits_any_page: bool = False  # a page of its widest rows is within the budget: pages are counted in rows only
    sizes_read: int = PAGE_ROWS  # else: how many rows' sizes to read for a page (about 4 pages of rows of average size)
    keys: tuple[str, ...] = field(init=False)
    key_of: Callable[[Row], Key] = field(init=False)  # a row's key (every key has two columns or more)

    def __post_init__(self) -> None:
        self.keys = _key_columns(self.table)
        self.key_of = operator.itemgetter(*(self.columns.index(k) for k in self.keys))

    def _where(self, after: Key | None, upto: Key | None) -> list[sa.ColumnElement[bool]]:
        # ``tenant_id = ? AND (the other key columns) > (...)``: both databases search the key's index for the range
        # (a row value that starts with the tenant_id makes SQLite scan all of the tenant's index entries)
        assert self.keys[0] == "tenant_id"
        rest = self.keys[1:]
        key = sa.tuple_(*(self.table.c[k] for k in rest))

        def bound(values: Key) -> sa.Tuple:
            return sa.tuple_(*(sa.literal(v, self.table.c[k].type) for k, v in zip(rest, values[1:], strict=True)))
        where = [self.table.c.tenant_id == self.tenant_id]
        if after is not None:
            where.append(key > bound(after))
        if upto is not None:
            where.append(key <= bound(upto))
        return where

    def _select(self, *columns: sa.ColumnElement[Any], after: Key | None, upto: Key | None) -> sa.Select[Any]:
        return (sa.select(*columns).where(*self._where(after, upto))
                .order_by(*(self.table.c[k] for k in self.keys)))

    async def page(self, conn: AsyncConnection, after: Key | None, upto: Key | None) -> _Page:
        """The rows with a key in (``after``, ``upto``] (None: unbounded), the first page of them. Unless a page of
        the widest rows fits the budget (``fits_any_page``), the rows' sizes are read first and the page ends where
        they reach it."""
        columns = [self.table.c[c] for c in self.columns]
        size = _size_of(self.table, self.columns)
        if self.fits_any_page or size is None:
            rows = [tuple(r) for r in (await conn.execute(
                self._select(*columns, after=after, upto=upto).limit(self.paging.rows))).all()]
            return _Page(rows, len(rows) == self.paging.rows)
        sized = (await conn.execute(self._select(*(self.table.c[k] for k in self.keys), size,
                                                 after=after, upto=upto).limit(self.sizes_read))).all()
        if not sized:
            return _Page([], False)
        taken = _fits([int(row[-1]) for row in sized], self.paging.bytes)
        last = tuple(sized[taken - 1][:-1])
        rows = [tuple(r) for r in (await conn.execute(self._select(*columns, after=after, upto=last))).all()]
        return _Page(rows, taken < len(sized) or len(sized) == self.sizes_read)


def _fits(sizes: list[int], budget: int) -> int:
    """How many of the rows (their sizes in order) a page takes: up to the one that reaches the budget, at least one."""
    total = 0
    for n, size in enumerate(sizes, start=1):
        total += size
        if total >= budget:
            return n
    return len(sizes)


class _Source:
    """One side read inside one snapshot transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def read(self, query: Callable[[AsyncConnection], Awaitable[_T]]) -> _T:
        return await query(self.conn)


class _Target:
    """One side read query by query, each in a short transaction of its own."""

    def __init__(self, db: Database, tenant_id: str) -> None:
        self.db, self.tenant_id = db, tenant_id

    async def read(self, query: Callable[[AsyncConnection], Awaitable[_T]]) -> _T:
        async with self.db.tenant_tx(tenant_id=self.tenant_id) as conn:
            return await query(conn)


async def _page(side: _Source | _Target, reader: _Reader, after: Key | None, upto: Key | None) -> _Page:
    return await side.read(lambda conn: reader.page(conn, after, upto))


@dataclass
class _Changes:
    """What to change in one range of the target to make it equal the source's."""

    insert: list[Row]
    update: list[Row]
    delete: list[Key]

    def __bool__(self) -> bool:
        return bool(self.insert or self.update or self.delete)


def _diff(reader: _Reader, sources: list[Row], targets: list[Row]) -> _Changes:
    """Rows of one range matched by key equality (never by order)."""
    have = {reader.key_of(row): row for row in targets}
    want = {reader.key_of(row): row for row in sources}
    return _Changes(insert=[row for k, row in want.items() if k not in have],
                    update=[row for k, row in want.items() if k in have and have[k] != row],
                    delete=[k for k in have if k not in want])


async def _both(source: Awaitable[_Page], target: Awaitable[_Page]) -> tuple[_Page, _Page]:
    """Both sides' reads at once (two connections); neither is left running when the other fails."""
    src, tgt = await asyncio.gather(source, target, return_exceptions=True)
    for got in (src, tgt):
        if isinstance(got, BaseException):
            raise got
    assert isinstance(src, _Page) and isinstance(tgt, _Page)
    return src, tgt


async def _refill(side: _Source | _Target, reader: _Reader, after: Key | None, held: _Page | None) -> _Page:
    """The side's first rows after ``after``: those held from its last page, else its next page."""
    if held is not None and (held.rows or not held.more):
        return held
    return await _page(side, reader, after, None)


def _index(reader: _Reader, rows: list[Row], key: Key) -> int | None:
    return next((i for i, row in enumerate(rows) if reader.key_of(row) == key), None)


async def _ranges(reader: _Reader, source: _Source, target: _Target) -> AsyncIterator[_Changes]:
    """The changes that make the target's rows of the table equal the source's, range by range in the database's key
    order. Each side holds a page of its first rows after the last range's end (both read at once); the next range
    ends where both sides' rows up to its end are known without comparing keys: at the last key of one side's page
    where the other side's page holds that key too, or, where neither does, at the source page's last key, up to
    which the target's rows are read again with the database's own comparison (or at the last of those, when they
    fill a page). Rows of a page not merged yet are held for the next range."""
    after: Key | None = None
    src: _Page | None = None
    tgt: _Page | None = None
    while True:
        src, tgt = await _both(_refill(source, reader, after, src), _refill(target, reader, after, tgt))
        if not src.rows and not tgt.rows:
            return
        if not src.rows or not tgt.rows:  # one side has no rows after ``after``: the other's page is the range
            upto = reader.key_of((src.rows or tgt.rows)[-1])
            s, t = len(src.rows), len(tgt.rows)
        elif (i := _index(reader, tgt.rows, reader.key_of(src.rows[-1]))) is not None:
            upto, s, t = reader.key_of(src.rows[-1]), len(src.rows), i + 1
        elif (j := _index(reader, src.rows, reader.key_of(tgt.rows[-1]))) is not None:
            upto, s, t = reader.key_of(tgt.rows[-1]), j + 1, len(tgt.rows)
        else:  # the target's rows up to the source page's last key, as the database orders them
            upto = reader.key_of(src.rows[-1])
            tgt = await _page(target, reader, after, upto)
            if tgt.more:  # more than a page of them: the range ends at the last one read
                upto = reader.key_of(tgt.rows[-1])
                src = await _page(source, reader, after, upto)  # a part of the page read before
            changes = _diff(reader, src.rows, tgt.rows)
            src = tgt = None  # both sides read on from the range's end
            after = upto
            yield changes
            continue
        changes = _diff(reader, src.rows[:s], tgt.rows[:t])
        src, tgt = _Page(src.rows[s:], src.more), _Page(tgt.rows[t:], tgt.more)
        after = upto
        yield changes


def _match(table: sa.Table, key: Key) -> sa.ColumnElement[bool]:
    return sa.and_(*(table.c[c] == v for c, v in zip(_key_columns(table), key, strict=True)))


async def _in_batches(target: _Target, items: list[Any], write: Callable[[AsyncConnection, list[Any]], Awaitable[None]],
                      progress: Progress | None) -> int:
    """``write`` the items to the target in transactions of at most ``BATCH_ROWS`` rows each."""
    for start in range(0, len(items), BATCH_ROWS):
        batch = items[start:start + BATCH_ROWS]
        async with target.db.tenant_tx(tenant_id=target.tenant_id) as conn:
            await write(conn, batch)
        if progress is not None:
            done = progress(len(batch))
            if done is not None:
                await done
    return len(items)


def _on_its_own(table: sa.Table) -> bool:
    """No other content table's rows refer to the table's, nor its to theirs, and only its key is unique: its rows can
    be deleted in the same pass that inserts and updates them."""
    names = {t.name for t in CONTENT_TABLES}
    refers = any(fk.column.table.name in names for fk in table.foreign_keys)
    referred = any(fk.column.table is table for t in CONTENT_TABLES for fk in t.foreign_keys)
    unique = any(ix.unique for ix in table.indexes) or any(
        isinstance(c, sa.UniqueConstraint) for c in table.constraints)
    return not (refers or referred or unique)


def _deleter(table: sa.Table) -> Callable[[AsyncConnection, list[Key]], Awaitable[None]]:
    async def delete(conn: AsyncConnection, keys: list[Key]) -> None:
        await conn.execute(table.delete().where(sa.or_(*(_match(table, k) for k in keys))))
    return delete


async def _delete_missing(reader: _Reader, source: _Source, target: _Target, progress: Progress | None) -> int:
    """Delete the target's rows whose key the source does not have (keys only are read)."""
    changed, delete = 0, _deleter(reader.table)
    async for changes in _ranges(reader, source, target):
        changed += await _in_batches(target, changes.delete, delete, progress)
    return changed


async def _upsert(reader: _Reader, source: _Source, target: _Target, progress: Progress | None, *,
                  deletes: bool) -> int:
    """Insert the source's rows the target lacks and update those that differ (and, with ``deletes``, delete the
    target's rows the source does not have)."""
    table, changed, delete = reader.table, 0, _deleter(reader.table)

    async def insert(conn: AsyncConnection, rows: list[Row]) -> None:
        await conn.execute(table.insert(), [dict(zip(reader.columns, row, strict=True)) for row in rows])

    async def update(conn: AsyncConnection, rows: list[Row]) -> None:
        for row in rows:
            await conn.execute(table.update().where(_match(table, reader.key_of(row)))
                               .values(dict(zip(reader.columns, row, strict=True))))
    async for d in _ranges(reader, source, target):
        if deletes:
            changed += await _in_batches(target, d.delete, delete, progress)
        changed += await _in_batches(target, d.insert, insert, progress)
        changed += await _in_batches(target, d.update, update, progress)
    return changed


def _reader(table: sa.Table, columns: tuple[str, ...], tenant_id: str, paging: Paging,
            *counts: dict[str, _Count]) -> _Reader:
    widest = max(c[table.name].widest for c in counts)
    rows = sum(c[table.name].rows for c in counts)
    average = sum(c[table.name].bytes for c in counts) // max(rows, 1)
    return _Reader(table, columns, tenant_id, paging, fits_any_page=widest * paging.rows <= paging.bytes,
                   sizes_read=min(paging.rows, 4 * paging.bytes // max(average, 1) + 16))


async def sync(source: Database, target: Database, tenant_id: str, progress: Progress | None = None, *,
               paging: Paging | None = None) -> int:
    """Make the target's rows of the tenant equal to the source's; returns how many rows changed. Deletes children
    first (in tables where the target has rows), then inserts and updates parents first (in tables where the source
    has rows), in transactions of at most ``BATCH_ROWS`` rows. A table no other refers to, nor it to them, and with
    no unique column but its key (the request log, responses, conversations, memories), is deleted from in the same
    pass as it is inserted into: one read of it, not two."""
    paging = paging or Paging()
    changed = 0
    tgt = _Target(target, tenant_id)
    async with source.tenant_snapshot(tenant_id=tenant_id) as conn:
        src = _Source(conn)
        want = await _survey(conn, tenant_id)
        have = await tgt.read(lambda c: _survey(c, tenant_id))
        for table in reversed(CONTENT_TABLES):
            if have[table.name].rows and not _on_its_own(table):
                reader = _reader(table, _key_columns(table), tenant_id, paging, want, have)
                changed += await _delete_missing(reader, src, tgt, progress)
        for table in CONTENT_TABLES:
            own = _on_its_own(table)
            if want[table.name].rows or (own and have[table.name].rows):
                reader = _reader(table, _value_columns(table), tenant_id, paging, want, have)
                changed += await _upsert(reader, src, tgt, progress, deletes=own)
    return changed


async def verify(source: Database, target: Database, tenant_id: str, *, paging: Paging | None = None) -> list[str]:
    """Read both sides again, range by range, and name the tables whose rows differ, compared row by row and value by
    value (empty: the copy equals the source)."""
    paging = paging or Paging()
    differ = []
    tgt = _Target(target, tenant_id)
    async with source.tenant_snapshot(tenant_id=tenant_id) as conn:
        src = _Source(conn)
        want = await _survey(conn, tenant_id)
        have = await tgt.read(lambda c: _survey(c, tenant_id))
        for table in CONTENT_TABLES:
            if want[table.name].rows != have[table.name].rows:
                differ.append(table.name)
                continue
            if not want[table.name].rows:
                continue
            reader = _reader(table, _value_columns(table), tenant_id, paging, want, have)
            async for changes in _ranges(reader, src, tgt):
                if changes:
                    differ.append(table.name)
                    break
    return differ


async def count_rows(db: Database, tenant_id: str) -> int:
    total = 0
    async with db.tenant_tx(tenant_id=tenant_id) as conn:
        for table in CONTENT_TABLES:
            q = sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == tenant_id)
            total += int((await conn.execute(q)).scalar_one())
    return total


async def _all_rows(side: _Source, reader: _Reader) -> AsyncIterator[Row]:
    after: Key | None = None
    while (page := await _page(side, reader, after, None)).rows:
        for row in page.rows:
            yield row
        after = reader.key_of(page.rows[-1])


async def fingerprint(db: Database, tenant_id: str, *, paging: Paging | None = None) -> Fingerprint:
    """Per content table: (rows, SHA-256 of the rows in key order), read in one snapshot."""
    paging = paging or Paging()
    out = {}
    async with db.tenant_snapshot(tenant_id=tenant_id) as conn:
        side = _Source(conn)
        counts = await _survey(conn, tenant_id)
        for table in CONTENT_TABLES:
            digest, n = hashlib.sha256(), 0
            async for row in _all_rows(side, _reader(table, _value_columns(table), tenant_id, paging, counts)):
                digest.update(repr(row).encode())
                n += 1
            out[table.name] = (n, digest.hexdigest())
    return out


async def delete_tenant_rows(db: Database, tenant_id: str) -> None:
    """Remove the tenant's content rows from ``db`` (children first), one table per transaction."""
    for table in reversed(CONTENT_TABLES):
        async with db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(table.delete().where(table.c.tenant_id == tenant_id))
