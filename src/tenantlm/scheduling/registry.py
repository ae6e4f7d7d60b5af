"""One FairScheduler per upstream model, each scheduling this replica's share of the model's capacity.

**How the share is found.** A model's configured capacity C is the number of requests the upstream should have in
flight from the whole deployment. Each replica schedules ``ceil(C / n)`` of them, where n is the number of live
replicas reported by a :class:`ReplicaCount`:

- :class:`StaticReplicaCount` (from a setting): n is fixed; right for one process, or a fixed fleet.
- :class:`RedisReplicaCount`: every replica keeps a heartbeat in a Redis sorted set (member = its replica id,
  score = Redis server time + ttl), refreshed every ``refresh_s``; the same Lua script drops members whose score has
  passed and returns how many remain. One round trip per refresh, one clock (Redis's), no SCAN.

**Why ceil and not floor.** With floor, C = 10 on 4 replicas schedules 2 each: 8 in flight at full load, 20% of
the upstream idle forever. With ceil it schedules 3 each: at most C + n - 1 in flight, and the few extra wait in
the upstream's own queue for one request's completion. Permanent idle capacity is the worse failure; and when
n > C both give every replica 1 slot anyway (a replica with 0 could serve nobody).

**Joins and leaves.** The registry reads ``replicas.live()`` (a cached int, no I/O) on every ``get()`` and, when it
changed, calls ``set_capacity`` on every scheduler. Shrinking lets requests already in flight finish; growing
dispatches waiters at once. A replica that joins counts itself at its first heartbeat, before serving; the others
see it within ``refresh_s``, so for up to that long the fleet can exceed C by one share. A replica that stops
cleanly removes its heartbeat (others see it within ``refresh_s``); one that dies is dropped after ``ttl_s``, and
until then the survivors under-use the upstream (safe side). If Redis cannot be reached, ``live()`` keeps the last
count it read (not 1: falling back to 1 would let every replica take the whole capacity), and logs a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from tenantlm.scheduling.models import NullObserver, SchedulerObserver
from tenantlm.scheduling.scheduler import FairScheduler

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)


class ReplicaCount(Protocol):
    """How many replicas share each model's capacity. ``live()`` is called on the hot path: no I/O in it."""

    def live(self) -> int: ...


class StaticReplicaCount:
    def __init__(self, n: int = 1) -> None:
        if n < 1:
            raise ValueError(f"replica count must be >= 1, got {n}")
        self._n = n

    def live(self) -> int:
        return self._n


# KEYS[1] the set; ARGV[1] replica id; ARGV[2] ttl ms; ARGV[3] 1 = heartbeat, 0 = leave.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
"""


class RedisReplicaCount:
    """Counts live replicas through heartbeats in Redis. ``await start()`` before use, ``await aclose()`` at exit."""

    def __init__(self, redis: Redis, *, key: str = "tenantlm:replicas", replica_id: str | None = None,
                 ttl_s: float = 15.0, refresh_s: float = 5.0) -> None:  # fmt: skip
        if not 0 < refresh_s < ttl_s:
            raise ValueError("need 0 < refresh_s < ttl_s, or live replicas would expire between refreshes")
        self._redis = redis
        self._key = key
        self.replica_id = replica_id or uuid.uuid4().hex
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._refresh_s = refresh_s
        self._n = 1
        self._task: asyncio.Task[None] | None = None
        self._script: Any = redis.register_script(_HEARTBEAT)

    def live(self) -> int:
        return self._n

    async def start(self) -> None:
        """Registers this replica (raises if Redis is unreachable now: fail at startup, not silently), then keeps
        the heartbeat fresh in a background task."""
        self._n = await self._beat(alive=True)
        self._task = asyncio.create_task(self._loop(), name=f"replica-heartbeat-{self.replica_id}")

    async def refresh(self) -> int:
        """One heartbeat now; returns the live count (the loop calls this every ``refresh_s``)."""
        try:
            self._n = await self._beat(alive=True)
        except Exception as e:  # a broken Redis must not kill the loop: keep the last count
            log.warning("replica heartbeat failed, keeping %d live replicas: %s", self._n, type(e).__name__)
        return self._n

    async def aclose(self) -> None:
        """Stops the heartbeat and removes this replica, so the others take over its share at their next refresh."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self._beat(alive=False)

    async def _loop(self) -> None:
        task = asyncio.current_task()
        while True:
            await asyncio.sleep(self._refresh_s)
            await self.refresh()
            if task is not None and task.cancelling():  # a cancel that arrived inside the Redis call and was lost
                raise asyncio.CancelledError

    async def _beat(self, *, alive: bool) -> int:
        count = await self._script(keys=[self._key], args=[self.replica_id, self._ttl_ms, "1" if alive else "0"])
        return max(1, int(count))


