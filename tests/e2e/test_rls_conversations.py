"""Row-level security holds for conversations and their items: a store that forgot its tenant filter still sees only
the current tenant's conversations and items, and cannot write a row of another tenant."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from services import PostgresDatabase
from tenantlm.conversations.store import ConversationRow, ConversationStore, NewItem
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import check_app_role, migrate
from tenantlm.storage.sql.tables import conversation_items, conversations
from tenantlm.tenancy.models import Tenant, TenantStatus
from tenantlm.tenancy.store import TenancyStore

TENANTS = ("ten_a", "ten_b")


class UnfilteredConversations(ConversationStore):
    """The bug RLS exists for: every query without ``WHERE tenant_id = ...``."""

    async def everything(self, *, tenant_id: str) -> tuple[set[str], set[str]]:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            owners = set((await conn.execute(sa.select(conversations.c.tenant_id))).scalars())
            item_owners = set((await conn.execute(sa.select(conversation_items.c.tenant_id))).scalars())
        return owners, item_owners

    async def end_user_anywhere(self, *, tenant_id: str, end_user: str) -> list[str]:
        q = sa.select(conversations.c.id).where(conversations.c.end_user == end_user)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return list((await conn.execute(q)).scalars())


def _tenant(tid: str) -> Tenant:
    return Tenant(id=tid, name=tid, status=TenantStatus.ACTIVE, plan="free", region="local", metadata={}, settings={},
                  allowed_models=None, model_aliases={}, created_at=time.time(), updated_at=time.time())


@pytest.fixture
async def app_db(pg_database: PostgresDatabase) -> Database:
    await migrate(url=pg_database.app_url, migrate_url=pg_database.owner_url)
    db = Database.from_url(pg_database.app_url)
    await check_app_role(db.engine)
    store = ConversationStore(db)
    for tid in TENANTS:
        await TenancyStore(db).insert_tenant(tenant_id=tid, tenant=_tenant(tid))
        row = ConversationRow(tenant_id=tid, id=f"conv_{tid}", end_user="alice", created_at=1.0, last_active_at=1.0,
                              next_position=0, sealed_metadata=b"m")
        await store.insert(tenant_id=tid, row=row, items=[NewItem(f"msg_{tid}_{n}", b"i") for n in range(2)])
    return db


async def test_an_unfiltered_conversation_query_sees_only_its_own_tenant(app_db: Database) -> None:
    leaky = UnfilteredConversations(app_db)
    for tid in TENANTS:
        assert await leaky.everything(tenant_id=tid) == ({tid}, {tid})
        assert await leaky.end_user_anywhere(tenant_id=tid, end_user="alice") == [f"conv_{tid}"]
    await app_db.dispose()


async def test_a_foreign_conversation_row_cannot_be_written(app_db: Database) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="row-level security"):
        async with app_db.tenant_tx(tenant_id="ten_a") as conn:
            await conn.execute(conversation_items.insert().values(
                tenant_id="ten_b", id="msg_intruder", conversation_id="conv_ten_b", position=9, created_at=1.0,
                sealed_item=b"x"))
    async with app_db.tenant_tx(tenant_id="ten_a") as conn:
        deleted = await conn.execute(sa.delete(conversation_items))
        assert deleted.rowcount == 2  # its own two only
    assert await ConversationStore(app_db).get(tenant_id="ten_b", conversation_id="conv_ten_b") is not None
    leaky = UnfilteredConversations(app_db)
    assert await leaky.everything(tenant_id="ten_b") == ({"ten_b"}, {"ten_b"})
    await app_db.dispose()
