"""Row-level security is a second wall: with the app-side tenant filter removed, Postgres still returns nothing
foreign. The server's role is neither owner nor BYPASSRLS, and the server refuses to start as one that is."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from services import PostgresDatabase
from tenantlm.knowledge.file_store import FileRow, FileStore
from tenantlm.knowledge.vector_store_store import FileRow as AttachedFile
from tenantlm.knowledge.vector_store_store import NewChunk, StoreRow, VectorStoreStore
from tenantlm.memories.store import MemoryRow, MemoryStore
from tenantlm.metering.storage import StorageUsageStore
from tenantlm.responses.store import ResponseRow, ResponseStore
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import UnsafeDatabaseRole, check_app_role, migrate
from tenantlm.storage.sql.tables import (
    TENANT_OWNED,
    api_keys,
    chunks,
    end_users,
    memories,
    tenant_adapters,
    tenant_models,
)
from tenantlm.tenancy import keys
from tenantlm.tenancy.models import ApiKey, Role, Tenant, TenantStatus
from tenantlm.tenancy.private_catalog import Adapter, PrivateCatalogStore, PrivateModel
from tenantlm.tenancy.store import TenancyStore, _key

SEEDED = ("tenants", "api_keys", "end_users", "files", "file_parts", "vector_stores", "vector_store_files", "chunks",
          "responses", "storage_usage", "memories", "tenant_models", "tenant_adapters")


class UnfilteredStore(TenancyStore):
    """A store with the bug RLS exists for: it forgot ``WHERE tenant_id = ...``."""

    async def list_keys(self, *, tenant_id: str) -> list[ApiKey]:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_key(r) for r in await conn.execute(sa.select(api_keys))]


def _tenant(tid: str) -> Tenant:
    return Tenant(id=tid, name=tid, status=TenantStatus.ACTIVE, plan="free", region="local", metadata={}, settings={},
                  allowed_models=None, model_aliases={}, created_at=time.time(), updated_at=time.time())


def _key_for(tid: str, n: int) -> ApiKey:
    token = keys.make_token(keys.TENANT_PREFIX, keys.new_key_id())
    return ApiKey(id=f"key_{tid}_{n}", tenant_id=tid, name="k", role=Role.MEMBER, scopes=None,
                  secret_hash=keys.hash_token(token), hint="abcd", created_at=time.time(), expires_at=None,
                  revoked_at=None, last_used_at=None)


async def _seed(db: Database) -> None:
    store = TenancyStore(db)
    for tid in ("ten_a", "ten_b"):
        await store.insert_tenant(tenant_id=tid, tenant=_tenant(tid))
        for n in range(3):
            await store.insert_key(tenant_id=tid, key=_key_for(tid, n))
        await store.upsert_end_users(tenant_id=tid, seen=[(f"user-of-{tid}", 1, 1.0, 1.0)])
        await _seed_knowledge(db, tid)
        await ResponseStore(db).insert(tenant_id=tid, row=ResponseRow(
            tenant_id=tid, id=f"resp_{tid}", previous_response_id=None, created_at=1.0, sealed_input=b"i",
            sealed_output=b"o"))
        await StorageUsageStore(db).record(tenant_id=tid, day="2026-12-04", sizes={"files": 1}, now=1.0)
        await _seed_memories(db, tid)
        await _seed_catalog(db, tid)


async def _seed_memories(db: Database, tid: str) -> None:
    """Two end users' memories per tenant, with the same end user ids in both tenants."""
    store = MemoryStore(db)
    for user in ("u1", "u2"):
        await store.insert(tenant_id=tid, row=MemoryRow(tenant_id=tid, end_user=user, id=f"mem_{tid}_{user}",
                                                        created_at=1.0, source=None, sealed_text=b"t",
                                                        sealed_vector=b"v"))


async def _seed_catalog(db: Database, tid: str) -> None:
    """A private model and an adapter, both named alike in every tenant."""
    store = PrivateCatalogStore(db)
    await store.insert_model(tenant_id=tid, model=PrivateModel(tid, "dedicated", "upstream", f"{tid}-deployment",
                                                               "chat", "eu-west", 1.0))
    await store.insert_adapter(tenant_id=tid, adapter=Adapter(tid, "support-v1", "dedicated", f"/loras/{tid}",
                                                              f"{tid}__support-v1__0001", 1.0))