def default_headroom(capacity: int) -> int:
    """Slots a scheduler of ``capacity`` slots holds back for newcomers when the model's catalog entry does not set
    ``headroom``: none below 8 slots (one would be too large a share of them), then one per 32 slots, rounded up
    (8-32: 1, 33-64: 2, 128: 4). Applied to each replica's share, so a model split thin over many replicas holds
    nothing back rather than half of a replica's two slots. Measured in P2 (docs/benchmarks.md): with no slot held
    back a light tenant next to a flood waits for a running request to end, about service time / capacity, which at
    16 slots put its p99 at 1.26-1.31x its latency alone; with one, 1.17x, for 7 % of the flood's throughput."""
    return 0 if capacity < 8 else -(-capacity // 32)


def share(capacity: int, replicas: int) -> int:
    """This replica's slots: ceil(capacity / replicas), at least 1 (see the module docstring for why ceil)."""
    return max(1, math.ceil(capacity / max(1, replicas)))


class SchedulerRegistry:
    """The schedulers of all configured models. ``get(model)`` is cheap (a dict lookup and an int compare)."""

    def __init__(self, capacities: Mapping[str, int], replicas: ReplicaCount, *,
                 observer_for: Callable[[str], SchedulerObserver] | None = None,
                 headrooms: Mapping[str, int] | None = None, **scheduler_options: Any) -> None:  # fmt: skip
        """``observer_for(model)`` gives each scheduler its observer (so metrics can carry the model label);
        ``headrooms`` the slots a model holds back for newcomers when its catalog entry sets them
        (FairScheduler's ``headroom``; shared among replicas like the capacity, rounded up); a model not in it
        holds back ``default_headroom`` of this replica's share; ``scheduler_options`` go to every FairScheduler
        (max_queue_per_tenant, max_queue_total, w_in, w_out, clock)."""
        self._replicas = replicas
        self._n = replicas.live()
        self._capacities = dict(capacities)
        self._headrooms = dict(headrooms or {})
        self._schedulers: dict[str, FairScheduler] = {}
        for model, capacity in self._capacities.items():
            observer = observer_for(model) if observer_for else NullObserver()
            self._schedulers[model] = FairScheduler(model=model, capacity=share(capacity, self._n), observer=observer,
                                                    headroom=self._headroom(model, self._n),
                                                    **scheduler_options)  # fmt: skip

    def _headroom(self, model: str, n: int) -> int:
        if model not in self._headrooms:
            return default_headroom(share(self._capacities[model], n))
        headroom = self._headrooms[model]
        return share(headroom, n) if headroom else 0

    def get(self, model: str) -> FairScheduler:
        """The model's scheduler, its capacity brought up to date with the live replica count. KeyError if the
        model has no configured capacity."""
        n = self._replicas.live()
        if n != self._n:
            self._rescale(n)
        return self._schedulers[model]

    def schedulers(self) -> Mapping[str, FairScheduler]:
        return dict(self._schedulers)

    @property
    def replicas(self) -> int:
        return self._n

    def _rescale(self, n: int) -> None:
        log.info("live replicas %d -> %d: rescaling scheduler capacities", self._n, n)
        self._n = n
        for model, scheduler in self._schedulers.items():
            scheduler.set_headroom(self._headroom(model, n))
            scheduler.set_capacity(share(self._capacities[model], n))
