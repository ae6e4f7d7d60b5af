"""IndexCache: lazy single-flight loads, tenant-first keys, eviction under a budget, changes that are never undone by
a load or a rebuild racing them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from tenantlm.knowledge.index.cache import IndexCache
from tenantlm.knowledge.index.local import IndexPolicy, Kind, LocalIndex, new_index

DIM = 16


class Storage:
    """The sealed vectors of every (tenant, store), as the real loader would read them; it counts loads and can hold
    them until released."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[int, np.ndarray]] = {}
        self.loads: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None
        self.fail = False

    def put(self, tenant_id: str, store_id: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        self.rows.setdefault((tenant_id, store_id), {}).update(zip(ids, vectors, strict=True))

    def delete(self, tenant_id: str, store_id: str, ids: Sequence[int]) -> None:
        for i in ids:
            self.rows[(tenant_id, store_id)].pop(i, None)

    async def load(self, *, tenant_id: str, store_id: str) -> tuple[list[int], np.ndarray]:
        self.loads.append((tenant_id, store_id))
        rows = dict(self.rows.get((tenant_id, store_id), {}))  # read before waiting: the snapshot may go stale
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise OSError("storage unavailable")
        ids = list(rows)
        return ids, np.array([rows[i] for i in ids], dtype=np.float32).reshape(len(ids), DIM)


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def ids_of(hits: list[tuple[int, float]]) -> list[int]:
    return [i for i, _ in hits]


@pytest.fixture
def storage() -> Storage:
    s = Storage()
    s.put("t1", "vs_a", list(range(100)), vectors(100, 1))
    return s


def cache_for(storage: Storage, **kwargs: Any) -> IndexCache:
    kwargs.setdefault("budget_bytes", 1 << 30)
    return IndexCache(load=storage.load, **kwargs)


async def test_first_search_loads_once_for_concurrent_callers(storage):
    cache = cache_for(storage)
    storage.gate = asyncio.Event()
    q = vectors(1, 9)[0]
    searches = [asyncio.ensure_future(cache.search(tenant_id="t1", store_id="vs_a", query=q, k=3)) for _ in range(10)]
    await asyncio.sleep(0.01)
    assert storage.loads == [("t1", "vs_a")]
    assert cache.stats().loading == 1
    storage.gate.set()
    results = await asyncio.gather(*searches)
    assert all(r == results[0] for r in results) and len(results[0]) == 3
    await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=3)
    assert storage.loads == [("t1", "vs_a")]
    stats = cache.stats()
    assert (stats.loads, stats.misses, stats.indexes, stats.loading) == (1, 1, 1, 0)
    assert stats.bytes > 100 * DIM * 4


async def test_a_caller_giving_up_does_not_cancel_the_shared_load(storage):
    cache = cache_for(storage)
    storage.gate = asyncio.Event()
    q = vectors(1, 9)[0]
    first = asyncio.ensure_future(cache.search(tenant_id="t1", store_id="vs_a", query=q, k=1))
    second = asyncio.ensure_future(cache.search(tenant_id="t1", store_id="vs_a", query=q, k=1))
    await asyncio.sleep(0.01)
    first.cancel()
    storage.gate.set()
    assert len(await second) == 1
    assert storage.loads == [("t1", "vs_a")]


async def test_a_failed_load_reaches_every_waiter_and_the_next_search_retries(storage):
    cache = cache_for(storage)
    storage.fail = True
    q = vectors(1, 9)[0]
    outcomes = await asyncio.gather(*(cache.search(tenant_id="t1", store_id="vs_a", query=q, k=1) for _ in range(3)),
                                    return_exceptions=True)
    assert all(isinstance(o, OSError) for o in outcomes)
    assert len(storage.loads) == 1 and not cache.held(tenant_id="t1", store_id="vs_a")
    storage.fail = False
    assert len(await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=1)) == 1
    assert len(storage.loads) == 2


async def test_two_tenants_with_the_same_store_id_never_share_an_index(storage):
    storage.put("t2", "vs_a", [1000, 1001], vectors(2, 2))
    cache = cache_for(storage)
    q = vectors(1, 9)[0]
    one = await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=200)
    two = await cache.search(tenant_id="t2", store_id="vs_a", query=q, k=200)
    assert set(ids_of(one)) == set(range(100))
    assert set(ids_of(two)) == {1000, 1001}
    assert sorted(storage.loads) == [("t1", "vs_a"), ("t2", "vs_a")]
    # a change for one tenant's store leaves the other's alone
    await cache.remove(tenant_id="t2", store_id="vs_a", ids=[0, 1, 2])
    assert set(ids_of(await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=200))) == set(range(100))


