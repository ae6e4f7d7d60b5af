"""PrivateCatalogStore contract (a tenant's private models and adapters) and the tenant's allowed_regions, on every
SQL backend: rows belong to one tenant, a foreign name answers like a missing one, names are unique per tenant."""

from __future__ import annotations

import time

import pytest

from tenantlm.errors import Conflict
from tenantlm.storage.sql.engine import Database
from tenantlm.tenancy.models import Tenant, TenantStatus
from tenantlm.tenancy.private_catalog import Adapter, PrivateCatalog, PrivateCatalogStore, PrivateModel
from tenantlm.tenancy.store import TenancyStore


def make_tenant(tid: str, regions: list[str] | None = None) -> Tenant:
    now = time.time()
    return Tenant(id=tid, name=tid, status=TenantStatus.ACTIVE, plan="free", region="local", metadata={},
                  settings={}, allowed_models=None, model_aliases={}, created_at=now, updated_at=now,
                  allowed_regions=regions)


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
