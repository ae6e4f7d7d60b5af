"""LimitStore contract, run against the in-process store and a real Redis: every dimension at every level refuses at
exactly its limit, all-or-nothing, settle corrections and streaming, release, idempotency, leases, period roll-over,
retry-after, headers, seeding, and concurrent admissions (coroutines, independent clients, OS processes)."""

from __future__ import annotations

import asyncio
import calendar
import json
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services import RedisServer
from tenantlm.admission import AdmissionRequest, Limits, LimitStore, MemoryLimitStore, Subject, Ticket
from tenantlm.admission.redis_store import RedisLimitStore

T = "ten_aaaa"
NOON = float(calendar.timegm((2026, 11, 23, 12, 0, 0)))
KEY, USER, TENANT = "key_1", f"{T}/alice", T
IDS = {"key": KEY, "end_user": USER, "tenant": TENANT}


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LimitStore]:
    if request.param == "memory":
        yield MemoryLimitStore()
        return
    server: RedisServer = request.getfixturevalue("redis_clean")
    redis_store = RedisLimitStore.from_url(server.url_for(0), prefix="test:")
    try:
        yield redis_store
    finally:
        await redis_store.aclose()


def subjects(**per_level: Limits) -> tuple[Subject, ...]:
    """key, end user and tenant, in that order; a level not named is unlimited."""
    return tuple(Subject(level=lvl, id=IDS[lvl], limits=per_level.get(lvl, Limits()))
                 for lvl in ("key", "end_user", "tenant"))  # fmt: skip


def request(rid: str, subs: tuple[Subject, ...], *, tokens: int = 10, cost: float = 0.0,
            lease: float = 600.0) -> AdmissionRequest:  # fmt: skip
    return AdmissionRequest(tenant_id=T, request_id=rid, subjects=subs, tokens=tokens, cost_usd=cost, lease_s=lease)


async def admit_n(store: LimitStore, subs: tuple[Subject, ...], n: int, *, now: float = NOON, tokens: int = 10,
                  cost: float = 0.0, prefix: str = "r") -> list[Ticket]:  # fmt: skip
    tickets = []
    for i in range(n):
        d = await store.admit(request(f"{prefix}{i}", subs, tokens=tokens, cost=cost), now=now)
        assert d.admitted and d.ticket is not None, d.message
        tickets.append(d.ticket)
    return tickets


async def usage(store: LimitStore, subs: tuple[Subject, ...], level: int, now: float = NOON) -> dict[str, Any]:
    return await store.snapshot(tenant_id=T, subject=subs[level], now=now)


# ------------------------------------------------------------------------------------------- exactly at the limit
DIMENSION_CASES = {
    "rpm": (Limits(rpm=3), "rate_limit_exceeded"),
    "tpm": (Limits(tpm=30), "rate_limit_exceeded"),
    "max_concurrency": (Limits(max_concurrency=3), "rate_limit_exceeded"),
    "daily_token_budget": (Limits(daily_token_budget=30), "insufficient_quota"),
    "monthly_token_budget": (Limits(monthly_token_budget=30), "insufficient_quota"),
    "monthly_cost_budget_usd": (Limits(monthly_cost_budget_usd=0.03), "insufficient_quota"),
}


@pytest.mark.parametrize("level", ["key", "end_user", "tenant"])
@pytest.mark.parametrize("dimension", list(DIMENSION_CASES))
async def test_every_dimension_refuses_at_exactly_the_limit(store: LimitStore, level: str, dimension: str) -> None:
    limits, code = DIMENSION_CASES[dimension]
    generous = Limits(rpm=1000, tpm=100_000, max_concurrency=100, daily_token_budget=10**6,
                      monthly_token_budget=10**6, monthly_cost_budget_usd=100.0)  # fmt: skip
    subs = subjects(**{lvl: (limits if lvl == level else generous) for lvl in IDS})
    await admit_n(store, subs, 3, tokens=10, cost=0.01)
    refused = await store.admit(request("r3", subs, tokens=10, cost=0.01), now=NOON)
    assert not refused.admitted and refused.ticket is None
    assert (refused.code, refused.level, refused.dimension) == (code, level, dimension)
    assert refused.error().code == code and refused.error().status == 429


