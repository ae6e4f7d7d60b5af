"""PrivateCatalogStore contract (a tenant's private models and adapters) and the tenant's allowed_regions, on every
SQL backend: rows belong to one tenant, a foreign name answers like a missing one, names are unique per tenant."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from services import PostgresDatabase
from tenantlm.errors import Conflict
from tenantlm.storage.sql.engine import Database, make_engine
from tenantlm.storage.sql.migrate import MIGRATIONS, migrate
from tenantlm.tenancy import keys
from tenantlm.tenancy.models import ApiKey, Role, Tenant, TenantStatus
from tenantlm.tenancy.private_catalog import Adapter, PrivateCatalog, PrivateCatalogStore, PrivateModel
from tenantlm.tenancy.store import TenancyStore


def make_tenant(tid: str, regions: list[str] | None = None) -> Tenant:
    now = time.time()
    return Tenant(id=tid, name=tid, status=TenantStatus.ACTIVE, plan="free", region="local", metadata={},
                  settings={}, allowed_models=None, model_aliases={}, created_at=now, updated_at=now,
                  allowed_regions=regions)


def make_key(tid: str) -> ApiKey:
    token = keys.make_token(keys.TENANT_PREFIX, keys.new_key_id())
    return ApiKey(id=f"key_{tid}", tenant_id=tid, name="k", role=Role.MEMBER, scopes=None,
                  secret_hash=keys.hash_token(token), hint="abcd", created_at=1.0, expires_at=None, revoked_at=None,
                  last_used_at=None)


def model(tid: str, name: str = "dedicated") -> PrivateModel:
    return PrivateModel(tenant_id=tid, name=name, provider="upstream", upstream_model=f"{tid}-deployment",
                        kind="chat", region="eu-west", created_at=1.0)


def adapter(tid: str, name: str = "support-v1") -> Adapter:
    return Adapter(tenant_id=tid, name=name, base_model="proxied-chat", source=f"/loras/{tid}",
                   lora_name=f"{tid}__{name}__0001", created_at=2.0)


async def seeded(database: Database) -> PrivateCatalogStore:
    tenants = TenancyStore(database)
    for tid in ("ten_a", "ten_b"):
        await tenants.insert_tenant(tenant_id=tid, tenant=make_tenant(tid))
    return PrivateCatalogStore(database)


async def test_entries_round_trip_per_tenant(database: Database) -> None:
    store = await seeded(database)
    await store.insert_model(tenant_id="ten_a", model=model("ten_a"))
    await store.insert_adapter(tenant_id="ten_a", adapter=adapter("ten_a"))
    await store.insert_adapter(tenant_id="ten_b", adapter=adapter("ten_b"))  # the same name, its own adapter
    a = await store.entries(tenant_id="ten_a")
    assert a.models == {"dedicated": model("ten_a")} and a.adapters == {"support-v1": adapter("ten_a")}
    b = await store.entries(tenant_id="ten_b")
    assert b.models == {} and b.adapters == {"support-v1": adapter("ten_b")}
    assert a.adapters["support-v1"].lora_name != b.adapters["support-v1"].lora_name


async def test_names_are_unique_per_tenant(database: Database) -> None:
    store = await seeded(database)
    await store.insert_model(tenant_id="ten_a", model=model("ten_a"))
    with pytest.raises(Conflict):
        await store.insert_model(tenant_id="ten_a", model=model("ten_a"))
    await store.insert_model(tenant_id="ten_b", model=model("ten_b"))
    await store.insert_adapter(tenant_id="ten_a", adapter=adapter("ten_a"))
    with pytest.raises(Conflict):
        await store.insert_adapter(tenant_id="ten_a", adapter=adapter("ten_a"))


async def test_delete_reaches_only_its_own_tenant(database: Database) -> None:
    store = await seeded(database)
    await store.insert_model(tenant_id="ten_a", model=model("ten_a"))
    await store.insert_adapter(tenant_id="ten_a", adapter=adapter("ten_a"))
    assert not await store.delete_model(tenant_id="ten_b", name="dedicated")
    assert not await store.delete_adapter(tenant_id="ten_b", name="support-v1")
    assert (await store.entries(tenant_id="ten_a")).models
    assert await store.delete_model(tenant_id="ten_a", name="dedicated")
    assert await store.delete_adapter(tenant_id="ten_a", name="support-v1")
    assert (await store.entries(tenant_id="ten_a")).models == {}


async def test_forget_tenant_and_the_cache(database: Database) -> None:
    store = await seeded(database)
    cache = PrivateCatalog(store=store, ttl_s=60)
    await store.insert_model(tenant_id="ten_a", model=model("ten_a"))
    assert "dedicated" in (await cache.entries("ten_a")).models
    await store.insert_model(tenant_id="ten_a", model=model("ten_a", "second"))
    assert "second" not in (await cache.entries("ten_a")).models  # cached until invalidated
    cache.invalidate("ten_a")
    assert "second" in (await cache.entries("ten_a")).models
    await store.forget_tenant(tenant_id="ten_a")
    cache.invalidate("ten_a")
    assert (await cache.entries("ten_a")).models == {}


async def test_allowed_regions_round_trip(database: Database) -> None:
    tenants = TenancyStore(database)
    await tenants.insert_tenant(tenant_id="ten_r", tenant=make_tenant("ten_r", ["eu-west"]))
    got = await tenants.get_tenant(tenant_id="ten_r")
    assert got is not None and got.allowed_regions == ["eu-west"]
    updated = await tenants.update_tenant(tenant_id="ten_r", values={"allowed_regions": None})
    assert updated is not None and updated.allowed_regions is None
    assert updated.public()["allowed_regions"] is None


async def _downgrade_to(url: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))

    def run(conn: sa.Connection) -> None:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)

    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migration_0016_down_and_up_keeps_tenants(backend: str, tmp_path: Path,
                                                        request: pytest.FixtureRequest) -> None:
    """Downgrading 0016 drops the catalog tables and the column, and nothing else: tenants and their keys stay
    (on SQLite the column is dropped in place, never by copying the tenants table, which would cascade)."""
    if backend == "sqlite":
        url = owner = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    else:
        pg: PostgresDatabase = request.getfixturevalue("pg_database")
        url, owner = pg.app_url, pg.owner_url
    await migrate(url=url, migrate_url=None if backend == "sqlite" else owner)
    db = Database.from_url(url)
    try:
        store = await seeded(db)
        await TenancyStore(db).insert_key(tenant_id="ten_a", key=make_key("ten_a"))
        await store.insert_model(tenant_id="ten_a", model=model("ten_a"))
    finally:
        await db.dispose()
    await _downgrade_to(owner, "0011")
    await migrate(url=url, migrate_url=None if backend == "sqlite" else owner)  # up again, grants included
    db = Database.from_url(url)
    try:
        tenants = TenancyStore(db)
        assert {t.id for t in await tenants.platform_list_tenants(limit=10, after=None)} == {"ten_a", "ten_b"}
        assert len(await tenants.list_keys(tenant_id="ten_a")) == 1
        assert (await PrivateCatalogStore(db).entries(tenant_id="ten_a")).models == {}
    finally:
        await db.dispose()
