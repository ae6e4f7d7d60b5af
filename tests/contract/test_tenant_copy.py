"""Copying one tenant's content between two databases (what a tier move does), on SQLite and on Postgres: the copy
equals the source by row counts and checksums, another tenant's rows never travel, a second pass copies only the
delta (inserts, updates, deletes), surrogate chunk ids are the target's own, and the tenant's rows can be removed."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
