"""The authenticator's cache: no storage round trip per request, revocation visible within the TTL, one reload
shared by concurrent requests, suspension and expiry enforced."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping

import pytest

from tenantlm.errors import AuthenticationFailed, TenantSuspended
from tenantlm.tenancy import keys
from tenantlm.tenancy.auth import Authenticator
from tenantlm.tenancy.models import AdminKey, ApiKey, PlatformPrincipal, Role, Tenant, TenantContext, TenantStatus


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
        self.lookups = 0
        self.touched: dict[str, float] = {}
        self.delay = 0.0

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
                                                       secret_hash=keys.hash_token(token), hint="x", created_at=0,
                                                       revoked_at=None)
    assert isinstance(await auth.authenticate(f"Bearer {token}"), PlatformPrincipal)


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
