"""The authenticator's cache: no storage round trip per request, revocation visible within the TTL, one reload
shared by concurrent requests, suspension and expiry enforced; the key's kind is part of the cache key; key ids
nobody issued cost neither memory nor database lookups."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import secrets
import string
from collections.abc import Mapping

import pytest

from tenantlm.errors import AuthenticationFailed, TenantSuspended
from tenantlm.tenancy import keys
from tenantlm.tenancy.auth import Authenticator
from tenantlm.tenancy.keys import KeyKind
from tenantlm.tenancy.models import (
    AdminKey,
    ApiKey,
    PlatformPrincipal,
    PlatformRole,
    Role,
    Tenant,
    TenantContext,
    TenantStatus,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """In-memory stand-in for TenancyStore's auth methods; counts round trips."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[ApiKey, Tenant]] = {}
        self.admin: dict[str, AdminKey] = {}
        self.lookups = 0  # key records read
        self.index_reads = 0  # reads of the list of key ids
        self.touched: dict[str, float] = {}
        self.delay = 0.0

    async def platform_key_ids(self, *, created_since: float | None) -> list[tuple[KeyKind, str, float]]:
        self.index_reads += 1
        tenant: list[tuple[KeyKind, str, float]] = [("tenant", k, v[0].created_at) for k, v in self.keys.items()]
        return tenant + [("admin", k, v.created_at) for k, v in self.admin.items()]

    async def platform_key_for_auth(self, *, key_id: str) -> tuple[ApiKey, Tenant] | None:
        self.lookups += 1
        await asyncio.sleep(self.delay)
        return self.keys.get(key_id)

    async def platform_admin_key(self, *, key_id: str) -> AdminKey | None:
        self.lookups += 1
        return self.admin.get(key_id)

    async def platform_touch_keys(self, used: Mapping[str, float]) -> None:
        self.touched.update(used)


def _tenant(status: TenantStatus = TenantStatus.ACTIVE) -> Tenant:
    return Tenant(id="ten_a", name="a", status=status, plan="free", region="local", metadata={}, settings={},
                  allowed_models=None, model_aliases={}, created_at=0, updated_at=0)


def _issue(store: FakeStore, *, expires_at: float | None = None) -> tuple[str, ApiKey]:
    raw_id = keys.new_key_id()
    token = keys.make_token(keys.TENANT_PREFIX, raw_id)
    key = ApiKey(id=keys.public_key_id(raw_id), tenant_id="ten_a", name="k", role=Role.MEMBER, scopes=None,
                 secret_hash=keys.hash_token(token), hint=token[-4:], created_at=0, expires_at=expires_at,
                 revoked_at=None, last_used_at=None)
    store.keys[key.id] = (key, _tenant())
    return token, key


def _auth(store: FakeStore, clock: Clock, wall: Clock | None = None, **kw: object) -> Authenticator:
    return Authenticator(store=store, ttl_s=1.0, clock=clock, wall=wall or clock, **kw)  # type: ignore[arg-type]


async def test_cached_within_ttl_then_reloaded() -> None:
    store, clock = FakeStore(), Clock()
    token, _ = _issue(store)
    auth = _auth(store, clock)
    for _ in range(100):
        ctx = await auth.authenticate(f"Bearer {token}")
        assert isinstance(ctx, TenantContext) and ctx.tenant_id == "ten_a"
    assert store.lookups == 1
    clock.now += 1.01
    await auth.authenticate(f"Bearer {token}")
    assert store.lookups == 2


async def test_revocation_elsewhere_is_seen_after_ttl_and_here_at_once() -> None:
    store, clock = FakeStore(), Clock()
    token, key = _issue(store)
    auth = _auth(store, clock)
    await auth.authenticate(f"Bearer {token}")
    store.keys[key.id] = (dataclasses.replace(key, revoked_at=clock.now), _tenant())
    clock.now += 1.01  # another replica revoked it: stale entry reloaded after one TTL
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(f"Bearer {token}")
    token2, key2 = _issue(store)
    auth.key_created("tenant", key2.id)  # as TenancyService does when this process stores a key
    await auth.authenticate(f"Bearer {token2}")
    store.keys[key2.id] = (dataclasses.replace(key2, revoked_at=clock.now), _tenant())
    auth.invalidate_key(key2.id)  # revoked through this process: no wait at all
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(f"Bearer {token2}")


async def test_concurrent_misses_share_one_lookup() -> None:
    store, clock = FakeStore(), Clock()
    store.delay = 0.05
    token, _ = _issue(store)
    auth = _auth(store, clock)
    results = await asyncio.gather(*(auth.authenticate(f"Bearer {token}") for _ in range(50)))
    assert len(results) == 50 and store.lookups == 1


async def test_wrong_secret_with_valid_id_fails() -> None:
    store, clock = FakeStore(), Clock()
    token, _ = _issue(store)
    forged = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    with pytest.raises(AuthenticationFailed):
        await _auth(store, clock).authenticate(f"Bearer {forged}")


async def test_suspended_tenant_and_expired_key() -> None:
    store, clock = FakeStore(), Clock()
    token, key = _issue(store)
    store.keys[key.id] = (key, _tenant(TenantStatus.SUSPENDED))
    with pytest.raises(TenantSuspended):
        await _auth(store, clock).authenticate(f"Bearer {token}")
    token2, _ = _issue(store, expires_at=clock.now + 5)
    auth = _auth(store, clock)
    await auth.authenticate(f"Bearer {token2}")
    clock.now += 6
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(f"Bearer {token2}")