async def test_all_or_nothing_a_tenant_refusal_consumes_nothing_below(store: LimitStore) -> None:
    subs = subjects(key=Limits(rpm=100, tpm=10_000, max_concurrency=10, daily_token_budget=10**6),
                    end_user=Limits(rpm=100), tenant=Limits(monthly_token_budget=25))  # fmt: skip
    await admit_n(store, subs, 2)
    refused = await store.admit(request("r2", subs), now=NOON)
    assert (refused.admitted, refused.level, refused.dimension) == (False, "tenant", "monthly_token_budget")
    key_usage = await usage(store, subs, 0)
    assert (key_usage["requests"], key_usage["tokens"], key_usage["in_flight"]) == (2, 20, 2)
    assert key_usage["daily_tokens"] == key_usage["monthly_tokens"] == 20
    assert (await usage(store, subs, 1))["requests"] == 2


async def test_all_or_nothing_a_key_refusal_consumes_nothing_above(store: LimitStore) -> None:
    subs = subjects(key=Limits(rpm=1), tenant=Limits(rpm=100, tpm=1000, max_concurrency=10))
    await admit_n(store, subs, 1)
    assert not (await store.admit(request("r1", subs), now=NOON)).admitted
    tenant_usage = await usage(store, subs, 2)
    assert (tenant_usage["requests"], tenant_usage["tokens"], tenant_usage["in_flight"]) == (1, 10, 1)
    assert tenant_usage["monthly_tokens"] == 10


# ------------------------------------------------------------------------------------------- settle and release
async def test_final_settle_replaces_the_reservation_both_ways(store: LimitStore) -> None:
    subs = subjects(key=Limits(tpm=1000), tenant=Limits(monthly_token_budget=1000, monthly_cost_budget_usd=10.0))
    over, under = await admit_n(store, subs, 2, tokens=100, cost=1.0)
    await store.settle(over, tokens=40, cost_usd=0.25, final=True, now=NOON + 1)  # reserved too much: refund 60
    result = await store.settle(under, tokens=130, cost_usd=1.5, final=True, now=NOON + 1)  # too little: charge 30
    assert not result.budget_exhausted and result.remaining_tokens == 1000 - 170
    assert result.remaining_cost_usd == pytest.approx(10.0 - 1.75)
    key_usage, tenant_usage = await usage(store, subs, 0, NOON + 2), await usage(store, subs, 2, NOON + 2)
    assert key_usage["tokens"] == 170 and tenant_usage["monthly_tokens"] == 170
    assert tenant_usage["monthly_cost_usd"] == pytest.approx(1.75)
    assert key_usage["requests"] == 2


async def test_streaming_settle_charges_beyond_the_reservation_and_signals_exhaustion(store: LimitStore) -> None:
    subs = subjects(tenant=Limits(monthly_token_budget=100))
    [ticket] = await admit_n(store, subs, 1, tokens=50)
    partial = await store.settle(ticket, tokens=30, cost_usd=0.0, final=False, now=NOON + 1)
    assert (partial.budget_exhausted, partial.remaining_tokens) == (False, 70)  # 50 left + 20 of its reservation
    assert (await usage(store, subs, 2))["monthly_tokens"] == 50  # the reservation stays charged while streaming
    partial = await store.settle(ticket, tokens=90, cost_usd=0.0, final=False, now=NOON + 2)
    assert (partial.budget_exhausted, partial.remaining_tokens) == (False, 10)
    assert (await usage(store, subs, 2))["monthly_tokens"] == 90
    partial = await store.settle(ticket, tokens=100, cost_usd=0.0, final=False, now=NOON + 3)
    assert (partial.budget_exhausted, partial.remaining_tokens) == (True, 0)
    final = await store.settle(ticket, tokens=100, cost_usd=0.0, final=True, now=NOON + 4)
    assert final.budget_exhausted and (await usage(store, subs, 2))["monthly_tokens"] == 100


async def test_streaming_settle_signals_an_exhausted_cost_budget(store: LimitStore) -> None:
    subs = subjects(key=Limits(monthly_cost_budget_usd=1.0))
    [ticket] = await admit_n(store, subs, 1, cost=0.5)
    assert not (await store.settle(ticket, tokens=5, cost_usd=0.9, final=False, now=NOON)).budget_exhausted
    result = await store.settle(ticket, tokens=6, cost_usd=1.0, final=False, now=NOON)
    assert result.budget_exhausted and result.remaining_cost_usd == 0.0


