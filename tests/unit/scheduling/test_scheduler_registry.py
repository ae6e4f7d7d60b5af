"""SchedulerRegistry: per-model schedulers with ceil(capacity / live replicas); RedisReplicaCount on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from scheduling_fakes import RecordingObserver

from services import RedisServer, free_port
from tenantlm.scheduling import RedisReplicaCount, SchedulerRegistry, StaticReplicaCount, default_headroom, share


class MutableReplicaCount:
    def __init__(self, n: int) -> None:
        self.n = n

    def live(self) -> int:
        return self.n


@pytest.mark.parametrize(("capacity", "replicas", "expected"),
                         [(10, 1, 10), (10, 3, 4), (10, 4, 3), (10, 10, 1), (10, 11, 1), (1, 5, 1), (64, 0, 64)])
def test_share_is_ceil_of_capacity_over_replicas_and_at_least_one(capacity: int, replicas: int,
                                                                  expected: int) -> None:  # fmt: skip
    assert share(capacity, replicas) == expected


def test_registry_gives_each_model_its_share_and_follows_replica_changes() -> None:
    replicas = MutableReplicaCount(1)
    seen: list[str] = []

    def observer_for(model: str) -> RecordingObserver:
        seen.append(model)
        return RecordingObserver()

    reg = SchedulerRegistry({"big": 64, "small": 2}, replicas, observer_for=observer_for, max_queue_per_tenant=7)
    assert sorted(seen) == ["big", "small"]
    assert (reg.get("big").capacity, reg.get("small").capacity) == (64, 2)
    replicas.n = 3
    assert (reg.get("big").capacity, reg.get("small").capacity) == (22, 1)
    replicas.n = 2
    assert reg.get("small").capacity == 1 and reg.get("big").capacity == 32 and reg.replicas == 2
    assert reg.get("big") is reg.get("big")
    with pytest.raises(KeyError):
        reg.get("unknown")


def test_headroom_is_shared_among_replicas_like_the_capacity() -> None:
    replicas = MutableReplicaCount(1)
    reg = SchedulerRegistry({"m": 64, "plain": 8}, replicas, headrooms={"m": 4, "plain": 0})
    assert (reg.get("m").headroom, reg.get("plain").headroom) == (4, 0)
    replicas.n = 3
    assert (reg.get("m").capacity, reg.get("m").headroom, reg.get("plain").headroom) == (22, 2, 0)  # ceil(4 / 3)
    replicas.n = 8
    assert reg.get("m").headroom == 1  # at least one per replica while any is configured


@pytest.mark.parametrize(("capacity", "expected"),
                         [(1, 0), (2, 0), (7, 0), (8, 1), (16, 1), (32, 1), (33, 2), (64, 2), (128, 4), (1000, 32)])
def test_default_headroom_follows_the_capacity(capacity: int, expected: int) -> None:
    assert default_headroom(capacity) == expected
    assert expected < capacity or capacity == 1  # always leaves the queue a slot


def test_a_model_without_a_headroom_holds_back_the_default_of_each_replicas_share() -> None:
    replicas = MutableReplicaCount(1)
    reg = SchedulerRegistry({"big": 64, "small": 8}, replicas)
    assert (reg.get("big").headroom, reg.get("small").headroom) == (2, 1)
    replicas.n = 2  # 32 and 4 slots each
    assert (reg.get("big").headroom, reg.get("small").headroom) == (1, 0)
    replicas.n = 4  # 16 and 2: half of two slots would be far too much
    assert (reg.get("big").headroom, reg.get("small").headroom) == (1, 0)
    replicas.n = 1
    assert (reg.get("big").headroom, reg.get("small").headroom) == (2, 1)


def test_static_replica_count() -> None:
    assert StaticReplicaCount(4).live() == 4
    with pytest.raises(ValueError):
        StaticReplicaCount(0)


@pytest.fixture
async def redis(redis_clean: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_clean.url)
    try:
        yield client
    finally:
        await client.aclose()


async def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def replica(redis: Redis, name: str) -> RedisReplicaCount:
    return RedisReplicaCount(redis, key="test:replicas", replica_id=name, ttl_s=0.4, refresh_s=0.05)


async def test_redis_replicas_join_leave_and_expire(redis: Redis, redis_clean: RedisServer) -> None:
    # c gets a client of its own, as a replica in its own process has: cancelling its heartbeat mid-command (its
    # "death" below) must not be able to disturb a connection the others use
    own = Redis.from_url(redis_clean.url)
    a, b, c = replica(redis, "a"), replica(redis, "b"), replica(own, "c")
    await a.start()
    assert a.live() == 1
    await b.start()
    assert b.live() == 2  # counts itself and a at its first heartbeat
    await wait_for(lambda: a.live() == 2)  # a sees b at its next refresh
    await c.start()
    await wait_for(lambda: a.live() == 3 and b.live() == 3)
    await b.aclose()  # clean leave: removed at once
    await wait_for(lambda: a.live() == 2 and c.live() == 2)
    assert c._task is not None
    c._task.cancel()  # c "dies": no more heartbeats, no goodbye
    await asyncio.sleep(0.1)
    assert a.live() == 2  # still counted until its ttl passes
    await wait_for(lambda: a.live() == 1)
    await a.aclose()
    assert await redis.zcard("test:replicas") == 0
    await own.aclose()


async def test_registry_rescales_from_redis_replica_count(redis: Redis) -> None:
    a, b = replica(redis, "a"), replica(redis, "b")
    await a.start()
    reg = SchedulerRegistry({"m": 10}, a)
    assert reg.get("m").capacity == 10
    await b.start()
    await wait_for(lambda: reg.get("m").capacity == 5)
    await b.aclose()
    await wait_for(lambda: reg.get("m").capacity == 10)
    await a.aclose()


async def test_a_failing_heartbeat_keeps_the_last_count(redis: Redis) -> None:
    a, b = replica(redis, "a"), replica(redis, "b")
    await a.start()
    await b.start()
    assert b.live() == 2
    await redis.delete("test:replicas")
    await redis.set("test:replicas", "not a sorted set")  # every script call now fails with WRONGTYPE
    assert await b.refresh() == 2  # not 1: one would let this replica take the whole capacity
    await redis.delete("test:replicas")
    assert await b.refresh() == 1  # works again: only b has beaten since
    await b.aclose()
    await a.aclose()


async def test_start_fails_loudly_when_redis_is_down() -> None:
    broken = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(RedisConnectionError):
            await RedisReplicaCount(broken, ttl_s=1, refresh_s=0.5).start()
    finally:
        await broken.aclose()


def test_refresh_must_be_shorter_than_ttl() -> None:
    with pytest.raises(ValueError):
        RedisReplicaCount(Redis(), ttl_s=1, refresh_s=1)
