"""Response-cache backend contract, run against the embedded memory backend and a real Redis: entries and semantic
vectors are kept per tenant (the same key or space of another tenant is another item), expire with their TTL,
are purged per tenant and per end user, and a space holds at most its bound of vectors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services import RedisServer
from tenantlm.respcache.memory import MemoryCacheBackend
from tenantlm.respcache.port import CacheBackend, CacheUnavailable
from tenantlm.respcache.redis_store import RedisCacheBackend

A, B = "ten_aaaa", "ten_bbbb"
TTL = 60.0


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[CacheBackend]:
    if request.param == "memory":
        yield MemoryCacheBackend(max_bytes=1 << 20)
        return
    server: RedisServer = request.getfixturevalue("redis_clean")
    redis_backend = RedisCacheBackend.from_url(server.url_for(0), prefix="test:cache:")
    try:
        yield redis_backend
    finally:
        await redis_backend.aclose()


async def test_an_entry_is_found_only_under_its_own_tenant(backend: CacheBackend) -> None:
    await backend.put(tenant_id=A, key="k1", value=b"answer-a", end_user=None, ttl_s=TTL)
    assert await backend.get(tenant_id=A, key="k1") == b"answer-a"
    assert await backend.get(tenant_id=B, key="k1") is None
    await backend.put(tenant_id=B, key="k1", value=b"answer-b", end_user=None, ttl_s=TTL)
    assert await backend.get(tenant_id=A, key="k1") == b"answer-a"
    assert await backend.get(tenant_id=B, key="k1") == b"answer-b"


async def test_put_replaces(backend: CacheBackend) -> None:
    await backend.put(tenant_id=A, key="k", value=b"one", end_user=None, ttl_s=TTL)
    await backend.put(tenant_id=A, key="k", value=b"two", end_user=None, ttl_s=TTL)
    assert await backend.get(tenant_id=A, key="k") == b"two"


async def test_entries_expire(backend: CacheBackend) -> None:
    await backend.put(tenant_id=A, key="short", value=b"x", end_user=None, ttl_s=0.05)
    await backend.put(tenant_id=A, key="long", value=b"y", end_user=None, ttl_s=TTL)
    for _ in range(100):  # wait for expiry by polling the outcome, not by asserting a duration
        if await backend.get(tenant_id=A, key="short") is None:
            break
        await asyncio.sleep(0.02)
    assert await backend.get(tenant_id=A, key="short") is None
    assert await backend.get(tenant_id=A, key="long") == b"y"


async def test_vectors_are_kept_per_tenant_and_space(backend: CacheBackend) -> None:
    await backend.add_vector(tenant_id=A, space="s1", key="k1", vector=b"v1", end_user=None, ttl_s=TTL,
                             max_entries=10)
    await backend.add_vector(tenant_id=A, space="s1", key="k2", vector=b"v2", end_user=None, ttl_s=TTL,
                             max_entries=10)
    await backend.add_vector(tenant_id=A, space="s2", key="k3", vector=b"v3", end_user=None, ttl_s=TTL,
                             max_entries=10)
    assert sorted(await backend.vectors(tenant_id=A, space="s1")) == [("k1", b"v1"), ("k2", b"v2")]
    assert await backend.vectors(tenant_id=A, space="s2") == [("k3", b"v3")]
    assert await backend.vectors(tenant_id=B, space="s1") == []


async def test_a_space_keeps_at_most_its_bound(backend: CacheBackend) -> None:
    for i in range(7):
        await backend.add_vector(tenant_id=A, space="s", key=f"k{i}", vector=b"v", end_user=None, ttl_s=TTL,
                                 max_entries=3)
    found = await backend.vectors(tenant_id=A, space="s")
    assert len(found) == 3
    assert "k6" in {k for k, _ in found}  # the newest is never the one dropped


async def test_purge_tenant_leaves_other_tenants(backend: CacheBackend) -> None:
    for tenant in (A, B):
        await backend.put(tenant_id=tenant, key="k1", value=b"1", end_user="alice", ttl_s=TTL)
        await backend.put(tenant_id=tenant, key="k2", value=b"2", end_user=None, ttl_s=TTL)
        await backend.add_vector(tenant_id=tenant, space="s", key="k1", vector=b"v", end_user="alice", ttl_s=TTL,
                                 max_entries=10)
    assert await backend.purge_tenant(tenant_id=A) == 2
    assert await backend.get(tenant_id=A, key="k1") is None
    assert await backend.get(tenant_id=A, key="k2") is None
    assert await backend.vectors(tenant_id=A, space="s") == []
    assert await backend.get(tenant_id=B, key="k1") == b"1"
    assert await backend.vectors(tenant_id=B, space="s") == [("k1", b"v")]


async def test_purge_end_user_takes_only_theirs(backend: CacheBackend) -> None:
    await backend.put(tenant_id=A, key="alice1", value=b"1", end_user="alice", ttl_s=TTL)
    await backend.put(tenant_id=A, key="alice2", value=b"2", end_user="alice", ttl_s=TTL)
    await backend.put(tenant_id=A, key="bob1", value=b"3", end_user="bob", ttl_s=TTL)
    await backend.put(tenant_id=A, key="anon", value=b"4", end_user=None, ttl_s=TTL)
    await backend.put(tenant_id=B, key="alice1", value=b"5", end_user="alice", ttl_s=TTL)
    await backend.add_vector(tenant_id=A, space="s", key="alice1", vector=b"va", end_user="alice", ttl_s=TTL,
                             max_entries=10)
    await backend.add_vector(tenant_id=A, space="s", key="bob1", vector=b"vb", end_user="bob", ttl_s=TTL,
                             max_entries=10)
    assert await backend.purge_end_user(tenant_id=A, end_user="alice") == 2
    assert await backend.get(tenant_id=A, key="alice1") is None
    assert await backend.get(tenant_id=A, key="alice2") is None
    assert await backend.get(tenant_id=A, key="bob1") == b"3"
    assert await backend.get(tenant_id=A, key="anon") == b"4"
    assert await backend.get(tenant_id=B, key="alice1") == b"5"  # the same end-user name in another tenant
    assert await backend.vectors(tenant_id=A, space="s") == [("bob1", b"vb")]
    assert await backend.purge_end_user(tenant_id=A, end_user="alice") == 0


async def test_memory_backend_stays_within_its_byte_budget() -> None:
    backend = MemoryCacheBackend(max_bytes=4096)
    for i in range(100):
        await backend.put(tenant_id=A, key=f"k{i}", value=b"x" * 300, end_user=None, ttl_s=TTL)
        assert backend.bytes <= 4096
    assert await backend.get(tenant_id=A, key="k0") is None  # least recently used went first
    assert await backend.get(tenant_id=A, key="k99") == b"x" * 300
    await backend.put(tenant_id=A, key="huge", value=b"x" * 5000, end_user=None, ttl_s=TTL)
    assert await backend.get(tenant_id=A, key="huge") is None  # larger than the whole budget: not kept


async def test_memory_backend_keeps_what_was_read_recently() -> None:
    backend = MemoryCacheBackend(max_bytes=3 * (100 + 2 + 200))
    for key in ("k1", "k2", "k3"):
        await backend.put(tenant_id=A, key=key, value=b"x" * 100, end_user=None, ttl_s=TTL)
    assert await backend.get(tenant_id=A, key="k1") is not None
    await backend.put(tenant_id=A, key="k4", value=b"x" * 100, end_user=None, ttl_s=TTL)
    assert await backend.get(tenant_id=A, key="k1") is not None
    assert await backend.get(tenant_id=A, key="k2") is None


async def test_an_unreachable_redis_is_cache_unavailable() -> None:
    down = RedisCacheBackend.from_url("redis://127.0.0.1:9/0")  # nothing listens on the discard port
    try:
        with pytest.raises(CacheUnavailable):
            await down.get(tenant_id=A, key="k")
        with pytest.raises(CacheUnavailable):
            await down.put(tenant_id=A, key="k", value=b"v", end_user="alice", ttl_s=TTL)
    finally:
        await down.aclose()


async def test_tenant_ids_that_could_widen_a_key_pattern_are_refused() -> None:
    backend = RedisCacheBackend.from_url("redis://127.0.0.1:9/0")
    try:
        for bad in ("ten_*", "ten_{x}", "", "ten_[a]"):
            with pytest.raises(ValueError):
                await backend.purge_tenant(tenant_id=bad)
    finally:
        await backend.aclose()