async def test_a_refund_never_takes_window_tokens_another_request_holds(store: LimitStore) -> None:
    subs = subjects(key=Limits(tpm=10_000), tenant=Limits(monthly_token_budget=10_000))
    a, _b = await admit_n(store, subs, 2, tokens=100)  # both reservations sit in second 0's bucket
    await store.settle(a, tokens=150, cost_usd=0.0, final=False, now=NOON + 10)  # 50 beyond, charged in second 10
    await store.settle(a, tokens=20, cost_usd=0.0, final=True, now=NOON + 11)  # refund 130: only a's 100 is in s0
    assert (await usage(store, subs, 0, NOON + 11))["tokens"] == 100 + 50  # b's 100 intact; the 50 ages out
    assert (await usage(store, subs, 2, NOON + 11))["monthly_tokens"] == 100 + 20  # budgets take the exact figure


async def test_release_refunds_but_keeps_the_request_counted(store: LimitStore) -> None:
    subs = subjects(key=Limits(rpm=10, tpm=1000, max_concurrency=1), tenant=Limits(monthly_cost_budget_usd=5.0))
    [ticket] = await admit_n(store, subs, 1, tokens=50, cost=0.5)
    await store.release(ticket, now=NOON + 1)
    key_usage, tenant_usage = await usage(store, subs, 0), await usage(store, subs, 2)
    assert (key_usage["requests"], key_usage["tokens"], key_usage["in_flight"]) == (1, 0, 0)
    assert (tenant_usage["monthly_tokens"], tenant_usage["monthly_cost_usd"]) == (0, 0.0)
    assert (await store.admit(request("r1", subs), now=NOON + 1)).admitted  # the slot is free again


async def test_release_after_streaming_keeps_what_was_used(store: LimitStore) -> None:
    subs = subjects(tenant=Limits(monthly_token_budget=1000))
    [ticket] = await admit_n(store, subs, 1, tokens=100)
    await store.settle(ticket, tokens=30, cost_usd=0.0, final=False, now=NOON)
    await store.release(ticket, now=NOON)  # the stream broke: what was reported stays charged, the rest is refunded
    assert (await usage(store, subs, 2))["monthly_tokens"] == 30


async def test_settle_and_release_are_idempotent(store: LimitStore) -> None:
    subs = subjects(key=Limits(tpm=1000, max_concurrency=5), tenant=Limits(monthly_token_budget=1000))
    first, second, third = await admit_n(store, subs, 3, tokens=100)
    assert not (await store.settle(first, tokens=70, cost_usd=0.0, final=True, now=NOON)).duplicate
    again = await store.settle(first, tokens=70, cost_usd=0.0, final=True, now=NOON)  # a crash-retry
    assert again.duplicate and again.remaining_tokens == 1000 - 270
    await store.release(first, now=NOON)  # a disconnect racing the normal end: no-op
    await store.release(second, now=NOON)
    await store.release(second, now=NOON)
    assert (await store.settle(second, tokens=10, cost_usd=0.0, final=True, now=NOON)).duplicate
    await store.settle(third, tokens=20, cost_usd=0.0, final=False, now=NOON)
    await store.settle(third, tokens=20, cost_usd=0.0, final=False, now=NOON)
    key_usage, tenant_usage = await usage(store, subs, 0), await usage(store, subs, 2)
    assert (key_usage["tokens"], key_usage["in_flight"], tenant_usage["monthly_tokens"]) == (170, 1, 170)


async def test_a_retried_admission_counts_once(store: LimitStore) -> None:
    subs = subjects(key=Limits(rpm=5, max_concurrency=5), tenant=Limits(monthly_token_budget=100))
    for _ in range(3):
        decision = await store.admit(request("same", subs), now=NOON)
        assert decision.admitted and decision.ticket is not None and decision.ticket.request_id == "same"
    key_usage = await usage(store, subs, 0)
    assert (key_usage["requests"], key_usage["in_flight"], key_usage["monthly_tokens"]) == (1, 1, 10)


# ------------------------------------------------------------------------------------------- time
async def test_an_expired_lease_frees_the_slot_and_streaming_renews_it(store: LimitStore) -> None:
    subs = subjects(key=Limits(max_concurrency=1))
    crashed = await store.admit(request("crashed", subs, lease=5.0), now=NOON)
    assert crashed.admitted
    assert not (await store.admit(request("b", subs), now=NOON + 4.9)).admitted
    ticket = (await store.admit(request("b", subs, lease=5.0), now=NOON + 5.0)).ticket  # the crashed lease expired
    assert ticket is not None
    await store.settle(ticket, tokens=1, cost_usd=0.0, final=False, now=NOON + 9.0)  # renews to NOON + 14
    assert not (await store.admit(request("c", subs), now=NOON + 12.0)).admitted
    assert (await store.admit(request("c", subs), now=NOON + 14.0)).admitted


