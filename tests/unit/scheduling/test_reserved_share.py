"""Reserved shares of a model's capacity (a silo tenant's option): the reserved slots stay free for their tenant
while a flood fills the rest, its requests start at once within the reservation (ahead of a queue), beyond it they
queue like anyone's, removing the share gives the slots back, and a scheduler without shares behaves as before."""

from __future__ import annotations

import pytest
from scheduling_fakes import FakeUpstream, settle

from tenantlm.scheduling import FairScheduler

SHARE = 0.5  # of capacity 4: two slots


def granted(calls: list) -> int:  # type: ignore[type-arg]
    """How many were granted a slot (finished ones included)."""
    return sum(1 for c in calls if c.grant is not None)


def running(up: FakeUpstream, tenant: str) -> int:
    return sum(1 for c in up.running if c.tenant == tenant)


async def test_a_flood_leaves_the_reserved_slots_free_and_the_tenant_starts_at_once() -> None:
    s = FairScheduler(model="m", capacity=4)
    up = FakeUpstream(s)
    first = up.send("silo", reserved_share=SHARE)  # makes the share known
    await settle()
    await up.finish(first)
    flood = [up.send("flood") for _ in range(10)]
    await settle()
    assert granted(flood) == 2 and s.stats().queued == 8  # two slots held for the silo tenant
    mine = [up.send("silo", reserved_share=SHARE) for _ in range(3)]
    await settle()
    assert granted(mine) == 2  # within its reservation: at once, ahead of the 8 waiting
    assert mine[2].grant is None  # beyond it: queued with everyone else
    await up.finish(flood[0])  # a shared slot frees: VTC order, and the silo tenant has used more (3 vs 2 requests)
    assert running(up, "flood") == 2 and mine[2].grant is None
    await up.finish(mine[0])  # a reserved slot frees: the silo tenant's waiting request takes it, not the flood
    assert mine[2].grant is not None and running(up, "silo") == 2 and running(up, "flood") == 2


async def test_removing_the_share_gives_the_slots_back() -> None:
    s = FairScheduler(model="m", capacity=4)
    up = FakeUpstream(s)
    await up.finish(up.send("silo", reserved_share=SHARE))
    flood = [up.send("flood") for _ in range(6)]
    await settle()
    assert granted(flood) == 2
    await up.finish(up.send("silo"))  # no share any more
    await settle()
    assert granted(flood) == 4


async def test_without_shares_the_whole_capacity_is_shared() -> None:
    s = FairScheduler(model="m", capacity=4)
    up = FakeUpstream(s)
    flood = [up.send("flood") for _ in range(6)]
    await settle()
    assert granted(flood) == 4


async def test_a_share_is_checked() -> None:
    s = FairScheduler(model="m", capacity=4)
    with pytest.raises(ValueError):
        s.slot(tenant_id="t", weight=1.0, priority=0, input_tokens=1, max_wait_s=1.0, reserved_share=1.0)
