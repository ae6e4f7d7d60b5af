"""The embedded vector search: one in-memory index per (tenant, store), built when first searched, evicted under a
memory budget.

- **Keys.** Every index is held under ``(tenant_id, store_id)``, tenant first: two tenants with the same store id
  never share an index, and ``drop_tenant`` finds every index of a tenant.
- **Lazy, single-flight.** The first search of a store calls ``load(tenant_id=..., store_id=...)`` for its sealed
  vectors; concurrent first searches wait on that one load. The index is built in a worker thread
  (``asyncio.to_thread``), so a big build never stalls other tenants' requests.
- **Cold search stays fast.** A store is first served by an exact index (no build: one copy of the vectors). A store
  larger than ``IndexPolicy.exact_max`` then gets its HNSW graph built in the background, at most
  ``max_concurrent_builds`` at a time, and swapped in when ready; until then searches are exact. A store that grows
  past the threshold (or shrinks to half of it) is moved to the other kind the same way.
- **Budget.** ``budget_bytes`` bounds the sum of ``memory_bytes()`` of the indexes held; past it the least recently
  searched indexes are dropped. A dropped (or never searched) store holds nothing, so an idle tenant costs no RAM.
  The index just built or changed is never the one dropped, so a single store larger than the whole budget is still
  served (alone). A background build holds its copy of the vectors outside the count until it is swapped in.
- **Changes.** ``add`` and ``remove`` go into a built index (ingestion never forces a rebuild); for a store not held
  they do nothing, as its next load reads them from storage. Changes made while a store loads or rebuilds are
  recorded and replayed onto the new index before it serves, so a removal is never undone by a build that read
  older data. Callers change storage first and the cache second, and drop hits whose chunk is gone from storage (a
  search racing a deletion may still name its ids until ``remove`` returns).
- **Concurrency.** Searches run on the event loop (about a millisecond), except exact scans of a store above the
  threshold (while its graph is built), which run in a worker thread; additions run in worker threads in batches
  of ``add_batch``, each batch holding the store's index alone, so searches of a store being ingested wait at most
  one batch. Changes to one store apply in the order they were called.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tenantlm.knowledge.index.local import IndexPolicy, Kind, LocalIndex, checked_batch, kind_for, new_index
from tenantlm.knowledge.index.port import Allowed, Hit, Ids

log = logging.getLogger(__name__)

StoreKey = tuple[str, str]
"""(tenant_id, store_id)"""
_Change = Callable[[LocalIndex], object]


class IndexLoader(Protocol):
    """Reads a store's sealed vectors: its chunk ids and their vectors (shape ``(len(ids), dim)``)."""

    def __call__(self, *, tenant_id: str, store_id: str) -> Awaitable[tuple[Ids, npt.NDArray[np.floating[Any]]]]:
        ...


class IndexBuilder(Protocol):
    """Builds an index of a kind from ids and vectors (``local.new_index``; tests pass one that can be held)."""

    def __call__(self, ids: Ids, vectors: npt.NDArray[np.floating[Any]], *, policy: IndexPolicy,
                 kind: Kind | None = None) -> LocalIndex:
        ...


@dataclass(frozen=True, slots=True)
class IndexCacheStats:
    indexes: int
    """Indexes held (built)."""
    bytes: int
    """Sum of their ``memory_bytes()``."""
    budget_bytes: int
    loads: int
    """First builds from storage."""
    rebuilds: int
    """Background rebuilds swapped in (exact -> HNSW and back)."""
    evicted: int
    """Indexes dropped to stay under the budget."""
    hits: int
    misses: int
    loading: int
    rebuilding: int


class _Entry:
    __slots__ = ("alive", "bytes", "index", "journal", "loading", "lock", "rebuilding", "writes")

    def __init__(self) -> None:
        self.index: LocalIndex | None = None
        self.bytes = 0
        self.alive = True
        self.journal: list[_Change] | None = []  # changes to replay onto an index being loaded or rebuilt
        self.loading: asyncio.Task[None] | None = None
        self.rebuilding = False
        self.lock = asyncio.Lock()  # held while the index is read or changed
        self.writes = asyncio.Lock()  # held for a whole change (all its batches), so changes apply in call order