async def test_the_window_rolls_over_exactly_when_the_retry_after_says(store: LimitStore) -> None:
    subs = subjects(key=Limits(rpm=3))
    for i, at in enumerate((0.5, 10.5, 20.5)):
        await admit_n(store, subs, 1, now=NOON + at, prefix=f"t{i}-")
    refused = await store.admit(request("late", subs), now=NOON + 30.2)
    assert refused.retry_after_s == pytest.approx(61 - 30.2)  # the bucket of second 0 leaves at 61
    assert not (await store.admit(request("late", subs), now=NOON + 60.99)).admitted
    assert (await store.admit(request("late", subs), now=NOON + 61.0)).admitted


async def test_tpm_retry_after_waits_for_enough_tokens_to_leave(store: LimitStore) -> None:
    subs = subjects(tenant=Limits(tpm=30))
    await admit_n(store, subs, 1, now=NOON + 0.5, tokens=10, prefix="a")
    await admit_n(store, subs, 1, now=NOON + 5.5, tokens=20, prefix="b")
    refused = await store.admit(request("c", subs, tokens=20), now=NOON + 6.0)
    assert refused.retry_after_s == pytest.approx(66 - 6.0)  # dropping second 0 frees 10: not enough; second 5: yes
    too_big = await store.admit(request("d", subs, tokens=31), now=NOON + 6.0)
    assert too_big.retry_after_s is None and "never" in too_big.message


async def test_budgets_roll_over_at_utc_midnight_and_month_end(store: LimitStore) -> None:
    eod = float(calendar.timegm((2026, 11, 30, 23, 59, 58)))
    subs = subjects(key=Limits(daily_token_budget=20), tenant=Limits(monthly_token_budget=40))
    await admit_n(store, subs, 2, now=eod - 2.5 * 86_400, prefix="earlier")
    await admit_n(store, subs, 2, now=eod, prefix="today")
    daily = await store.admit(request("x", subs), now=eod + 0.5)
    assert (daily.dimension, daily.retry_after_s) == ("daily_token_budget", pytest.approx(1.5))
    assert (daily.code, daily.level) == ("insufficient_quota", "key")
    monthly = await store.admit(request("y", subs, tokens=5), now=NOON + 6 * 86_400)  # 29 Nov: day free, month full
    assert (monthly.dimension, monthly.level) == ("monthly_token_budget", "tenant")
    assert monthly.retry_after_s == pytest.approx(36 * 3600)
    assert (await store.admit(request("z", subs), now=eod + 2.0)).admitted  # 1 December: both reset


async def test_retry_after_reports_the_longest_wait_and_a_budget_wins(store: LimitStore) -> None:
    subs = subjects(key=Limits(rpm=1), tenant=Limits(daily_token_budget=10))
    await admit_n(store, subs, 1)
    refused = await store.admit(request("x", subs), now=NOON)
    assert (refused.code, refused.dimension) == ("insufficient_quota", "daily_token_budget")
    assert refused.retry_after_s == pytest.approx(12 * 3600)


async def test_clock_skew_a_replica_ahead_is_counted_by_one_behind(store: LimitStore) -> None:
    subs = subjects(key=Limits(rpm=2))
    await admit_n(store, subs, 2, now=NOON + 3.0)  # this replica's clock runs 3 s ahead
    assert not (await store.admit(request("behind", subs), now=NOON)).admitted


# ------------------------------------------------------------------------------------------- headers, seeding
async def test_headers_come_from_the_most_constrained_level(store: LimitStore) -> None:
    subs = subjects(key=Limits(rpm=10, tpm=1000), tenant=Limits(rpm=5, tpm=5000))
    decision = await store.admit(request("r0", subs, tokens=100), now=NOON)
    assert decision.headers() == {
        "x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "1m1s", "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900", "x-ratelimit-reset-tokens": "1m1s",
    }  # fmt: skip
    await admit_n(store, subs, 4, now=NOON + 30.5, prefix="more")
    refused = await store.admit(request("x", subs), now=NOON + 40.25)
    headers = refused.error().headers
    assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-reset-requests"] == "50.75s"
    assert headers["retry-after"] == "21" and headers["retry-after-ms"] == "20750"  # second 0 leaves at 61