async def _seed_knowledge(db: Database, tid: str) -> None:
    """A file, a vector store with the file attached and one chunk, through the stores (sealed bytes are opaque)."""
    files, stores = FileStore(db), VectorStoreStore(db)
    await files.begin(tenant_id=tid, row=FileRow(tenant_id=tid, id=f"file-{tid}", purpose="assistants", size=0,
                                                 parts=0, status="uploading", created_at=1.0, expires_at=None,
                                                 sealed_name=b"n"))
    await files.add_part(tenant_id=tid, file_id=f"file-{tid}", part=0, sealed=b"p")
    await stores.insert_store(tenant_id=tid, row=StoreRow(tenant_id=tid, id=f"vs_{tid}", sealed_meta=b"m",
                                                          created_at=1.0, last_active_at=1.0, expires_after_days=None))
    await stores.attach(tenant_id=tid, row=AttachedFile(
        tenant_id=tid, vector_store_id=f"vs_{tid}", file_id=f"file-{tid}", batch_id=None, status="in_progress",
        error_code=None, error_message=None, sealed_attributes=None, chunking={}, usage_bytes=0, created_at=1.0,
        attempts=0))
    claim = await stores.claim(tenant_id=tid, now=2.0, lease_s=60, token="t" * 32)
    assert claim is not None
    assert await stores.complete(claim=claim, new_chunks=[NewChunk(seq=0, tokens=1, sealed_text=b"t",
                                                                   sealed_vector=b"v")], usage_bytes=2)


@pytest.fixture
async def app_db(pg_database: PostgresDatabase) -> Database:
    await migrate(url=pg_database.app_url, migrate_url=pg_database.owner_url)
    db = Database.from_url(pg_database.app_url)
    await check_app_role(db.engine)
    await _seed(db)
    return db


async def test_unfiltered_query_returns_only_own_rows(app_db: Database) -> None:
    leaky = UnfilteredStore(app_db)
    for tid in ("ten_a", "ten_b"):
        rows = await leaky.list_keys(tenant_id=tid)
        assert len(rows) == 3 and {k.tenant_id for k in rows} == {tid}
    await app_db.dispose()


async def test_raw_sql_in_a_tenant_transaction_sees_one_tenant(app_db: Database) -> None:
    async with app_db.tenant_tx(tenant_id="ten_a") as conn:
        for table, column in TENANT_OWNED.items():
            owners = set((await conn.execute(sa.text(f"SELECT {column} FROM {table}"))).scalars())
            assert owners <= {"ten_a"}, table
            if table in SEEDED:
                assert owners == {"ten_a"}, table
        updated = await conn.execute(sa.update(end_users).values(request_count=99))
        assert updated.rowcount == 1
        deleted = await conn.execute(sa.delete(api_keys))
        assert deleted.rowcount == 3
    async with app_db.tenant_tx(tenant_id="ten_b") as conn:
        assert len((await conn.execute(sa.select(api_keys))).all()) == 3
        assert (await conn.execute(sa.select(end_users.c.request_count))).scalar_one() == 1
    await app_db.dispose()


async def test_writing_a_foreign_row_is_refused(app_db: Database) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="row-level security"):
        async with app_db.tenant_tx(tenant_id="ten_a") as conn:
            await conn.execute(end_users.insert().values(tenant_id="ten_b", user_id="intruder", first_seen_at=1.0,
                                                         last_seen_at=1.0, request_count=1))
    with pytest.raises(sa.exc.DBAPIError, match="row-level security"):
        async with app_db.tenant_tx(tenant_id="ten_a") as conn:
            await conn.execute(sa.update(end_users).values(tenant_id="ten_b"))
    await app_db.dispose()