async def test_drop_tenant_forgets_only_that_tenants_indexes(storage):
    storage.put("t1", "vs_b", [7], vectors(1, 3))
    storage.put("t2", "vs_a", [8], vectors(1, 4))
    cache = cache_for(storage)
    q = vectors(1, 9)[0]
    for tenant, store in [("t1", "vs_a"), ("t1", "vs_b"), ("t2", "vs_a")]:
        await cache.search(tenant_id=tenant, store_id=store, query=q, k=1)
    bytes_t2 = cache.stats().bytes
    assert cache.drop_tenant(tenant_id="t1") == 2
    assert not cache.held(tenant_id="t1", store_id="vs_a") and not cache.held(tenant_id="t1", store_id="vs_b")
    assert cache.held(tenant_id="t2", store_id="vs_a")
    stats = cache.stats()
    assert stats.indexes == 1 and 0 < stats.bytes < bytes_t2
    storage.rows.pop(("t1", "vs_a"))  # the tenant is gone from storage too: nothing comes back
    assert await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=1) == []


async def test_drop_tenant_during_a_load_discards_what_that_load_read(storage):
    cache = cache_for(storage)
    storage.gate = asyncio.Event()
    q = vectors(1, 9)[0]
    search = asyncio.ensure_future(cache.search(tenant_id="t1", store_id="vs_a", query=q, k=5))
    await asyncio.sleep(0.01)
    assert cache.drop_tenant(tenant_id="t1") == 1
    storage.rows.pop(("t1", "vs_a"))
    storage.gate.set()
    assert await search == []  # the caller's search loaded anew, and found the tenant gone
    assert len(storage.loads) == 2


async def test_least_recently_searched_indexes_are_evicted_under_the_budget(storage):
    for n, store in enumerate(["vs_b", "vs_c", "vs_d"]):
        storage.put("t1", store, list(range(100)), vectors(100, 10 + n))
    probe = cache_for(storage)
    q = vectors(1, 9)[0]
    await probe.search(tenant_id="t1", store_id="vs_a", query=q, k=1)
    one = probe.stats().bytes
    cache = cache_for(storage, budget_bytes=2 * one + one // 2)  # room for two
    await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=1)
    await cache.search(tenant_id="t1", store_id="vs_b", query=q, k=1)
    await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=1)  # vs_b is now the least recent
    await cache.search(tenant_id="t1", store_id="vs_c", query=q, k=1)
    held = {s for s in ["vs_a", "vs_b", "vs_c"] if cache.held(tenant_id="t1", store_id=s)}
    assert held == {"vs_a", "vs_c"}
    stats = cache.stats()
    assert stats.evicted == 1 and stats.indexes == 2 and stats.bytes <= stats.budget_bytes
    await cache.search(tenant_id="t1", store_id="vs_b", query=q, k=1)  # evicted: loaded again
    assert storage.loads.count(("t1", "vs_b")) == 2


async def test_an_index_larger_than_the_budget_is_served_alone_and_idle_ones_hold_nothing(storage):
    storage.put("t1", "vs_b", [1], vectors(1, 3))
    cache = cache_for(storage, budget_bytes=1)
    q = vectors(1, 9)[0]
    await cache.search(tenant_id="t1", store_id="vs_b", query=q, k=1)
    assert len(await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=5)) == 5
    assert not cache.held(tenant_id="t1", store_id="vs_b")
    assert cache.stats().indexes == 1
    cache.invalidate(tenant_id="t1", store_id="vs_a")
    assert cache.stats().bytes == 0 and cache.stats().indexes == 0


async def test_removed_chunks_leave_results_at_once_without_a_reload(storage):
    cache = cache_for(storage)
    q = vectors(1, 9)[0]
    top = ids_of(await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=3))
    storage.delete("t1", "vs_a", top[:2])
    await cache.remove(tenant_id="t1", store_id="vs_a", ids=top[:2])
    after = ids_of(await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=100))
    assert top[0] not in after and top[1] not in after and top[2] in after
    assert len(storage.loads) == 1


async def test_added_chunks_are_found_without_a_reload(storage):
    cache = cache_for(storage, add_batch=7)
    q = vectors(1, 9)[0]
    await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=1)
    new = vectors(20, 5)
    new[3] = q  # the nearest to q from now on
    await cache.add(tenant_id="t1", store_id="vs_a", ids=list(range(500, 520)), vectors=new)
    assert ids_of(await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=1)) == [503]
    assert len(await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=1000)) == 120
    assert len(storage.loads) == 1


async def test_changes_for_a_store_not_held_do_nothing(storage):
    cache = cache_for(storage)
    await cache.add(tenant_id="t1", store_id="vs_a", ids=[500], vectors=vectors(1, 5))
    await cache.remove(tenant_id="t1", store_id="vs_a", ids=[1])
    assert cache.stats().indexes == 0 and storage.loads == []


