"""Row-level security holds for tenant prompt overrides: with the app-side filter removed, Postgres still returns
one tenant's overrides and labels only, refuses writing a foreign row, and shows nothing without a tenant."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from services import PostgresDatabase
from tenantlm.prompts.store import PromptStore, VersionRow
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import check_app_role, migrate
from tenantlm.storage.sql.tables import prompt_override_labels, prompt_overrides
from tenantlm.tenancy.models import Tenant, TenantStatus
from tenantlm.tenancy.store import TenancyStore

TABLES = ("prompt_overrides", "prompt_override_labels")


def _tenant(tid: str) -> Tenant:
    return Tenant(id=tid, name=tid, status=TenantStatus.ACTIVE, plan="free", region="local", metadata={}, settings={},
                  allowed_models=None, model_aliases={}, created_at=time.time(), updated_at=time.time())


@pytest.fixture
async def app_db(pg_database: PostgresDatabase) -> Database:
    await migrate(url=pg_database.app_url, migrate_url=pg_database.owner_url)
    db = Database.from_url(pg_database.app_url)
    await check_app_role(db.engine)
    store = PromptStore(db)
    await store.create(prompt_id="pmpt_1", name="p", first=VersionRow(
        prompt_id="pmpt_1", version=1, template="x", variables={}, model=None, created_at=1.0))
    for tid in ("ten_a", "ten_b"):
        await TenancyStore(db).insert_tenant(tenant_id=tid, tenant=_tenant(tid))

        async def seal(_version: int, tid: str = tid) -> bytes:
            return f"sealed-{tid}".encode()

        for _ in range(2):
            await store.add_override(tenant_id=tid, prompt_id="pmpt_1", created_at=1.0, seal=seal)
    return db


class UnfilteredStore(PromptStore):
    """The bug RLS exists for: an override read that forgot ``WHERE tenant_id = ...``."""

    async def all_sealed(self, *, tenant_id: str) -> list[bytes]:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [bytes(r.sealed) for r in await conn.execute(sa.select(prompt_overrides))]


async def test_unfiltered_reads_see_one_tenant(app_db: Database) -> None:
    leaky = UnfilteredStore(app_db)
    assert await leaky.all_sealed(tenant_id="ten_a") == [b"sealed-ten_a"] * 2
    async with app_db.tenant_tx(tenant_id="ten_b") as conn:
        for table in TABLES:
            owners = set((await conn.execute(sa.text(f"SELECT tenant_id FROM {table}"))).scalars())
            assert owners == {"ten_b"}, table
        assert (await conn.execute(sa.delete(prompt_override_labels))).rowcount == 1
    async with app_db.tenant_tx(tenant_id="ten_a") as conn:
        assert len((await conn.execute(sa.select(prompt_override_labels))).all()) == 1
    await app_db.dispose()


async def test_writing_a_foreign_override_is_refused(app_db: Database) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="row-level security"):
        async with app_db.tenant_tx(tenant_id="ten_a") as conn:
            await conn.execute(prompt_overrides.insert().values(tenant_id="ten_b", prompt_id="pmpt_1", version=9,
                                                                created_at=1.0, sealed=b"x"))
    with pytest.raises(sa.exc.DBAPIError, match="row-level security"):
        async with app_db.tenant_tx(tenant_id="ten_a") as conn:
            await conn.execute(sa.update(prompt_override_labels).values(tenant_id="ten_b"))
    await app_db.dispose()


async def test_no_tenant_setting_sees_no_override(app_db: Database) -> None:
    async with app_db.engine.connect() as conn:
        for table in TABLES:
            assert (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one() == 0
        assert (await conn.execute(sa.text("SELECT count(*) FROM prompt_versions"))).scalar_one() == 1  # platform's
    await app_db.dispose()
