"""The conversation store on SQLite and Postgres: items numbered in arrival order even when appends race, paging in
both orders, a summary that only moves forward, the queries of the sweeps and of end-user erasure, and every read
scoped to its tenant."""

from __future__ import annotations

import asyncio
import time

from tenantlm.conversations.store import ConversationRow, ConversationStore, NewItem
from tenantlm.storage.sql.engine import Database
from tenantlm.tenancy.models import Tenant, TenantStatus
from tenantlm.tenancy.store import TenancyStore


async def _tenants(db: Database, *ids: str) -> None:
    for tid in ids:
        await TenancyStore(db).insert_tenant(tenant_id=tid, tenant=Tenant(
            id=tid, name=tid, status=TenantStatus.ACTIVE, plan="free", region="local", metadata={}, settings={},
            allowed_models=None, model_aliases={}, created_at=time.time(), updated_at=time.time()))


def _row(tid: str, cid: str, *, end_user: str | None = None, at: float = 100.0) -> ConversationRow:
    return ConversationRow(tenant_id=tid, id=cid, end_user=end_user, created_at=at, last_active_at=at,
                           next_position=0, sealed_metadata=b"m")


async def test_racing_appends_get_distinct_positions_in_one_sequence(database: Database) -> None:
    store = ConversationStore(database)
    await _tenants(database, "ten_a")
    await store.insert(tenant_id="ten_a", row=_row("ten_a", "conv_1"), items=[NewItem("msg_first", b"0")])
    await asyncio.gather(*(store.append(tenant_id="ten_a", conversation_id="conv_1",
                                        items=[NewItem(f"msg_{n}_a", b"a"), NewItem(f"msg_{n}_b", b"b")], now=200.0)
                           for n in range(8)))
    rows = [r async for page in store.all_items(tenant_id="ten_a", conversation_id="conv_1") for r in page]
    assert [r.position for r in rows] == list(range(17)) and rows[0].id == "msg_first"
    for n in range(8):  # each append's items are next to each other
        a, b = (next(r.position for r in rows if r.id == f"msg_{n}_{s}") for s in "ab")
        assert b == a + 1
    got = await store.get(tenant_id="ten_a", conversation_id="conv_1")
    assert got is not None and got.next_position == 17 and got.last_active_at == 200.0
    assert not await store.append(tenant_id="ten_a", conversation_id="conv_missing",
                                  items=[NewItem("msg_x", b"x")], now=1.0)


async def test_paging_summary_sweeps_and_tenant_scope(database: Database) -> None:
    store = ConversationStore(database)
    await _tenants(database, "ten_a", "ten_b")
    await store.insert(tenant_id="ten_a", row=_row("ten_a", "conv_old", end_user="alice", at=10.0),
                       items=[NewItem(f"msg_{n}", b"i") for n in range(5)])
    await store.insert(tenant_id="ten_a", row=_row("ten_a", "conv_new", end_user="alice", at=1000.0), items=[])
    await store.insert(tenant_id="ten_b", row=_row("ten_b", "conv_b", end_user="alice", at=10.0), items=[])
    desc = await store.list_items(tenant_id="ten_a", conversation_id="conv_old", order="desc", after_position=3,
                                  limit=10)
    asc = await store.list_items(tenant_id="ten_a", conversation_id="conv_old", order="asc", after_position=1,
                                 limit=2)
    assert [r.id for r in desc] == ["msg_2", "msg_1", "msg_0"] and [r.id for r in asc] == ["msg_2", "msg_3"]

    await store.set_summary(tenant_id="ten_a", conversation_id="conv_old", sealed_summary=b"s2", through=2)
    await store.set_summary(tenant_id="ten_a", conversation_id="conv_old", sealed_summary=b"s1", through=1)
    got = await store.get(tenant_id="ten_a", conversation_id="conv_old")
    assert got is not None and (got.sealed_summary, got.summary_through) == (b"s2", 2)

    assert await store.expired(tenant_id="ten_a", created_before=500.0, idle_before=None) == ["conv_old"]
    assert await store.expired(tenant_id="ten_a", created_before=None, idle_before=5.0) == []
    assert await store.expired(tenant_id="ten_a", created_before=None, idle_before=None) == []
    assert await store.ids_of_end_user(tenant_id="ten_a", end_user="alice") == ["conv_old", "conv_new"]

    assert await store.get(tenant_id="ten_b", conversation_id="conv_old") is None
    assert await store.get_item(tenant_id="ten_b", conversation_id="conv_old", item_id="msg_0") is None
    assert not await store.delete(tenant_id="ten_b", conversation_id="conv_old")
    assert await store.delete(tenant_id="ten_a", conversation_id="conv_old")
    assert await store.list_items(tenant_id="ten_a", conversation_id="conv_old", order="asc", after_position=None,
                                  limit=10) == []
    await store.forget_tenant(tenant_id="ten_a")
    assert await store.ids_of_end_user(tenant_id="ten_a", end_user="alice") == []
    assert await store.ids_of_end_user(tenant_id="ten_b", end_user="alice") == ["conv_b"]
