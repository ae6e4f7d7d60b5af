"""Copying one tenant's content between two databases (what a tier move does), on SQLite and on Postgres: the copy
equals the source by row counts and checksums, another tenant's rows never travel, a second pass copies only the
delta (inserts, updates, deletes), surrogate chunk ids are the target's own, and the tenant's rows can be removed.
Both sides are read a page at a time: across page boundaries, with keys in orders Python's is not, and in memory
bounded by a few pages, not by the tenant's content."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from services import PostgresServer
from tenantlm.storage.sql import tenant_copy
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import migrate
from tenantlm.storage.sql.tables import (
    chunks,
    file_parts,
    files,
    memories,
    request_log,
    responses,
    tenants,
    vector_store_files,
    vector_stores,
)

A, B = "ten_aaaa", "ten_bbbb"


@pytest.fixture
async def target(database: Database, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A second, empty database on the same backend as ``database``."""
    if database.is_postgres:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        pg = server.create_database()
        url, migrate_url = pg.app_url, pg.owner_url
    else:
        url, migrate_url = f"sqlite+aiosqlite:///{tmp_path / 'target.db'}", None
    await migrate(url=url, migrate_url=migrate_url)
    db = Database.from_url(url)
    await _tenants(db)
    try:
        yield db
    finally:
        await db.dispose()
        if database.is_postgres:
            server.drop_database(pg.database)


async def _tenants(db: Database) -> None:
    async with db.platform_tx() as conn:
        for tid in (A, B):
            await conn.execute(tenants.insert().values(
                id=tid, name=tid, status="active", plan="free", region="local", metadata={}, settings={},
                allowed_models=None, model_aliases={}, created_at=0.0, updated_at=0.0, billing={}))


async def _seed(db: Database, tid: str, n: int) -> None:
    async with db.tenant_tx(tenant_id=tid) as conn:
        await conn.execute(files.insert(), [
            {"tenant_id": tid, "id": f"file-{i}", "purpose": "assistants", "bytes": 3, "parts": 1,
             "status": "uploaded", "created_at": float(i), "expires_at": None, "sealed_name": b"n%d" % i}
            for i in range(n)])
        await conn.execute(file_parts.insert(), [
            {"tenant_id": tid, "file_id": f"file-{i}", "part": 0, "sealed": bytes([i % 256]) * 64} for i in range(n)])
        await conn.execute(vector_stores.insert().values(tenant_id=tid, id="vs-1", sealed_meta=b"m", created_at=1.0,
                                                         last_active_at=1.0, expires_after_days=None))
        await conn.execute(vector_store_files.insert().values(
            tenant_id=tid, vector_store_id="vs-1", file_id="file-0", batch_id=None, status="completed",
            error_code=None, error_message=None, sealed_attributes=None, chunking={"type": "auto"}, usage_bytes=3,
            created_at=1.0, lease_until=None, lease_token=None, attempts=1))
        await conn.execute(chunks.insert(), [
            {"tenant_id": tid, "vector_store_id": "vs-1", "file_id": "file-0", "seq": s, "tokens": 5,
             "sealed_text": b"t%d" % s, "sealed_vector": b"v%d" % s} for s in range(4)])
        await conn.execute(request_log.insert(), [
            {"tenant_id": tid, "id": f"req-{i}", "created_at": float(i), "expires_at": 1e12, "key_id": None,
             "model": "m", "endpoint": "chat", "status": 200, "sealed": b"s%d" % i} for i in range(n)])
        await conn.execute(responses.insert().values(tenant_id=tid, id="resp-1", previous_response_id=None,
                                                     created_at=1.0, sealed_input=b"i", sealed_output=b"o"))


