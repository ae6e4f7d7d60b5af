"""FairScheduler: the fast path, VTC order through real asyncio waits, limits, max wait, cancellation, capacity."""

from __future__ import annotations

import asyncio

import pytest
from scheduling_fakes import FakeUpstream, ManualClock, RecordingObserver, settle

from tenantlm.errors import RateLimited
from tenantlm.scheduling import FairScheduler, QueueFull, QueueTimeout


def make(capacity: int = 1, **kw: object) -> FairScheduler:
    return FairScheduler(model="m", capacity=capacity, **kw)  # type: ignore[arg-type]


def slot(s: FairScheduler, tenant: str = "a", **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {"weight": 1.0, "priority": 0, "input_tokens": 10, "max_wait_s": 60.0} | kw
    return s.slot(tenant_id=tenant, **args)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- fast path
async def test_fast_path_grants_without_yielding_to_the_event_loop(observer: RecordingObserver) -> None:
    s = make(capacity=2, observer=observer)
    other_ran = False

    async def other() -> None:
        nonlocal other_ran
        other_ran = True

    task = asyncio.create_task(other())
    async with slot(s) as grant:
        assert not other_ran  # entering did not suspend: the other task never got a turn
        assert grant.waited_s == 0.0 and s.stats().in_flight == 1
    assert not other_ran
    await task
    assert s.stats().in_flight == 0
    assert observer.waits == [("a", 0.0)] and observer.depths == []  # never queued


async def test_fast_path_charges_the_counter_and_slow_path_takes_over_when_full() -> None:
    s = make(capacity=1)
    up = FakeUpstream(s)
    first = up.send("a", input_tokens=40)
    await settle()
    assert first.grant is not None
    second = up.send("b")
    await settle()
    assert second.grant is None and s.stats().queued == 1
    await up.finish(first, output_tokens=5)
    assert second.grant is not None
    counters = {t.tenant_id: t.counter for t in s.stats().tenants}
    assert counters["a"] == 40 + 2 * 5
    assert counters["b"] == 40 + 10  # joined an empty queue: lifted to a's counter then (40), then charged


# ---------------------------------------------------------------------------------------------------- order
async def test_waiters_are_served_in_vtc_order_not_arrival_order() -> None:
    s = make(capacity=1)
    up = FakeUpstream(s)
    up.send("heavy")
    for _ in range(5):
        up.send("heavy", input_tokens=100)
    await settle()
    up.send("light", input_tokens=100)
    await settle()
    for _ in range(5):
        await up.finish_first(output_tokens=50)
    # light joined at heavy's counter (a tie heavy would win), but heavy's first request was charged its output
    # before the next dispatch, so light, the 7th to arrive, is the 2nd served
    assert up.order == ["heavy", "light", "heavy", "heavy", "heavy", "heavy"]


async def test_weight_two_gets_about_twice_the_charged_tokens_under_saturation() -> None:
    s = make(capacity=2)
    up = FakeUpstream(s)
    weights = {"one": 1.0, "two": 2.0}
    for tenant, w in weights.items():
        for _ in range(20):
            up.send(tenant, weight=w, input_tokens=30)
    await settle()
    served = {"one": 0, "two": 0}
    for _ in range(300):
        call = await up.finish_first(output_tokens=60)
        served[call.tenant] += 30 + 2 * 60
        up.send(call.tenant, weight=weights[call.tenant], input_tokens=30)  # stays backlogged
        await settle()
    assert served["two"] / served["one"] == pytest.approx(2.0, rel=0.05)


async def test_higher_priority_is_served_first() -> None:
    s = make(capacity=1)
    up = FakeUpstream(s)
    up.send("x")
    up.send("low", priority=0)
    up.send("high", priority=3)
    await settle()
    await up.finish_first()
    await up.finish_first()
    assert up.order == ["x", "high", "low"]


# ---------------------------------------------------------------------------------------------------- limits
async def test_tenant_queue_full_is_a_429_with_retry_after(observer: RecordingObserver) -> None:
    s = make(capacity=1, max_queue_per_tenant=2, observer=observer)
    up = FakeUpstream(s)
    calls = [up.send("a") for _ in range(3)]  # one running, two waiting
    await settle()
    with pytest.raises(QueueFull) as info:
        async with slot(s, "a"):
            pass
    err = info.value
    assert isinstance(err, RateLimited) and err.status == 429 and err.code == "rate_limit_exceeded"
    assert err.reason == "tenant_queue_full" and err.retry_after is not None and err.retry_after > 0
    assert {"retry-after", "retry-after-ms"} <= set(err.headers)
    other = up.send("b")  # other tenants still get in
    await settle()
    assert other.error is None and s.stats().queued == 3
    assert observer.refusals == [("a", "tenant_queue_full")]
    for c in [*calls, other]:
        c.done.set()
    await settle(20)


async def test_global_queue_full() -> None:
    s = make(capacity=1, max_queue_total=2)
    up = FakeUpstream(s)
    calls = [up.send(t) for t in ("a", "b", "c")]
    await settle()
    late = up.send("d")
    await settle()
    assert isinstance(late.error, QueueFull) and late.error.reason == "queue_full"
    for c in calls:
        c.done.set()
    await settle(20)


async def test_retry_after_is_estimated_from_mean_service_time_and_position(clock: ManualClock) -> None:
    s = make(capacity=2, max_queue_per_tenant=2, clock=clock)
    up = FakeUpstream(s)
    first = up.send("a")
    await settle()
    clock.advance(4.0)
    await up.finish(first)  # mean service time is now 4 s
    calls = [up.send("a") for _ in range(4)]  # two running, two waiting
    await settle()
    with pytest.raises(QueueFull) as info:
        async with slot(s, "a"):
            pass
    assert info.value.retry_after == pytest.approx(4.0 * (2 + 1) / 2)  # 2 ahead of it, 2 slots
    for c in calls:
        c.done.set()
    await settle(20)


async def test_a_request_that_waits_too_long_is_refused_and_holds_no_slot(observer: RecordingObserver) -> None:
    s = make(capacity=1, observer=observer)
    up = FakeUpstream(s)
    holder = up.send("a")
    await settle()
    with pytest.raises(QueueTimeout) as info:
        async with slot(s, "b", max_wait_s=0.02):
            pass
    assert info.value.status == 429 and info.value.retry_after is not None
    assert s.stats().queued == 0 and s.stats().in_flight == 1
    await up.finish(holder)
    assert s.stats().in_flight == 0
    async with slot(s, "c") as grant:  # the slot is free: the timed-out waiter did not keep it
        assert grant.waited_s == 0.0
    assert observer.refusals == [("b", "queue_timeout")]
    assert observer.depths == [("b", 1), ("b", 0)]


async def test_zero_max_wait_means_do_not_queue() -> None:
    s = make(capacity=1)
    async with slot(s, "a"):
        with pytest.raises(QueueTimeout):
            async with slot(s, "b", max_wait_s=0):
                pass
        assert s.stats().queued == 0


# ---------------------------------------------------------------------------------------------------- cancellation
async def test_cancelled_while_queued_leaves_the_queue(observer: RecordingObserver) -> None:
    s = make(capacity=1, observer=observer)
    up = FakeUpstream(s)
    holder = up.send("a")
    waiter = up.send("b")
    await settle()
    assert s.stats().queued == 1 and waiter.task is not None
    waiter.task.cancel()
    await settle()
    assert waiter.task.cancelled() and s.stats().queued == 0
    await up.finish(holder)
    assert s.stats().in_flight == 0 and up.order == ["a"]
    assert observer.depths[-1] == ("b", 0)


async def test_cancelled_right_after_being_granted_gives_the_slot_back() -> None:
    s = make(capacity=1)
    up = FakeUpstream(s)
    holder = up.send("a")
    waiter = up.send("b")
    await settle()
    holder.done.set()
    await asyncio.sleep(0)  # the holder leaves its slot: b is granted, but b's task has not resumed yet
    assert s.stats().in_flight == 1 and waiter.grant is None and waiter.task is not None
    waiter.task.cancel()
    await settle()
    assert waiter.task.cancelled() and waiter.grant is None
    assert s.stats().in_flight == 0  # released once: not 1 (leaked), not -1 (twice)
    async with slot(s, "c") as grant:
        assert grant.waited_s == 0.0


async def test_a_waiter_cancelled_before_dispatch_sees_it_is_skipped() -> None:
    s = make(capacity=1)
    up = FakeUpstream(s)
    holder = up.send("a")
    cancelled = up.send("b")
    behind = up.send("c")
    await settle()
    assert cancelled.task is not None and holder.grant is not None
    cancelled.task.cancel()  # its future is cancelled now; its task runs its handler only later...
    holder.grant.release()  # ...after this dispatch, which must skip it
    holder.done.set()
    await settle()
    assert up.order == ["a", "c"] and s.stats().in_flight == 1 and s.stats().queued == 0
    await up.finish(behind)
    assert s.stats().in_flight == 0


async def test_cancelled_while_running_releases_the_slot_once() -> None:
    s = make(capacity=1)
    up = FakeUpstream(s)
    call = up.send("a")
    await settle()
    assert call.grant is not None and call.task is not None
    call.task.cancel()
    await settle()
    assert call.grant.released and s.stats().in_flight == 0
    call.grant.release()  # a second release changes nothing
    assert s.stats().in_flight == 0


async def test_a_slot_can_be_entered_only_once() -> None:
    s = make()
    cm = slot(s)
    async with cm:
        pass
    with pytest.raises(RuntimeError):
        async with cm:
            pass


# ---------------------------------------------------------------------------------------------------- capacity
async def test_set_capacity_up_dispatches_waiters_at_once() -> None:
    s = make(capacity=1)
    up = FakeUpstream(s)
    calls = [up.send(t) for t in ("a", "b", "c", "d")]
    await settle()
    assert len(up.running) == 1
    s.set_capacity(3)
    await settle()
    assert len(up.running) == 3 and s.stats().queued == 1
    for c in calls:
        c.done.set()
    await settle(20)


async def test_set_capacity_down_lets_running_requests_finish_and_grants_nothing_until_below() -> None:
    s = make(capacity=3)
    up = FakeUpstream(s)
    calls = [up.send(t) for t in ("a", "b", "c", "d")]
    await settle()
    s.set_capacity(1)
    assert len(up.running) == 3 and s.stats().capacity == 1
    await up.finish(calls[0])
    await up.finish(calls[1])
    assert len(up.running) == 1 and up.order == ["a", "b", "c"]  # d still waits: 1 in flight = capacity
    await up.finish(calls[2])
    assert up.order == ["a", "b", "c", "d"]
    await up.finish(calls[3])
    with pytest.raises(ValueError):
        s.set_capacity(0)


# ---------------------------------------------------------------------------------------------------- clock, stats
async def test_waits_and_service_are_timed_with_the_injected_clock(clock: ManualClock,
                                                                   observer: RecordingObserver) -> None:  # fmt: skip
    s = make(capacity=1, clock=clock, observer=observer)
    up = FakeUpstream(s)
    holder = up.send("a")
    waiter = up.send("b")
    await settle()
    clock.advance(2.5)
    await up.finish(holder)
    assert waiter.grant is not None and waiter.grant.waited_s == 2.5
    assert observer.waits == [("a", 0.0), ("b", 2.5)]
    assert s.stats().mean_service_s == 2.5
    await up.finish(waiter)


async def test_stats_report_each_tenant_and_the_totals() -> None:
    s = make(capacity=1)
    up = FakeUpstream(s)
    calls = [up.send("a", input_tokens=5), up.send("a"), up.send("b", priority=2)]
    await settle()
    st = s.stats()
    assert (st.model, st.capacity, st.in_flight, st.queued) == ("m", 1, 1, 2)
    by = {(t.tenant_id, t.priority): t for t in st.tenants}
    assert (by["a", 0].queued, by["a", 0].in_flight, by["a", 0].counter) == (1, 1, 5.0)
    assert (by["b", 2].queued, by["b", 2].in_flight) == (1, 0)
    for c in calls:
        c.done.set()
    await settle(20)


async def test_arguments_are_validated() -> None:
    with pytest.raises(ValueError):
        make(capacity=0)
    with pytest.raises(ValueError):
        slot(make(), weight=0.0)
    async with slot(make()) as grant:
        with pytest.raises(ValueError):
            grant.charge_output(-1)


# ---------------------------------------------------------------------------------------------------- headroom
async def test_headroom_lets_a_newcomer_start_at_once_next_to_a_backlog(clock: ManualClock) -> None:
    s = make(capacity=4, headroom=1, clock=clock)
    up = FakeUpstream(s)
    heavy = [up.send("heavy") for _ in range(10)]
    await settle()
    # the first three took free slots on the fast path; with 3 in flight heavy is no newcomer: the rest queue
    assert sum(c.grant is not None for c in heavy) == 3 and s.stats().queued == 7
    light = up.send("light")
    await settle()
    assert light.grant is not None and light.grant.waited_s == 0.0  # the held-back slot: no wait for a release
    second = up.send("light")  # no slot free now: it waits, as light's only request waiting
    await settle()
    assert second.grant is None
    await up.finish(heavy[0])  # a slot frees; the backlog may not take it (it would leave no headroom)...
    assert second.grant is not None and heavy[3].grant is None  # ...a newcomer's only waiting request may
    await up.finish(light)
    await up.finish(second)
    assert heavy[3].grant is not None and s.stats().in_flight == 3  # the backlog is back to capacity - headroom
    while up.running:
        await up.finish_first()
    assert all(c.grant is not None for c in heavy) and s.stats().in_flight == 0 and s.stats().queued == 0


async def test_headroom_costs_a_lone_backlog_that_many_slots_and_zero_changes_nothing() -> None:
    for headroom, expected in ((0, 4), (1, 3), (2, 2), (9, 1)):  # at most capacity - 1 held back
        s = make(capacity=4, headroom=headroom)
        up = FakeUpstream(s)
        calls = [up.send("heavy") for _ in range(6)]
        await settle()
        assert sum(c.grant is not None for c in calls) == expected, headroom
        assert s.headroom == headroom
        for c in calls:
            c.done.set()
        await settle(20)
        assert all(c.grant is not None for c in calls) and s.stats().in_flight == 0
    with pytest.raises(ValueError, match="headroom"):
        make(capacity=4, headroom=-1)


async def test_headroom_is_not_a_way_around_higher_priority_waiters() -> None:
    s = make(capacity=2, headroom=1)
    up = FakeUpstream(s)
    up.send("a", priority=1)
    urgent = [up.send("b", priority=1) for _ in range(3)]  # a backlog in the higher class
    await settle()
    low = up.send("c", priority=0)  # nothing of its own waiting, but a higher class is: it queues
    await settle()
    # b's first request was a newcomer (nothing waiting, nothing in flight) and took the headroom slot
    assert low.grant is None and [c.grant is not None for c in urgent] == [True, False, False]
    while up.running:
        await up.finish_first()
    assert low.grant is not None and up.order[-1] == "c"  # served after the higher class emptied
