"""The TTL cache with single-flight loading, and the keyring's use of it for plaintext data keys."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tenantlm.cache import TtlCache
from tenantlm.crypto.errors import KeyShredded
from tenantlm.crypto.keyring import Keyring
from tenantlm.crypto.local import LocalKekProvider
from tenantlm.storage.sql.engine import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingKek(LocalKekProvider):
    """The local provider, counting unwraps (a subclass, not a patch)."""

    unwraps = 0

    async def unwrap(self, tenant_id: str, wrapped: bytes, kek_ref: str) -> bytes:
        self.unwraps += 1
        await asyncio.sleep(0.01)  # widen the window in which concurrent misses would pile up
        return await super().unwrap(tenant_id, wrapped, kek_ref)


async def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(ttl_s=10, clock=clock)
    cache.put("a", 1)
    clock.now += 9.9
    assert cache.get("a") == 1
    clock.now += 0.2
    assert cache.get("a") is None and len(cache) == 0


async def test_concurrent_misses_share_one_load() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=10)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 42

    assert await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(100))) == [42] * 100
    assert calls == 1 and cache.get("k") == 42


async def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=10)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    results = await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(10)), return_exceptions=True)
    assert calls == 1 and all(isinstance(r, RuntimeError) for r in results)
    with pytest.raises(RuntimeError):
        await cache.get_or_load("k", load)
    assert calls == 2


async def test_a_cancelled_waiter_does_not_cancel_the_load() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=10)
    started = asyncio.Event()

    async def load() -> int:
        started.set()
        await asyncio.sleep(0.02)
        return 7

    first = asyncio.create_task(cache.get_or_load("k", load))
    await started.wait()
    second = asyncio.create_task(cache.get_or_load("k", load))
    first.cancel()
    assert await second == 7 and cache.get("k") == 7


async def test_eviction_during_a_load_keeps_the_result_out() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=10)

    async def load() -> int:
        await asyncio.sleep(0.01)
        return 1

    task = asyncio.create_task(cache.get_or_load("k", load))
    await asyncio.sleep(0)
    cache.evict(lambda k, _v: k == "k")
    assert await task == 1 and cache.get("k") is None


async def test_ttl_zero_never_caches() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=0)
    cache.put("a", 1)
    assert cache.get("a") is None


async def test_bounded_size_drops_the_oldest() -> None:
    cache: TtlCache[int, int] = TtlCache(ttl_s=10, max_entries=3)
    for i in range(5):
        cache.put(i, i)
    assert len(cache) == 3 and cache.get(0) is None and cache.get(4) == 4


async def test_keyring_caches_deks_for_the_ttl(sqlite_db: Database, tmp_path: Path, master_key: bytes) -> None:
    clock = Clock()
    kek = CountingKek(tmp_path / "keyring", master_key)
    ring = Keyring(sqlite_db, kek, cache_ttl_s=60, clock=clock)
    await ring.ensure_tenant("ten_a")
    ct = await ring.seal(tenant_id="ten_a", kind="k", record_id="r", plaintext=b"data")
    cold = Keyring(sqlite_db, kek, cache_ttl_s=60, clock=clock)
    opened = await asyncio.gather(*(cold.open(tenant_id="ten_a", kind="k", record_id="r", ciphertext=ct)
                                    for _ in range(50)))
    assert opened == [b"data"] * 50 and kek.unwraps == 1  # single flight
    clock.now += 59
    await cold.open(tenant_id="ten_a", kind="k", record_id="r", ciphertext=ct)
    assert kek.unwraps == 1
    clock.now += 2
    await cold.open(tenant_id="ten_a", kind="k", record_id="r", ciphertext=ct)
    assert kek.unwraps == 2


async def test_shred_evicts_at_once(sqlite_db: Database, local_kek: LocalKekProvider) -> None:
    ring = Keyring(sqlite_db, local_kek, cache_ttl_s=3600)
    ct = await ring.seal(tenant_id="ten_a", kind="k", record_id="r", plaintext=b"data")
    await ring.shred(tenant_id="ten_a")
    with pytest.raises(KeyShredded):
        await ring.open(tenant_id="ten_a", kind="k", record_id="r", ciphertext=ct)