async def test_bootstrap_and_stored_admin_keys() -> None:
    store, clock = FakeStore(), Clock()
    auth = _auth(store, clock, bootstrap_admin_key="operator-chosen-secret-123")
    assert isinstance(await auth.authenticate("Bearer operator-chosen-secret-123"), PlatformPrincipal)
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate("Bearer operator-chosen-secret-124")
    raw_id = keys.new_key_id()
    token = keys.make_token(keys.ADMIN_PREFIX, raw_id)
    store.admin[keys.public_key_id(raw_id)] = AdminKey(id=keys.public_key_id(raw_id), name="x",
                                                       role=PlatformRole.AUDITOR,
                                                       secret_hash=keys.hash_token(token), hint="x", created_at=0,
                                                       revoked_at=None)
    auth.key_created("admin", keys.public_key_id(raw_id))
    who = await auth.authenticate(f"Bearer {token}")
    assert isinstance(who, PlatformPrincipal) and who.role is PlatformRole.AUDITOR


async def test_last_used_is_flushed_in_batches() -> None:
    store, clock = FakeStore(), Clock()
    token, key = _issue(store)
    auth = _auth(store, clock)
    await auth.authenticate(f"Bearer {token}")
    assert store.touched == {}
    await auth.flush()
    assert store.touched == {key.id: clock.now}
    store.touched.clear()
    await auth.flush()
    assert store.touched == {}


@pytest.mark.parametrize("header", [None, "", "Bearer ", "Token abc", "bearer"])
async def test_missing_or_malformed_header(header: str | None) -> None:
    with pytest.raises(AuthenticationFailed) as exc:
        await _auth(FakeStore(), Clock()).authenticate(header)
    assert exc.value.code == "missing_api_key"


def _random_body() -> str:
    alphabet = string.ascii_letters + string.digits
    return keys.new_key_id() + "".join(secrets.choice(alphabet) for _ in range(43))


async def test_a_platform_key_with_a_tenant_keys_id_does_not_lock_that_key_out() -> None:
    """Reproduces the lockout: ``tlmadmin_`` + A's key id + any secret used to cache "no such key" under A's key id,
    and A's real ``tlm_`` key was refused until the entry went stale."""
    store, clock = FakeStore(), Clock()
    token, key = _issue(store)
    auth = _auth(store, clock)
    raw_id = token[len(keys.TENANT_PREFIX):len(keys.TENANT_PREFIX) + 16]
    forged = keys.ADMIN_PREFIX + raw_id + _random_body()[16:]
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate(f"Bearer {forged}")
        ctx = await auth.authenticate(f"Bearer {token}")
        assert isinstance(ctx, TenantContext) and ctx.key_id == key.id


async def test_a_tenant_key_with_a_platform_keys_id_does_not_lock_that_key_out() -> None:
    store, clock = FakeStore(), Clock()
    raw_id = keys.new_key_id()
    token = keys.make_token(keys.ADMIN_PREFIX, raw_id)
    store.admin[keys.public_key_id(raw_id)] = AdminKey(id=keys.public_key_id(raw_id), name="x",
                                                       role=PlatformRole.ADMIN, secret_hash=keys.hash_token(token),
                                                       hint="x", created_at=0, revoked_at=None)
    auth = _auth(store, clock)
    forged = keys.TENANT_PREFIX + raw_id + _random_body()[16:]
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(f"Bearer {forged}")
    assert isinstance(await auth.authenticate(f"Bearer {token}"), PlatformPrincipal)


async def test_100k_unknown_key_ids_cost_flat_memory_and_bounded_lookups() -> None:
    store, clock = FakeStore(), Clock()
    token, _ = _issue(store)
    auth = _auth(store, clock, min_refresh_s=0.0)
    await auth.authenticate(f"Bearer {token}")
    counts = []
    for batch in range(100):
        clock.now += 0.5  # half a TTL per 1,000 requests
        bodies = [_random_body() for _ in range(1000)]
        results = await asyncio.gather(*(auth.authenticate(f"Bearer {keys.TENANT_PREFIX}{b}") for b in bodies),
                                       return_exceptions=True)
        assert all(isinstance(r, AuthenticationFailed) and r.reason == "unknown_key" for r in results), batch
        del results, bodies
        if batch in (9, 99):  # after a warm-up of 10,000, and after 90,000 more
            gc.collect()
            counts.append(len(gc.get_objects()))
    grown = counts[1] - counts[0]
    assert store.lookups == 1  # the one real key; no unknown id was ever looked up
    assert store.index_reads <= 1 + 100  # at most one refresh of the known ids per batch (per step of the clock)
    assert grown < 100, grown  # flat: nothing is kept per unknown id (90,000 more of them)
    assert (await auth.authenticate(f"Bearer {token}")).tenant_id == "ten_a"  # type: ignore[union-attr]


async def test_a_key_created_on_another_replica_is_found_by_a_refresh() -> None:
    store, clock = FakeStore(), Clock()
    auth = _auth(store, clock)
    token, _ = _issue(store)
    ctx = await auth.authenticate(f"Bearer {token}")  # the first miss loads the known ids
    assert isinstance(ctx, TenantContext)
    token2, _ = _issue(store)  # stored by another replica: this one has not heard of it
    clock.now += 0.2
    ctx2 = await auth.authenticate(f"Bearer {token2}")
    assert isinstance(ctx2, TenantContext) and store.index_reads == 2


async def test_the_key_cache_has_a_size_bound() -> None:
    store, clock = FakeStore(), Clock()
    tokens = [_issue(store)[0] for _ in range(50)]
    auth = _auth(store, clock, max_entries=10)
    for token in tokens:
        await auth.authenticate(f"Bearer {token}")
    assert len(auth._cache) <= 10