async def test_changes_during_a_load_are_replayed_onto_the_index_it_builds(storage):
    cache = cache_for(storage)
    storage.gate = asyncio.Event()
    q = vectors(1, 9)[0]
    search = asyncio.ensure_future(cache.search(tenant_id="t1", store_id="vs_a", query=q, k=200))
    await asyncio.sleep(0.01)  # the load has read storage: ids 0..99
    storage.delete("t1", "vs_a", [0, 1])
    await cache.remove(tenant_id="t1", store_id="vs_a", ids=[0, 1])
    storage.put("t1", "vs_a", [700], vectors(1, 6))
    await cache.add(tenant_id="t1", store_id="vs_a", ids=[700], vectors=vectors(1, 6))
    storage.gate.set()
    found = set(ids_of(await search))
    assert found == (set(range(2, 100)) | {700})


async def test_a_change_that_does_not_fit_is_refused_or_dropped_and_never_fails_the_load(storage):
    cache = cache_for(storage)
    storage.gate = asyncio.Event()
    q = vectors(1, 9)[0]
    search = asyncio.ensure_future(cache.search(tenant_id="t1", store_id="vs_a", query=q, k=200))
    await asyncio.sleep(0.01)
    await cache.add(tenant_id="t1", store_id="vs_a", ids=[800], vectors=np.ones((1, DIM + 1), dtype=np.float32))
    await cache.remove(tenant_id="t1", store_id="vs_a", ids=[5])
    storage.gate.set()
    assert set(ids_of(await search)) == set(range(100)) - {5}  # the misfit dropped, the change after it kept
    with pytest.raises(ValueError, match="dimensions"):  # once the index is built, the caller hears of it
        await cache.add(tenant_id="t1", store_id="vs_a", ids=[800], vectors=np.ones((1, DIM + 1), dtype=np.float32))


async def test_filtered_search_goes_through_to_the_index(storage):
    cache = cache_for(storage)
    q = vectors(1, 9)[0]
    allowed = {3, 30, 60, 99}
    by_set = await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=3, allowed=allowed)
    by_predicate = await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=3, allowed=allowed.__contains__)
    assert by_set == by_predicate and len(by_set) == 3 and set(ids_of(by_set)) <= allowed


async def test_invalidate_makes_the_next_search_load_anew(storage):
    cache = cache_for(storage)
    q = vectors(1, 9)[0]
    await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=1)
    assert cache.invalidate(tenant_id="t1", store_id="vs_a")
    assert not cache.invalidate(tenant_id="t1", store_id="vs_a")
    await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=1)
    assert len(storage.loads) == 2


class HeldBuilds:
    """Builds indexes like the cache's default, but an HNSW build waits until released (in its worker thread)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, ids: Any, vectors: Any, *, policy: IndexPolicy, kind: Kind | None = None) -> LocalIndex:
        if kind == "hnsw":
            self.started.set()
            self.release.wait(timeout=30)
        return new_index(ids, vectors, policy=policy, kind=kind)


async def test_a_large_store_is_served_exactly_until_its_graph_is_built_and_changes_meanwhile_are_kept(storage):
    builds = HeldBuilds()
    cache = cache_for(storage, policy=IndexPolicy(exact_max=50, build_threads=1), build=builds)
    q = vectors(1, 9)[0]
    exact = await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=5)  # served at once, before the graph
    assert len(exact) == 5 and cache.stats().rebuilding == 1
    await asyncio.to_thread(builds.started.wait, 30)  # the graph build has its snapshot of ids 0..99
    storage.delete("t1", "vs_a", [exact[0][0]])
    await cache.remove(tenant_id="t1", store_id="vs_a", ids=[exact[0][0]])
    await cache.add(tenant_id="t1", store_id="vs_a", ids=[900], vectors=q[None, :])
    assert ids_of(await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=1)) == [900]
    builds.release.set()
    await cache.wait_idle()
    stats = cache.stats()
    assert stats.rebuilds == 1 and stats.rebuilding == 0
    after = ids_of(await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=200))
    assert after[0] == 900 and exact[0][0] not in after and len(after) == 100
    assert len(storage.loads) == 1


async def test_a_store_moves_back_to_exact_search_when_it_shrinks(storage):
    cache = cache_for(storage, policy=IndexPolicy(exact_max=50, build_threads=1))
    q = vectors(1, 9)[0]
    await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=1)
    await cache.wait_idle()
    hnsw_bytes = cache.stats().bytes
    await cache.remove(tenant_id="t1", store_id="vs_a", ids=list(range(80)))
    await cache.wait_idle()
    stats = cache.stats()
    assert stats.rebuilds == 2 and stats.bytes < hnsw_bytes
    assert set(ids_of(await cache.search(tenant_id="t1", store_id="vs_a", query=q, k=100))) == set(range(80, 100))


async def test_aclose_drops_everything(storage):
    cache = cache_for(storage)
    await cache.search(tenant_id="t1", store_id="vs_a", query=vectors(1, 9)[0], k=1)
    await cache.aclose()
    assert cache.stats().indexes == 0 and cache.stats().bytes == 0