async def test_copy_catch_up_verify_and_remove(database: Database, target: Database) -> None:
    await _tenants(database)
    await _seed(database, A, 30)
    await _seed(database, B, 5)
    await _seed(target, B, 2)  # the target's own tenant: untouched by A's copy
    async with target.platform_tx() as conn:  # the target numbers chunks on its own
        await conn.execute(sa.delete(chunks).where(chunks.c.tenant_id == B))
    b_before = await tenant_copy.fingerprint(target, B)
    total = await tenant_copy.count_rows(database, A)
    assert total == 30 + 30 + 1 + 1 + 4 + 30 + 1
    copied: list[int] = []
    assert await tenant_copy.sync(database, target, A, copied.append) == total and sum(copied) == total
    assert await tenant_copy.fingerprint(target, A) == await tenant_copy.fingerprint(database, A)
    assert await tenant_copy.fingerprint(target, B) == b_before
    assert await tenant_copy.sync(database, target, A) == 0  # nothing changed: the catch-up copies nothing

    async with database.tenant_tx(tenant_id=A) as conn:  # the tenant keeps working on the source
        await conn.execute(files.delete().where(files.c.tenant_id == A, files.c.id == "file-7"))  # cascades its part
        await conn.execute(request_log.insert().values(tenant_id=A, id="req-new", created_at=9.0, expires_at=1e12,
                                                       key_id=None, model="m", endpoint="chat", status=200,
                                                       sealed=b"new"))
        await conn.execute(responses.update().where(responses.c.tenant_id == A).values(sealed_output=b"changed"))
    assert await tenant_copy.fingerprint(target, A) != await tenant_copy.fingerprint(database, A)
    assert await tenant_copy.sync(database, target, A) == 4  # file + its part deleted, one insert, one update
    assert await tenant_copy.fingerprint(target, A) == await tenant_copy.fingerprint(database, A)

    await tenant_copy.delete_tenant_rows(database, A)
    assert await tenant_copy.count_rows(database, A) == 0
    assert await tenant_copy.count_rows(database, B) == 5 + 5 + 1 + 1 + 4 + 5 + 1
    assert await tenant_copy.count_rows(target, A) == total - 2 + 1


# -- paging: the copy reads both sides a page at a time and merges them range by range ------------------------------

SMALL = tenant_copy.Paging(rows=4, bytes=1 << 20)


def _log_row(tid: str, rid: str, sealed: bytes = b"s") -> dict[str, object]:
    return {"tenant_id": tid, "id": rid, "created_at": 1.0, "expires_at": 1e12, "key_id": None, "model": "m",
            "endpoint": "chat", "status": 200, "sealed": sealed}


async def _log_ids(db: Database, tid: str) -> list[str]:
    async with db.tenant_tx(tenant_id=tid) as conn:
        return list((await conn.execute(
            sa.select(request_log.c.id).where(request_log.c.tenant_id == tid).order_by(request_log.c.id))).scalars())


# SMALL: pages of 4 rows; SIZED: file parts (64 bytes) are measured before they are read, and a page holds 3 of them
SIZED = tenant_copy.Paging(rows=50, bytes=150)


@pytest.mark.parametrize("paging", [SMALL, SIZED], ids=["rows", "bytes"])
async def test_pages_deletes_only_in_target_and_updates(database: Database, target: Database,
                                                        paging: tenant_copy.Paging) -> None:
    await _tenants(database)
    await _seed(database, A, 23)  # the tables with 23 rows are several pages long
    async with database.tenant_tx(tenant_id=A) as conn:  # and a file's chunks (matched on their natural key)
        await conn.execute(chunks.insert(), [
            {"tenant_id": A, "vector_store_id": "vs-1", "file_id": "file-0", "seq": s, "tokens": 5,
             "sealed_text": b"t%d" % s, "sealed_vector": b"v%d" % s} for s in range(4, 15)])
    total = await tenant_copy.count_rows(database, A)
    copied: list[int] = []
    assert await tenant_copy.sync(database, target, A, copied.append, paging=paging) == total
    assert sum(copied) == total
    if paging is SMALL:
        assert max(copied) <= SMALL.rows  # one transaction per range of at most a page
    else:
        assert copied.count(3) >= 23 // 3  # the file parts, 3 a page
    assert await tenant_copy.fingerprint(target, A) == await tenant_copy.fingerprint(database, A)
    assert await tenant_copy.verify(database, target, A, paging=paging) == []

    # the target holds rows the source does not (between, before and after the source's keys, more than a page
    # of them in one range), and differs in values in some rows
    async with target.tenant_tx(tenant_id=A) as conn:
        await conn.execute(request_log.insert(), [_log_row(A, rid) for rid in (
            "req-0a", "req-0b", "req-0c", "req-0d", "req-0e", "req-0f", "a-first", "zzz-last", "req-15x")])
        await conn.execute(request_log.update().where(request_log.c.tenant_id == A,
                                                      request_log.c.id.in_(["req-3", "req-17", "req-22"]))
                           .values(sealed=b"stale"))
        await conn.execute(file_parts.update().where(file_parts.c.tenant_id == A, file_parts.c.file_id == "file-9")
                           .values(sealed=b"stale"))
        await conn.execute(chunks.update().where(chunks.c.tenant_id == A, chunks.c.seq == 9).values(tokens=9))
        await conn.execute(memories.insert().values(  # a table the source has no rows of
            tenant_id=A, end_user="u", id="mem-1", created_at=1.0, source=None, sealed_text=b"m", sealed_vector=None))
    assert sorted(await tenant_copy.verify(database, target, A, paging=paging)) == [
        "chunks", "file_parts", "memories", "request_log"]
    assert await tenant_copy.sync(database, target, A, paging=paging) == 9 + 3 + 1 + 1 + 1
    assert await _log_ids(target, A) == await _log_ids(database, A)
    assert await tenant_copy.fingerprint(target, A) == await tenant_copy.fingerprint(database, A)
    assert await tenant_copy.verify(database, target, A, paging=paging) == []
    assert await tenant_copy.sync(database, target, A, paging=paging) == 0

    # the source lost most of its log and a file with its part: the target follows, page after page
    async with database.tenant_tx(tenant_id=A) as conn:
        await conn.execute(request_log.delete().where(request_log.c.tenant_id == A, request_log.c.id != "req-5"))
        await conn.execute(files.delete().where(files.c.tenant_id == A, files.c.id == "file-11"))
    assert await tenant_copy.sync(database, target, A, paging=paging) == 22 + 2
    assert await _log_ids(target, A) == ["req-5"]
    assert await tenant_copy.verify(database, target, A, paging=paging) == []