async def test_no_headers_without_a_rate_limit(store: LimitStore) -> None:
    decision = await store.admit(request("r0", subjects(tenant=Limits(monthly_token_budget=100))), now=NOON)
    assert decision.admitted and decision.headers() == {}


async def test_seeded_usage_counts_against_budgets_and_never_lowers(store: LimitStore) -> None:
    subs = subjects(tenant=Limits(monthly_token_budget=100, monthly_cost_budget_usd=1.0))
    await store.seed_usage(tenant_id=T, level="tenant", subject_id=TENANT, period="m:2026-11", tokens=80,
                           cost_usd=0.5)  # fmt: skip
    await admit_n(store, subs, 2)
    assert (await store.admit(request("x", subs), now=NOON)).dimension == "monthly_token_budget"
    await store.seed_usage(tenant_id=T, level="tenant", subject_id=TENANT, period="m:2026-11", tokens=10,
                           cost_usd=0.0)  # fmt: skip
    tenant_usage = await usage(store, subs, 2)
    assert (tenant_usage["monthly_tokens"], tenant_usage["monthly_cost_usd"]) == (100, 0.5)
    with pytest.raises(ValueError):
        await store.seed_usage(tenant_id=T, level="tenant", subject_id=TENANT, period="m:2026-13", tokens=1,
                               cost_usd=0.0)  # fmt: skip


async def test_tenants_do_not_share_counters(store: LimitStore) -> None:
    limits = Limits(rpm=1, monthly_token_budget=10)
    for tenant_id in ("ten_aaaa", "ten_bbbb"):
        sub = (Subject(level="tenant", id=tenant_id, limits=limits),)
        req = AdmissionRequest(tenant_id=tenant_id, request_id="r0", subjects=sub, tokens=10, cost_usd=0.0)
        assert (await store.admit(req, now=NOON)).admitted


# ------------------------------------------------------------------------------------------- concurrency
CONCURRENT_CASES = {
    "rpm": (Limits(rpm=100), 0),
    "tpm": (Limits(tpm=700), 0),
    "max_concurrency": (Limits(max_concurrency=100), 0),
    "daily_token_budget": (Limits(daily_token_budget=700), 0),
    "monthly_cost_budget_usd": (Limits(monthly_cost_budget_usd=1.0), 0.01),
}


@pytest.mark.parametrize("dimension", list(CONCURRENT_CASES))
async def test_simultaneous_admissions_never_exceed_a_limit(store: LimitStore, dimension: str) -> None:
    limits, cost = CONCURRENT_CASES[dimension]
    subs = subjects(key=Limits(rpm=10_000), tenant=limits)
    decisions = await asyncio.gather(*(store.admit(request(f"r{i}", subs, tokens=7, cost=cost), now=NOON)
                                       for i in range(350)))  # fmt: skip
    admitted = sum(d.admitted for d in decisions)
    assert admitted == 100
    assert {d.dimension for d in decisions if not d.admitted} == {dimension}
    assert (await usage(store, subs, 0))["requests"] == 100  # the refused consumed nothing on the key level


@pytest.mark.redis
async def test_independent_redis_clients_never_exceed_a_limit(redis_clean: RedisServer) -> None:
    stores = [RedisLimitStore.from_url(redis_clean.url_for(0)) for _ in range(4)]
    subs = subjects(key=Limits(rpm=10_000, max_concurrency=200), tenant=Limits(tpm=1050))
    try:
        decisions = await asyncio.gather(*(stores[i % 4].admit(request(f"r{i}", subs, tokens=7), now=NOON)
                                           for i in range(400)))  # fmt: skip
        assert sum(d.admitted for d in decisions) == 150
        assert (await usage(stores[0], subs, 0))["in_flight"] == 150
    finally:
        for s in stores:
            await s.aclose()


