"""The placement lock that coordinates moves across replicas (Postgres): two routers on one database stand for two
replicas. A mover's exclusive lock waits for the transactions that hold the tenant's lock on either router, gives up
with FenceTimeout when one does not finish in time, and makes new transactions wait; once it is released they read
the tenant's placement as the mover left it (not as it was when they started waiting). Another tenant never waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services import PostgresDatabase
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import migrate
from tenantlm.storage.sql.router import FenceTimeout, TenantRouter
from tenantlm.storage.sql.tables import tenants

A, B = "ten_lock_a", "ten_lock_b"


class Resolver:
    """Records the placements the router read, and routes every tenant to the home pool."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def resolve(self, tenant_id: str, tier: str, region: str | None) -> Database | None:
        self.seen.append((tenant_id, tier))
        return None


@pytest.fixture
async def routers(pg_database: PostgresDatabase) -> AsyncIterator[tuple[TenantRouter, TenantRouter, Database]]:
    await migrate(url=pg_database.app_url, migrate_url=pg_database.owner_url)
    owner = Database.from_url(pg_database.app_url)  # the switch's own writes, as the server's role
    for tid in (A, B):
        async with owner.tenant_tx(tenant_id=tid) as conn:
            await conn.execute(tenants.insert().values(id=tid, name=tid, status="active", plan="free", region="local",
                                                       metadata={}, settings={}, model_aliases={}, created_at=0.0,
                                                       updated_at=0.0))
    first, second = (TenantRouter(Database.from_url(pg_database.app_url).engine) for _ in range(2))
    for router in (first, second):
        router.coordinate(Resolver())
    try:
        yield first, second, owner
    finally:
        for db in (first, second, owner):
            await db.dispose()


def _seen(router: TenantRouter) -> list[tuple[str, str]]:
    assert isinstance(router.resolver, Resolver)
    return router.resolver.seen


async def test_the_exclusive_lock_drains_holds_and_hands_over_the_new_placement(
        routers: tuple[TenantRouter, TenantRouter, Database]) -> None:
    mover, replica, owner = routers
    release = asyncio.Event()

    async def long_transaction() -> None:
        async with replica.tenant_tx(tenant_id=A):
            await release.wait()

    holder = asyncio.create_task(long_transaction())
    await asyncio.sleep(0.2)
    with pytest.raises(FenceTimeout):  # the other replica's transaction holds the tenant's lock
        async with mover.exclusive(A, timeout_s=0.3):
            pass
    release.set()
    await holder

    async with mover.exclusive(A, timeout_s=5):
        waiting = asyncio.create_task(_read_tier(replica))
        other = asyncio.create_task(_read_tier(replica, B))
        assert await asyncio.wait_for(other, 5) == "pool"  # another tenant does not wait
        await asyncio.sleep(0.3)
        assert not waiting.done()  # the tenant's new transaction waits for the switch
        async with owner.tenant_tx(tenant_id=A) as conn:  # the switch records the new placement
            await conn.execute(tenants.update().where(tenants.c.id == A).values(tier="silo"))
    assert await asyncio.wait_for(waiting, 5) == "silo"
    assert (A, "silo") in _seen(replica)  # resolved as the mover left it, not as it was when it began to wait


async def _read_tier(router: TenantRouter, tenant_id: str = A) -> str:
    async with router.tenant_tx(tenant_id=tenant_id):
        seen = _seen(router)
        return [tier for tid, tier in seen if tid == tenant_id][-1]


async def test_a_nested_transaction_does_not_queue_behind_a_waiting_mover(
        routers: tuple[TenantRouter, TenantRouter, Database]) -> None:
    mover, replica, _ = routers
    inner_done = asyncio.Event()

    async def outer_then_inner() -> None:
        async with replica.tenant_tx(tenant_id=A):
            await asyncio.sleep(0.3)  # the mover asks for the exclusive lock meanwhile
            async with replica.tenant_tx(tenant_id=A):  # reuses the lock the outer one holds
                inner_done.set()

    task = asyncio.create_task(outer_then_inner())
    await asyncio.sleep(0.1)
    async with mover.exclusive(A, timeout_s=10):
        assert inner_done.is_set()  # granted only after the outer transaction (and its inner one) finished
    await task
    assert len([s for s in _seen(replica) if s[0] == A]) == 1  # the inner transaction read no placement of its own