async def test_verify_detects_a_single_value(database: Database, target: Database) -> None:
    await _tenants(database)
    await _seed(database, A, 9)
    await tenant_copy.sync(database, target, A, paging=SMALL)
    assert await tenant_copy.verify(database, target, A, paging=SMALL) == []
    changes = [
        (file_parts.update().where(file_parts.c.file_id == "file-6").values(sealed=bytes([6]) * 63 + b"\x07"),
         "file_parts"),  # one byte of one part
        (request_log.update().where(request_log.c.id == "req-8").values(created_at=8.000001), "request_log"),
        (files.update().where(files.c.id == "file-2").values(expires_at=5.0), "files"),  # None -> a value
        (chunks.update().where(chunks.c.seq == 3).values(tokens=6), "chunks"),
        (request_log.delete().where(request_log.c.id == "req-0"), "request_log"),  # a row only in the source
    ]
    for change, table in changes:
        async with target.tenant_tx(tenant_id=A) as conn:
            await conn.execute(change)
        assert await tenant_copy.verify(database, target, A, paging=SMALL) == [table]
        assert await tenant_copy.sync(database, target, A, paging=SMALL) == 1
        assert await tenant_copy.verify(database, target, A, paging=SMALL) == []


# Keys in an order that is neither Python's (code points) nor ASCII case order: mixed case, accents, other scripts.
ODD_IDS = ["a", "B", "b", "A", "Z", "é", "E", "e", "ä", "Ä", "z", "日本", "😀", "a-1", "A-1", "ß", "ss", "Ω", "_x", "0"]


async def _icu_request_log_ids(db: Database, pg: PostgresServer) -> None:
    """On Postgres: order ``request_log.id`` by an ICU collation (a != b in Python's order), as a server whose
    default collation is a language's would."""
    name = db.engine.url.database
    assert name is not None
    pg.psql('ALTER TABLE request_log ALTER COLUMN id TYPE varchar(64) COLLATE "und-x-icu"', database=name)


