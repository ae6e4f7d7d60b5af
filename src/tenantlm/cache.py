"""The one in-memory cache of the server: a time-to-live, a bound on its size, and single-flight loading (concurrent
misses for one key share one load). Used for resolved API keys (``tenancy.auth``), effective limits
(``tenancy.limits_service``) and plaintext data keys (``crypto.keyring``).

The size bound holds whatever the keys are: when full, expired entries go first, then the oldest inserted, so a
client that sends endless distinct keys costs a bounded amount of memory. ``evict`` drops entries at once, and a
load that was already running when an eviction happened does not put its result back (its callers still get it), so
a revocation or a shred cannot be undone by a load racing it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, *, ttl_s: float, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = 100_000) -> None:
        if ttl_s < 0:
            raise ValueError("ttl_s must be >= 0")
        self.ttl_s = ttl_s
        self._clock = clock
        self._max = max_entries
        self._entries: dict[K, tuple[V, float]] = {}
        self._inflight: dict[K, asyncio.Task[V]] = {}
        self._epoch = 0  # bumped by every eviction

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            self._entries.pop(key, None)
            return None
        return entry[0]

    def put(self, key: K, value: V) -> None:
        if self.ttl_s == 0:
            return
        if len(self._entries) >= self._max:
            self._prune()
        self._entries[key] = (value, self._clock() + self.ttl_s)

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        hit = self.get(key)
        if hit is not None:
            return hit
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(key, load, self._epoch))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        # shield: one caller giving up (cancelled) must not cancel the load the others wait on
        return await asyncio.shield(task)

    def evict(self, match: Callable[[K, V], bool]) -> int:
        """Drop every entry for which ``match(key, value)`` holds; loads in flight will not store their results."""
        self._epoch += 1
        doomed = [k for k, (v, _exp) in self._entries.items() if match(k, v)]
        for k in doomed:
            del self._entries[k]
        return len(doomed)

    def clear(self) -> None:
        self.evict(lambda _k, _v: True)

    async def _load(self, key: K, load: Callable[[], Awaitable[V]], epoch: int) -> V:
        value = await load()
        if epoch == self._epoch:
            self.put(key, value)
        return value

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: every waiter may have gone away

    def _prune(self) -> None:
        now = self._clock()
        for k in [k for k, (_v, exp) in self._entries.items() if exp <= now]:
            del self._entries[k]
        while len(self._entries) >= self._max:  # still full of live entries: drop the oldest inserted
            del self._entries[next(iter(self._entries))]
