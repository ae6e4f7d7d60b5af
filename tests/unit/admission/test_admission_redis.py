"""What only the Redis store promises: one script call per admission and per settle (counted by Redis itself), the
NOSCRIPT fallback, key names and TTLs, server time, and behaviour while Redis is unreachable."""

from __future__ import annotations

import calendar
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from services import RedisServer, free_port
from tenantlm.admission import AdmissionRequest, AdmissionUnavailable, Limits, Subject
from tenantlm.admission.redis_store import RedisLimitStore
from tenantlm.errors import ServiceUnavailable

NOW = float(calendar.timegm((2026, 11, 23, 12, 0, 0)))
SUBS = (Subject(level="key", id="key_1", limits=Limits(rpm=100, tpm=10_000, max_concurrency=50)),
        Subject(level="end_user", id="ten_a/bob", limits=Limits(daily_token_budget=10**6)),
        Subject(level="tenant", id="ten_a", limits=Limits(monthly_token_budget=10**6, monthly_cost_budget_usd=9.0)))


def request(rid: str, *, tokens: int = 10) -> AdmissionRequest:
    return AdmissionRequest(tenant_id="ten_a", request_id=rid, subjects=SUBS, tokens=tokens, cost_usd=0.01)


@pytest.fixture
async def raw(redis_clean: RedisServer) -> AsyncIterator[aredis.Redis]:
    client = aredis.Redis.from_url(redis_clean.url_for(0), decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def store(redis_clean: RedisServer) -> AsyncIterator[RedisLimitStore]:
    s = RedisLimitStore.from_url(redis_clean.url_for(0))
    try:
        yield s
    finally:
        await s.aclose()


async def client_commands(raw: aredis.Redis, url: str, work: Callable[[], Awaitable[None]]) -> list[str]:
    """The commands clients sent while ``work`` ran, as MONITOR saw them (commands a script runs are tagged "lua"
    there and left out; INFO commandstats cannot tell them apart)."""
    seen: list[str] = []
    marker = aredis.Redis.from_url(url)
    await marker.ping()  # connected before MONITOR starts, so its HELLO is not seen
    async with raw.monitor() as monitor:
        await work()
        await marker.echo("end-of-work")
        await marker.aclose()
        async for cmd in monitor.listen():
            if "end-of-work" in cmd["command"]:
                return seen
            if cmd["client_type"] != "lua":
                seen.append(cmd["command"].split()[0].upper())
    return seen


async def test_one_evalsha_per_admission_and_per_settle(store: RedisLimitStore, raw: aredis.Redis,
                                                        redis_clean: RedisServer) -> None:  # fmt: skip
    warm = await store.admit(request("warm"), now=NOW)  # the first calls load the scripts (NOSCRIPT, SCRIPT LOAD)
    assert warm.ticket is not None
    await store.settle(warm.ticket, tokens=1, cost_usd=0.0, final=True, now=NOW)

    async def work() -> None:
        for i in range(20):
            decision = await store.admit(request(f"r{i}"), now=NOW)
            assert decision.admitted and decision.ticket is not None
            await store.settle(decision.ticket, tokens=5, cost_usd=0.0, final=True, now=NOW)

    before = (await raw.info("commandstats"))["cmdstat_evalsha"]["calls"]
    assert await client_commands(raw, redis_clean.url_for(0), work) == ["EVALSHA"] * 40
    assert (await raw.info("commandstats"))["cmdstat_evalsha"]["calls"] - before == 40


async def test_scripts_are_reloaded_after_a_script_flush(store: RedisLimitStore, raw: aredis.Redis) -> None:
    assert (await store.admit(request("a"), now=NOW)).admitted
    await raw.script_flush()
    decision = await store.admit(request("b"), now=NOW)
    assert decision.admitted and decision.ticket is not None
    await raw.script_flush()
    assert not (await store.settle(decision.ticket, tokens=1, cost_usd=0.0, final=True, now=NOW)).degraded


async def test_every_key_is_prefixed_tagged_by_tenant_and_expires(redis_clean: RedisServer,
                                                                  raw: aredis.Redis) -> None:  # fmt: skip
    store = RedisLimitStore.from_url(redis_clean.url_for(0), prefix="app1:")
    try:
        decision = await store.admit(request("r0"), now=NOW)
        assert decision.ticket is not None
        await store.settle(decision.ticket, tokens=3, cost_usd=0.0, final=False, now=NOW)
        await store.seed_usage(tenant_id="ten_a", level="tenant", subject_id="ten_a", period="d:2026-11-22",
                               tokens=5, cost_usd=0.0)  # fmt: skip
    finally:
        await store.aclose()
    keys = sorted(await raw.keys("*"))
    # the record, the key's window and slots, a month budget hash per level (day counters are fields in it)
    assert len(keys) == 6
    assert await raw.hget("app1:{ten_a}:b:tenant:ten_a:m:2026-11", "d:2026-11-22") == "5"  # the seeded day
    assert all(k.startswith("app1:{ten_a}:") for k in keys)
    for k in keys:
        assert 0 < await raw.pttl(k) <= 35 * 86_400_000 + 1, k


async def test_server_time_mode_limits_by_redis_clock(redis_clean: RedisServer) -> None:
    store = RedisLimitStore.from_url(redis_clean.url_for(0), server_time=True)
    sub = (Subject(level="key", id="key_9", limits=Limits(rpm=2)),)
    try:
        for i in range(2):
            req = AdmissionRequest(tenant_id="ten_a", request_id=f"s{i}", subjects=sub, tokens=1, cost_usd=0.0)
            assert (await store.admit(req, now=0.0)).admitted  # the caller's clock is ignored for the window
        req = AdmissionRequest(tenant_id="ten_a", request_id="s2", subjects=sub, tokens=1, cost_usd=0.0)
        refused = await store.admit(req, now=0.0)
        assert not refused.admitted and refused.retry_after_s is not None and 59 < refused.retry_after_s <= 61
    finally:
        await store.aclose()


async def test_braces_are_refused_in_prefix_and_tenant_id(store: RedisLimitStore) -> None:
    with pytest.raises(ValueError):
        RedisLimitStore.from_url("redis://127.0.0.1:1/0", prefix="{x}:")
    with pytest.raises(ValueError):
        await store.admit(AdmissionRequest(tenant_id="t}x", request_id="r", subjects=SUBS, tokens=1, cost_usd=0.0),
                          now=NOW)  # fmt: skip


# ------------------------------------------------------------------------------------------- Redis unreachable
@pytest.fixture
async def dead() -> AsyncIterator[str]:
    yield f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


async def test_unreachable_redis_fails_closed_by_default(dead: str) -> None:
    store = RedisLimitStore.from_url(dead)
    try:
        with pytest.raises(AdmissionUnavailable) as caught:
            await store.admit(request("r0"), now=NOW)
    finally:
        await store.aclose()
    assert isinstance(caught.value, ServiceUnavailable) and caught.value.status == 503
    assert "127.0.0.1" not in caught.value.message


async def test_own_client_retries_twice_quickly_with_the_asyncio_retry(dead: str) -> None:
    """Two retries, after 20 ms then 40 ms (capped at 100 ms), by the asyncio client's own retry class: redis-py
    converts a synchronous one with a warning (an error under this suite's warning filter)."""
    store = RedisLimitStore.from_url(dead)
    try:
        retry = store._client.connection_pool.connection_kwargs["retry"]
    finally:
        await store.aclose()
    assert type(retry) is Retry
    assert retry == Retry(ExponentialBackoff(cap=0.1, base=0.01), 2)


async def test_fail_open_admits_degraded_and_warns_at_most_every_ten_seconds(
        dead: str, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    store = RedisLimitStore.from_url(dead, fail_open=True)
    try:
        with caplog.at_level(logging.WARNING, logger="tenantlm.admission.redis_store"):
            decisions = [await store.admit(request(f"r{i}"), now=NOW + i * 3.0) for i in range(5)]  # 0, 3, ... 12 s
        assert all(d.admitted and d.degraded and d.ticket is not None and d.ticket.degraded for d in decisions)
        assert len([r for r in caplog.records if "fail_open" in r.getMessage()]) == 2  # at 0 s and at 12 s
        ticket = decisions[0].ticket
        assert ticket is not None
        result = await store.settle(ticket, tokens=5, cost_usd=0.0, final=True, now=NOW)
        assert result.degraded and not result.budget_exhausted
    finally:
        await store.aclose()


async def test_settle_and_release_failures_are_logged_not_raised(
        store: RedisLimitStore, dead: str, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    decision = await store.admit(request("r0"), now=NOW)
    assert decision.ticket is not None
    unreachable = RedisLimitStore.from_url(dead)
    try:
        with caplog.at_level(logging.WARNING, logger="tenantlm.admission.redis_store"):
            result = await unreachable.settle(decision.ticket, tokens=5, cost_usd=0.0, final=True, now=NOW)
            await unreachable.release(decision.ticket, now=NOW)
    finally:
        await unreachable.aclose()
    assert result.degraded
    assert len([r for r in caplog.records if "settle failed" in r.getMessage()]) == 2