async def test_mixed_case_and_non_ascii_keys(database: Database, target: Database,
                                             request: pytest.FixtureRequest) -> None:
    if database.is_postgres:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        for db in (database, target):
            await _icu_request_log_ids(db, server)
    await _tenants(database)
    source_ids, target_only = ODD_IDS[::2], ODD_IDS[1::2]
    async with database.tenant_tx(tenant_id=A) as conn:
        await conn.execute(request_log.insert(), [_log_row(A, rid, rid.encode()) for rid in source_ids])
    async with target.tenant_tx(tenant_id=A) as conn:  # interleaved with the source's in every order
        await conn.execute(request_log.insert(), [_log_row(A, rid, b"old") for rid in target_only + source_ids[:3]])
    if database.is_postgres:  # the database's order is not Python's: a merge that compared keys itself would fail
        assert await _log_ids(database, A) != sorted(source_ids)
    paging = tenant_copy.Paging(rows=3)
    assert await tenant_copy.verify(database, target, A, paging=paging) == ["request_log"]
    assert await tenant_copy.sync(database, target, A, paging=paging) == len(target_only) + len(source_ids)
    assert sorted(await _log_ids(target, A)) == sorted(source_ids)
    assert await tenant_copy.verify(database, target, A, paging=paging) == []
    assert await tenant_copy.sync(database, target, A, paging=paging) == 0


PART = 256 << 10


async def _peak_bytes(run: Callable[[], Awaitable[object]]) -> int:
    """The most Python memory ``run`` held at once above what was held when it started."""
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        await run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


async def test_memory_bounded_by_pages_not_by_the_tenant(database: Database, target: Database) -> None:
    await _tenants(database)
    n = 64  # 16 MiB of file parts
    async with database.tenant_tx(tenant_id=A) as conn:
        for i in range(n):
            await conn.execute(files.insert().values(
                tenant_id=A, id=f"file-{i:03}", purpose="assistants", bytes=PART, parts=1, status="uploaded",
                created_at=float(i), expires_at=None, sealed_name=b"n"))
            await conn.execute(file_parts.insert().values(tenant_id=A, file_id=f"file-{i:03}", part=0,
                                                          sealed=bytes([i]) * PART))
    paging = tenant_copy.Paging(bytes=4 * PART)  # a page: about 4 parts, 1 MiB
    page = 5 * PART  # what one page may hold: up to the part that crosses the budget

    copied = 0

    async def copy() -> None:
        nonlocal copied
        copied = await tenant_copy.sync(database, target, A, paging=paging)
    differ: list[str] = ["not run"]

    async def check() -> None:
        nonlocal differ
        differ = await tenant_copy.verify(database, target, A, paging=paging)
    sync_peak = await _peak_bytes(copy)
    assert copied == 2 * n
    verify_peak = await _peak_bytes(check)
    assert differ == []
    # the tenant's parts (16 MiB on each side) are never all in memory, nor is one side's table: a page of each side,
    # the changes of one range and the driver's buffers for them (measured: 2-5 MiB, the same for 3 times the parts)
    assert sync_peak < 5 * page < n * PART, sync_peak
    assert verify_peak < 5 * page, verify_peak


async def test_source_written_during_the_copy_is_copied_as_one_snapshot(database: Database,
                                                                         target: Database) -> None:
    """The tenant writes while its rows are copied table by table: what one pass copies is the state at its start
    (a file added after its table was copied does not arrive with its parts alone); the next pass brings the rest."""
    await _tenants(database)
    await _seed(database, A, 12)
    total = await tenant_copy.count_rows(database, A)
    wrote: list[str] = []

    async def write_meanwhile(_n: int) -> None:
        if wrote:
            return
        wrote.append("file-new")  # after the first batch: the files, before their parts
        async with database.tenant_tx(tenant_id=A) as conn:
            await conn.execute(files.insert().values(
                tenant_id=A, id="file-new", purpose="assistants", bytes=3, parts=1, status="uploaded",
                created_at=99.0, expires_at=None, sealed_name=b"new"))
            await conn.execute(file_parts.insert().values(tenant_id=A, file_id="file-new", part=0, sealed=b"p"))
            await conn.execute(request_log.delete().where(request_log.c.tenant_id == A, request_log.c.id == "req-3"))

    assert await tenant_copy.sync(database, target, A, write_meanwhile, paging=SMALL) == total
    assert wrote == ["file-new"]
    async with target.tenant_tx(tenant_id=A) as conn:
        parts = set((await conn.execute(sa.select(file_parts.c.file_id).where(file_parts.c.tenant_id == A))).scalars())
    assert "file-new" not in parts and "req-3" in await _log_ids(target, A)
    assert await tenant_copy.verify(database, target, A, paging=SMALL) == ["files", "file_parts", "request_log"]
    assert await tenant_copy.sync(database, target, A, paging=SMALL) == 3  # the catch-up: file, part, deleted log row
    assert await tenant_copy.verify(database, target, A, paging=SMALL) == []