async def test_no_tenant_setting_sees_nothing(app_db: Database) -> None:
    async with app_db.engine.connect() as conn:
        for table in TENANT_OWNED:
            assert (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one() == 0
        assert (await conn.execute(sa.text("SELECT count(*) FROM admin_keys"))).scalar_one() == 0
    await app_db.dispose()


async def test_append_only_tables_refuse_update_and_delete(app_db: Database) -> None:
    for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log", "DELETE FROM audit_checkpoints"):
        with pytest.raises(sa.exc.DBAPIError, match="permission denied"):
            async with app_db.platform_tx() as conn:
                await conn.execute(sa.text(statement))
    await app_db.dispose()


async def test_setting_does_not_leak_between_transactions(app_db: Database) -> None:
    async with app_db.tenant_tx(tenant_id="ten_a") as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM api_keys"))).scalar_one() == 3
    async with app_db.engine.connect() as conn:  # likely the same pooled connection
        assert (await conn.execute(sa.text("SELECT count(*) FROM api_keys"))).scalar_one() == 0
    await app_db.dispose()


async def test_server_refuses_owner_and_superuser_roles(pg_database: PostgresDatabase) -> None:
    await migrate(url=pg_database.app_url, migrate_url=pg_database.owner_url)
    for url in (pg_database.owner_url, pg_database.superuser_url):
        db = Database.from_url(url)
        try:
            with pytest.raises(UnsafeDatabaseRole):
                await check_app_role(db.engine)
        finally:
            await db.dispose()


async def test_without_migrate_url_an_unmigrated_database_is_refused(pg_database: PostgresDatabase) -> None:
    with pytest.raises(UnsafeDatabaseRole, match="MIGRATE_URL"):
        await migrate(url=pg_database.app_url, migrate_url=None)


async def test_an_unfiltered_memory_query_sees_only_its_own_tenant(app_db: Database) -> None:
    """A memory read that forgot both its tenant and its end-user filter still sees one tenant (the end user is the
    store's own predicate: ``MemoryStore`` puts it in every query), and a foreign memory cannot be written."""
    for tid in ("ten_a", "ten_b"):
        async with app_db.tenant_tx(tenant_id=tid) as conn:
            rows = (await conn.execute(sa.select(memories.c.tenant_id, memories.c.end_user))).all()
        assert sorted(rows) == [(tid, "u1"), (tid, "u2")]
        mine = await MemoryStore(app_db).of_end_user(tenant_id=tid, end_user="u1")
        assert [(r.tenant_id, r.end_user) for r in mine] == [(tid, "u1")]
    with pytest.raises(sa.exc.DBAPIError):
        async with app_db.tenant_tx(tenant_id="ten_a") as conn:
            await conn.execute(memories.insert().values(tenant_id="ten_b", end_user="u1", id="mem_x", created_at=1.0,
                                                        sealed_text=b"t"))
    await app_db.dispose()


async def test_an_unfiltered_chunk_query_sees_only_its_own_tenant(app_db: Database) -> None:
    """Every knowledge table answers a query that forgot its tenant filter with the current tenant's rows only."""
    for tid in ("ten_a", "ten_b"):
        async with app_db.tenant_tx(tenant_id=tid) as conn:
            owners = set((await conn.execute(sa.select(chunks.c.tenant_id))).scalars())
        assert owners == {tid}
    await app_db.dispose()


async def test_an_unfiltered_catalog_query_sees_only_its_own_tenants_models_and_adapters(app_db: Database) -> None:
    """Private models and adapters with the tenant filter forgotten: RLS still shows each tenant its own only."""
    for tid in ("ten_a", "ten_b"):
        async with app_db.tenant_tx(tenant_id=tid) as conn:
            models = (await conn.execute(sa.select(tenant_models.c.tenant_id, tenant_models.c.upstream_model))).all()
            adapters = (await conn.execute(sa.select(tenant_adapters.c.tenant_id, tenant_adapters.c.source))).all()
        assert [tuple(r) for r in models] == [(tid, f"{tid}-deployment")]
        assert [tuple(r) for r in adapters] == [(tid, f"/loras/{tid}")]
    with pytest.raises(sa.exc.DBAPIError, match="row-level security"):
        async with app_db.tenant_tx(tenant_id="ten_a") as conn:
            await conn.execute(tenant_adapters.insert().values(
                tenant_id="ten_b", name="planted", base_model="dedicated", source="/evil", lora_name="x",
                created_at=1.0))
    await app_db.dispose()
