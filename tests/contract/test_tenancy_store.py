"""TenancyStore contract, on every SQL backend."""

from __future__ import annotations

import time

import pytest

from tenantlm.errors import Conflict
from tenantlm.storage.sql.engine import Database
from tenantlm.tenancy import keys
from tenantlm.tenancy.models import AdminKey, ApiKey, PlatformRole, Role, Tenant, TenantStatus
from tenantlm.tenancy.store import TenancyStore


def make_tenant(tid: str, name: str) -> Tenant:
    now = time.time()
    return Tenant(id=tid, name=name, status=TenantStatus.ACTIVE, plan="free", region="local", metadata={"a": 1},
                  settings={}, allowed_models=None, model_aliases={}, created_at=now, updated_at=now)


def make_key(tenant_id: str, n: int) -> ApiKey:
    token = keys.make_token(keys.TENANT_PREFIX, keys.new_key_id())
    return ApiKey(id=f"key_{tenant_id[-4:]}{n:012d}", tenant_id=tenant_id, name=f"k{n}", role=Role.MEMBER,
                  scopes=None, secret_hash=keys.hash_token(token), hint=token[-4:], created_at=time.time() + n,
                  expires_at=None, revoked_at=None, last_used_at=None)


async def two_tenants(store: TenancyStore) -> None:
    for tid, name in (("ten_aaaa", "alpha"), ("ten_bbbb", "beta")):
        await store.insert_tenant(tenant_id=tid, tenant=make_tenant(tid, name))
        for n in range(2):
            await store.insert_key(tenant_id=tid, key=make_key(tid, n))


async def test_tenant_round_trip_and_update(database: Database) -> None:
    store = TenancyStore(database)
    await store.insert_tenant(tenant_id="ten_x", tenant=make_tenant("ten_x", "x"))
    got = await store.get_tenant(tenant_id="ten_x")
    assert got is not None and got.name == "x" and got.metadata == {"a": 1} and got.allowed_models is None
    updated = await store.update_tenant(tenant_id="ten_x", values={"status": "suspended", "allowed_models": ["m"]})
    assert updated is not None and updated.status is TenantStatus.SUSPENDED and updated.allowed_models == ["m"]
    assert await store.update_tenant(tenant_id="ten_missing", values={"plan": "x"}) is None
    with pytest.raises(Conflict):
        await store.insert_tenant(tenant_id="ten_y", tenant=make_tenant("ten_y", "x"))


async def test_keys_are_scoped_to_their_tenant(database: Database) -> None:
    store = TenancyStore(database)
    await two_tenants(store)
    a_keys = await store.list_keys(tenant_id="ten_aaaa")
    assert {k.tenant_id for k in a_keys} == {"ten_aaaa"} and len(a_keys) == 2
    b_key = (await store.list_keys(tenant_id="ten_bbbb"))[0]
    assert await store.get_key(tenant_id="ten_aaaa", key_id=b_key.id) is None
    assert await store.revoke_key(tenant_id="ten_aaaa", key_id=b_key.id, at=time.time()) is None
    assert (await store.get_key(tenant_id="ten_bbbb", key_id=b_key.id)).revoked_at is None  # type: ignore[union-attr]
    found = await store.platform_key_for_auth(key_id=b_key.id)
    assert found is not None and found[0].tenant_id == "ten_bbbb" and found[1].name == "beta"


async def test_revoke_is_idempotent_and_keeps_first_time(database: Database) -> None:
    store = TenancyStore(database)
    await two_tenants(store)
    key = (await store.list_keys(tenant_id="ten_aaaa"))[0]
    first = await store.revoke_key(tenant_id="ten_aaaa", key_id=key.id, at=100.0)
    second = await store.revoke_key(tenant_id="ten_aaaa", key_id=key.id, at=200.0)
    assert first is not None and second is not None and first.revoked_at == second.revoked_at == 100.0