class IndexCache:
    def __init__(self, *, load: IndexLoader, budget_bytes: int, policy: IndexPolicy | None = None,
                 add_batch: int = 256, max_concurrent_builds: int = 1, build: IndexBuilder = new_index) -> None:
        if budget_bytes < 0 or add_batch < 1 or max_concurrent_builds < 1:
            raise ValueError("budget_bytes must be >= 0, add_batch and max_concurrent_builds >= 1")
        self._load = load
        self._new_index = build
        self._budget = budget_bytes
        self._policy = policy or IndexPolicy()
        self._add_batch = add_batch
        self._build_slots = asyncio.Semaphore(max_concurrent_builds)
        self._entries: OrderedDict[StoreKey, _Entry] = OrderedDict()  # least recently searched first
        self._tasks: set[asyncio.Task[None]] = set()
        self._bytes = 0
        self._loads = self._rebuilds = self._evicted = self._hits = self._misses = 0

    async def search(self, *, tenant_id: str, store_id: str, query: npt.NDArray[np.floating[Any]], k: int,
                     allowed: Allowed | None = None) -> list[Hit]:
        """The ``k`` nearest chunks of one store of one tenant (loading its index on first use)."""
        key = (tenant_id, store_id)
        while True:
            entry = await self._ready(key)
            async with entry.lock:
                index = entry.index
                if not entry.alive or index is None:
                    continue
                if index.kind == "exact" and len(index) > self._policy.exact_max:
                    # a large store served exactly while its graph is built: a search is a scan of the whole store
                    # (about 15 ms at 100k x 384), kept off the loop so other tenants' requests go on
                    return await asyncio.to_thread(index.search, query, k, allowed=allowed)
                return index.search(query, k, allowed=allowed)

    async def add(self, *, tenant_id: str, store_id: str, ids: Ids,
                  vectors: npt.NDArray[np.floating[Any]]) -> None:
        """Insert (or replace) chunks into the store's index, if it is held."""
        keys, unit = checked_batch(ids, vectors, None)
        batches = [(keys[i:i + self._add_batch], unit[i:i + self._add_batch])
                   for i in range(0, len(keys), self._add_batch)]
        await self._change((tenant_id, store_id), [partial(_add, k, v) for k, v in batches], in_thread=True)

    async def remove(self, *, tenant_id: str, store_id: str, ids: Iterable[int]) -> None:
        """Remove chunks from the store's index, if it is held; they leave search results before this returns."""
        keys = [int(i) for i in ids]
        await self._change((tenant_id, store_id), [partial(_remove, keys)], in_thread=False)

    def invalidate(self, *, tenant_id: str, store_id: str) -> bool:
        """Forget the store's index (a load in flight is discarded); the next search loads it anew."""
        entry = self._entries.get((tenant_id, store_id))
        if entry is not None:
            self._discard((tenant_id, store_id), entry)
        return entry is not None

    def drop_tenant(self, *, tenant_id: str) -> int:
        """Forget every index of the tenant (loads in flight included); returns how many there were."""
        doomed = [(key, entry) for key, entry in self._entries.items() if key[0] == tenant_id]
        for key, entry in doomed:
            self._discard(key, entry)
        return len(doomed)

    def held(self, *, tenant_id: str, store_id: str) -> bool:
        entry = self._entries.get((tenant_id, store_id))
        return entry is not None and entry.index is not None

    def stats(self) -> IndexCacheStats:
        return IndexCacheStats(
            indexes=sum(1 for e in self._entries.values() if e.index is not None), bytes=self._bytes,
            budget_bytes=self._budget, loads=self._loads, rebuilds=self._rebuilds, evicted=self._evicted,
            hits=self._hits, misses=self._misses,
            loading=sum(1 for e in self._entries.values() if e.index is None),
            rebuilding=sum(1 for e in self._entries.values() if e.rebuilding))

    async def wait_idle(self) -> None:
        """Wait for the background rebuilds running now (tests and benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop background work (loads and rebuilds) and drop every index."""
        tasks = [*self._tasks, *(e.loading for e in self._entries.values() if e.loading is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for key, entry in list(self._entries.items()):
            self._discard(key, entry)

    # -- loading ------------------------------------------------------------------------------------------------------

    async def _ready(self, key: StoreKey) -> _Entry:
        entry = self._entries.get(key)
        if entry is not None and entry.index is not None:
            self._hits += 1
            self._entries.move_to_end(key)
            return entry
        while True:
            if entry is None:
                self._misses += 1
                entry = self._entries[key] = _Entry()
                entry.loading = asyncio.ensure_future(self._build(key, entry))
                entry.loading.add_done_callback(_retrieve)
            if entry.index is not None:
                return entry
            assert entry.loading is not None
            await asyncio.shield(entry.loading)  # one caller giving up must not cancel the load the others share
            if entry.alive:
                return entry
            entry = self._entries.get(key)  # dropped while loading: load anew

    async def _build(self, key: StoreKey, entry: _Entry) -> None:
        try:
            ids, vectors = await self._load(tenant_id=key[0], store_id=key[1])
            index = await asyncio.to_thread(self._new_index, ids, vectors, policy=self._policy, kind="exact")
            while entry.journal:  # changes that arrived during the load
                changes, entry.journal = entry.journal, []
                await asyncio.to_thread(_replay, index, changes)
        except BaseException:
            if self._entries.get(key) is entry:
                self._discard(key, entry)
            raise
        if not entry.alive:
            return
        entry.index, entry.journal = index, None
        self._loads += 1
        self._entries.move_to_end(key)
        self._account(key, entry)

    # -- changes ------------------------------------------------------------------------------------------------------

    async def _change(self, key: StoreKey, changes: list[_Change], *, in_thread: bool) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return  # not held: the next load reads the change from storage
        if entry.index is None:
            assert entry.journal is not None
            entry.journal.extend(changes)  # loading: replayed onto the index before it serves
            return
        async with entry.writes:
            if entry.journal is not None:
                entry.journal.extend(changes)  # rebuilding: replayed onto the new index before the swap
            for change in changes:
                async with entry.lock:
                    if not entry.alive or entry.index is None:
                        return
                    if in_thread:
                        await asyncio.to_thread(change, entry.index)
                    else:
                        change(entry.index)
        self._account(key, entry)

    def _account(self, key: StoreKey, entry: _Entry) -> None:
        """Recount the entry's bytes, keep the total under the budget, and start a rebuild if its size calls for
        the other kind of index."""
        if not entry.alive or entry.index is None:
            return
        size = entry.index.memory_bytes()
        self._bytes += size - entry.bytes
        entry.bytes = size
        self._enforce_budget(protect=entry)
        index = entry.index
        if not entry.rebuilding and kind_for(len(index), self._policy, index.kind) != index.kind:
            entry.rebuilding = True
            task = asyncio.ensure_future(self._rebuild(key, entry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _enforce_budget(self, *, protect: _Entry) -> None:
        for key, entry in list(self._entries.items()):
            if self._bytes <= self._budget:
                return
            if entry is not protect and entry.index is not None:
                self._discard(key, entry)
                self._evicted += 1

    def _discard(self, key: StoreKey, entry: _Entry) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]
        entry.alive = False
        entry.index = None  # searches check ``alive`` under the lock, so none is left holding a dropped index
        self._bytes -= entry.bytes
        entry.bytes = 0

    # -- background rebuilds ------------------------------------------------------------------------------------------

    async def _rebuild(self, key: StoreKey, entry: _Entry) -> None:
        try:
            async with self._build_slots:
                await self._rebuild_now(key, entry)
        except Exception:
            log.warning("vector index rebuild failed: tenant=%s store=%s; the current index keeps serving",
                        key[0], key[1], exc_info=True)
        finally:
            entry.rebuilding = False
            entry.journal = None
        if entry.alive:
            self._account(key, entry)  # it may have grown or shrunk past the threshold again

    async def _rebuild_now(self, key: StoreKey, entry: _Entry) -> None:
        async with entry.writes:
            if not entry.alive or entry.index is None:
                return
            kind = kind_for(len(entry.index), self._policy, entry.index.kind)
            if kind == entry.index.kind:
                return
            ids, vectors = entry.index.snapshot()
            entry.journal = []
        new = await asyncio.to_thread(self._new_index, ids, vectors, policy=self._policy, kind=kind)
        async with entry.writes:
            changes, entry.journal = entry.journal or [], None
            if not entry.alive:
                return
            await asyncio.to_thread(_replay, new, changes)
            async with entry.lock:
                if entry.alive:
                    entry.index = new
                    self._rebuilds += 1
                    log.info("vector index rebuilt: tenant=%s store=%s kind=%s size=%d", key[0], key[1], kind,
                             len(new))


def _add(ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], index: LocalIndex) -> None:
    index.add(ids, vectors)


def _remove(ids: list[int], index: LocalIndex) -> None:
    index.remove(ids)


def _replay(index: LocalIndex, changes: list[_Change]) -> None:
    for change in changes:
        try:
            change(index)
        except ValueError:
            # vectors of another dimension than the store's, recorded while it loaded (so not refused to the
            # caller): dropped, so that one bad call cannot fail the load every search of the store waits on
            log.warning("vector index change dropped: its vectors do not fit the index", exc_info=True)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # a failed load is raised to its waiters; mark it retrieved when none is left
