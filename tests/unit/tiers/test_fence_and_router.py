"""The per-tenant fence a move closes for its switch, and the router that sends a tenant's transactions to its silo:
held transactions wait and then run (none fails), closing waits for those in flight, a transaction nested in one
of the same tenant passes, a drain that never ends gives up and opens again; other tenants never wait."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import migrate
from tenantlm.storage.sql.router import FenceTimeout, TenantFence, TenantRouter
from tenantlm.storage.sql.tables import request_log, tenants

A, B = "ten_aaaa", "ten_bbbb"


async def test_a_closed_fence_holds_new_passages_until_it_opens() -> None:
    fence = TenantFence()
    order: list[str] = []
    opened = asyncio.Event()

    async def switch() -> None:
        async with fence.closed(A, drain_timeout_s=5):
            order.append("closed")
            await opened.wait()
            order.append("switched")

    async def request(tenant_id: str) -> None:
        async with fence.passage(tenant_id):
            order.append(f"ran {tenant_id}")

    mover = asyncio.create_task(switch())
    while not fence.is_closed(A):
        await asyncio.sleep(0)
    held = asyncio.create_task(request(A))
    await request(B)  # another tenant never waits
    for _ in range(20):
        await asyncio.sleep(0)
    assert order == ["closed", f"ran {B}"] and not held.done()
    opened.set()
    await asyncio.gather(mover, held)
    assert order == ["closed", f"ran {B}", "switched", f"ran {A}"]
    assert not fence.is_closed(A) and fence.in_flight(A) == 0


async def test_closing_waits_for_the_passages_in_flight() -> None:
    fence = TenantFence()
    release = asyncio.Event()
    order: list[str] = []

    async def in_flight() -> None:
        async with fence.passage(A):
            order.append("started")
            await release.wait()
            order.append("finished")

    async def switch() -> None:
        async with fence.closed(A, drain_timeout_s=5):
            order.append("switched")

    request = asyncio.create_task(in_flight())
    while fence.in_flight(A) == 0:
        await asyncio.sleep(0)
    mover = asyncio.create_task(switch())
    for _ in range(20):
        await asyncio.sleep(0)
    assert order == ["started"]
    release.set()
    await asyncio.gather(request, mover)
    assert order == ["started", "finished", "switched"]


async def test_a_passage_nested_in_one_of_the_same_tenant_does_not_wait() -> None:
    fence = TenantFence()
    closing = asyncio.Event()

    async def request() -> str:
        async with fence.passage(A):
            await closing.wait()
            while not fence.is_closed(A):
                await asyncio.sleep(0)
            async with fence.passage(A):  # would deadlock if it waited for the fence that waits for us
                return "done"

    task = asyncio.create_task(request())
    while fence.in_flight(A) == 0:
        await asyncio.sleep(0)
    closing.set()
    async with fence.closed(A, drain_timeout_s=5):
        assert task.done() and task.result() == "done"


async def test_a_drain_that_never_ends_gives_up_and_opens_the_fence() -> None:
    fence = TenantFence()
    stuck = asyncio.Event()

    async def forever() -> None:
        async with fence.passage(A):
            await stuck.wait()

    task = asyncio.create_task(forever())
    while fence.in_flight(A) == 0:
        await asyncio.sleep(0)
    with pytest.raises(FenceTimeout):
        async with fence.closed(A, drain_timeout_s=0.05):
            pytest.fail("must not switch while a transaction is in flight")
    assert not fence.is_closed(A)
    async with fence.passage(A):  # new transactions pass again
        pass
    stuck.set()
    await task


async def _db(path: Path) -> Database:
    url = f"sqlite+aiosqlite:///{path}"
    await migrate(url=url, migrate_url=None)
    db = Database.from_url(url)
    async with db.platform_tx() as conn:
        for tid in (A, B):
            await conn.execute(tenants.insert().values(
                id=tid, name=tid, status="active", plan="free", region="local", metadata={}, settings={},
                allowed_models=None, model_aliases={}, created_at=0.0, updated_at=0.0, billing={}))
    return db


def _entry(tid: str, entry_id: str) -> dict[str, object]:
    return {"tenant_id": tid, "id": entry_id, "created_at": 1.0, "expires_at": 2.0, "key_id": None, "model": "m",
            "endpoint": "chat", "status": 200, "sealed": b"x"}


async def _ids(db: Database, tid: str) -> list[str]:
    async with db.tenant_tx(tenant_id=tid) as conn:
        return sorted((await conn.execute(sa.select(request_log.c.id).where(request_log.c.tenant_id == tid))
                       ).scalars())


async def test_the_router_sends_a_silo_tenant_to_its_database_and_others_to_the_pool(tmp_path: Path) -> None:
    pool_db, silo = await _db(tmp_path / "pool.db"), await _db(tmp_path / "silo.db")
    router = TenantRouter(pool_db.engine)
    try:
        router.attach(A, silo)
        for tid in (A, B):
            async with router.tenant_tx(tenant_id=tid) as conn:
                await conn.execute(request_log.insert().values(_entry(tid, f"e-{tid}")))
        assert await _ids(silo, A) == [f"e-{A}"] and await _ids(pool_db, A) == []
        assert await _ids(pool_db, B) == [f"e-{B}"] and await _ids(silo, B) == []
        assert await _ids(router, A) == [f"e-{A}"]
        async with router.tenant_snapshot(tenant_id=A) as conn:  # snapshots are routed too
            assert list((await conn.execute(sa.select(request_log.c.id))).scalars()) == [f"e-{A}"]
        seen = []
        async for conn in router.platform_each():  # the sweeps see every database
            seen += list((await conn.execute(sa.select(request_log.c.id))).scalars())
        assert sorted(seen) == [f"e-{A}", f"e-{B}"]
        assert router.detach(A) is silo
        assert await _ids(router, A) == []
    finally:
        await silo.dispose()
        await router.dispose()