async def test_delete_tenant_removes_everything_it_owns(database: Database) -> None:
    store = TenancyStore(database)
    await two_tenants(store)
    await store.upsert_end_users(tenant_id="ten_aaaa", seen=[("u1", 1, 1.0, 1.0)])
    assert await store.delete_tenant(tenant_id="ten_aaaa") is True
    assert await store.get_tenant(tenant_id="ten_aaaa") is None
    assert await store.list_keys(tenant_id="ten_aaaa") == []
    assert await store.list_end_users(tenant_id="ten_aaaa", limit=10) == []
    assert len(await store.list_keys(tenant_id="ten_bbbb")) == 2
    assert await store.delete_tenant(tenant_id="ten_aaaa") is False


async def test_end_users_accumulate(database: Database) -> None:
    store = TenancyStore(database)
    await two_tenants(store)
    await store.upsert_end_users(tenant_id="ten_aaaa", seen=[("alice", 2, 1.0, 2.0), ("bob", 1, 1.0, 1.0)])
    await store.upsert_end_users(tenant_id="ten_aaaa", seen=[("alice", 3, 5.0, 6.0)])
    await store.upsert_end_users(tenant_id="ten_bbbb", seen=[("alice", 1, 1.0, 1.0)])
    rows = {r["user"]: r for r in await store.list_end_users(tenant_id="ten_aaaa", limit=10)}
    assert rows["alice"]["requests"] == 5 and rows["alice"]["first_seen_at"] == 1 and rows["alice"]["last_seen_at"] == 6
    assert rows["bob"]["requests"] == 1


async def test_platform_listing_and_admin_keys(database: Database) -> None:
    store = TenancyStore(database)
    await two_tenants(store)
    listed = await store.platform_list_tenants(limit=10, after=None)
    assert [t.id for t in listed] == ["ten_aaaa", "ten_bbbb"]
    assert [t.id for t in await store.platform_list_tenants(limit=10, after="ten_aaaa")] == ["ten_bbbb"]
    assert await store.platform_count_admin_keys() == 0
    await store.platform_insert_admin_key(AdminKey(id="key_admin", name="a", role=PlatformRole.BILLING,
                                                   secret_hash=b"h" * 32, hint="abcd", created_at=1.0,
                                                   revoked_at=None))
    assert await store.platform_count_admin_keys() == 1
    got = await store.platform_admin_key(key_id="key_admin")
    assert got is not None and got.secret_hash == b"h" * 32 and got.role is PlatformRole.BILLING
    assert [k.id for k in await store.platform_list_admin_keys()] == ["key_admin"]
    revoked = await store.platform_revoke_admin_key(key_id="key_admin", at=5.0)
    assert revoked is not None and revoked.revoked_at == 5.0
    assert await store.platform_revoke_admin_key(key_id="key_nope", at=5.0) is None


async def test_key_ids_for_authentication(database: Database) -> None:
    store = TenancyStore(database)
    await two_tenants(store)
    await store.platform_insert_admin_key(AdminKey(id="key_admin", name="a", role=PlatformRole.ADMIN,
                                                   secret_hash=b"h" * 32, hint="abcd", created_at=2e9,
                                                   revoked_at=None))
    every = await store.platform_key_ids(created_since=None)
    tenant_ids = {k.id for t in ("ten_aaaa", "ten_bbbb") for k in await store.list_keys(tenant_id=t)}
    assert {(kind, key_id) for kind, key_id, _ in every} == {("tenant", k) for k in tenant_ids} | {
        ("admin", "key_admin")}
    assert [(kind, key_id) for kind, key_id, _ in await store.platform_key_ids(created_since=2e9 - 1)] == [
        ("admin", "key_admin")]


async def test_touch_keys_writes_last_used(database: Database) -> None:
    store = TenancyStore(database)
    await two_tenants(store)
    key = (await store.list_keys(tenant_id="ten_bbbb"))[0]
    await store.platform_touch_keys({key.id: 1234.5})
    assert (await store.get_key(tenant_id="ten_bbbb", key_id=key.id)).last_used_at == 1234.5  # type: ignore[union-attr]