_WORKER = textwrap.dedent("""
    import asyncio, json, sys
    import redis.asyncio as aredis
    from tenantlm.admission import AdmissionRequest, Limits, Subject
    from tenantlm.admission.redis_store import RedisLimitStore

    url, worker, n, now = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    subs = (Subject(level="key", id="key_1", limits=Limits(rpm=10_000)),
            Subject(level="tenant", id="ten_aaaa", limits=Limits(tpm=1050, monthly_token_budget=10**6)))

    async def main():
        control = aredis.Redis.from_url(url)
        store = RedisLimitStore.from_url(url)
        await control.rpush("ready", worker)
        await control.blpop(["go"], timeout=30)
        reqs = [AdmissionRequest(tenant_id="ten_aaaa", request_id=f"{worker}-{i}", subjects=subs, tokens=7,
                                 cost_usd=0.0) for i in range(n)]
        decisions = await asyncio.gather(*(store.admit(r, now=now) for r in reqs))
        print(json.dumps(sum(d.admitted for d in decisions)))
        await store.aclose()
        await control.aclose()

    asyncio.run(main())
""")


@pytest.mark.redis
async def test_several_os_processes_never_exceed_a_limit(redis_clean: RedisServer) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, redis_clean.url_for(0), f"w{i}", "100", repr(NOON)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(4)]  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while redis_clean.command("LLEN", "ready") != b":4":
            assert time.monotonic() < deadline, "workers did not start"
            await asyncio.sleep(0.05)
        for _ in procs:
            redis_clean.command("RPUSH", "go", "1")
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), [err.decode()[-500:] for _, err in outputs]
    assert sum(json.loads(out) for out, _ in outputs) == 150  # tpm 1050 / 7 tokens
    store = RedisLimitStore.from_url(redis_clean.url_for(0))
    try:
        subs = subjects(key=Limits(rpm=10_000), tenant=Limits(tpm=1050))
        assert (await usage(store, subs, 0))["requests"] == 150
        assert (await usage(store, subs, 2))["monthly_tokens"] == 1050
    finally:
        await store.aclose()


# ------------------------------------------------------------------------------------------- memory == redis
@pytest.mark.redis
async def test_redis_agrees_with_memory_on_a_random_workload(redis_clean: RedisServer) -> None:
    """The same random run (admissions, streaming and final settles, releases; time jumping ahead, idling past the
    window and stepping back a little as a lagging replica would) gives identical answers on both stores."""
    rng = random.Random(7)
    memory, redis_store = MemoryLimitStore(), RedisLimitStore.from_url(redis_clean.url_for(0))
    tenant = Subject(level="tenant", id=T, limits=Limits(rpm=15, tpm=900, monthly_token_budget=6000,
                                                         monthly_cost_budget_usd=5.0))  # fmt: skip
    keys = [Subject(level="key", id=f"key_{i}", limits=Limits(rpm=8, tpm=400, max_concurrency=3)) for i in range(3)]
    users = [Subject(level="end_user", id=f"{T}/u{i}", limits=Limits(daily_token_budget=3000)) for i in range(2)]
    clock, open_tickets = NOON, list[Ticket]()
    try:
        for step in range(700):
            clock += rng.choice([0.0, 0.3, 1.0, 2.5]) + (500.0 if step == 400 else 0.0)
            now = clock - rng.choice([0.0, 0.0, 1.5, 4.0])  # some calls come from a replica lagging behind
            if open_tickets and rng.random() < 0.45:
                ticket = open_tickets.pop(rng.randrange(len(open_tickets)))
                tokens, final = rng.randint(0, 120), rng.random() < 0.7
                if rng.random() < 0.2:
                    await memory.release(ticket, now=now)
                    await redis_store.release(ticket, now=now)
                    continue
                got = [await s.settle(ticket, tokens=tokens, cost_usd=tokens / 1000, final=final, now=now)
                       for s in (memory, redis_store)]  # fmt: skip
                assert got[0] == got[1], step
                if not final:
                    open_tickets.append(ticket)
                continue
            subs = (rng.choice(keys), rng.choice(users), tenant)
            req = request(f"r{step}", subs, tokens=rng.randint(10, 80), cost=rng.randint(1, 5) / 100)
            a, b = await memory.admit(req, now=now), await redis_store.admit(req, now=now)
            assert (a.admitted, a.code, a.level, a.dimension, a.message, a.headers()) == \
                   (b.admitted, b.code, b.level, b.dimension, b.message, b.headers()), step  # fmt: skip
            assert a.retry_after_s == pytest.approx(b.retry_after_s), step
            if a.ticket is not None:
                open_tickets.append(a.ticket)
        for sub in (tenant, *keys, *users):
            assert await memory.snapshot(tenant_id=T, subject=sub, now=now) == \
                   await redis_store.snapshot(tenant_id=T, subject=sub, now=now)  # fmt: skip
    finally:
        await redis_store.aclose()
