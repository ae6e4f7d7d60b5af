"""Conversations and their items over SQL. Every method takes ``tenant_id`` and runs in that tenant's transaction
(row-level security on Postgres). Rows hold sealed bytes only (metadata, items, summary): the store never sees a
conversation's text. The end user a conversation belongs to is kept in the clear, as the ``end_users`` table keeps it,
so that one end user's conversations can be found and erased.

Items are numbered in the order the conversation received them: appending takes positions from the conversation's
``next_position`` counter in the same transaction (a row lock on Postgres), so concurrent appends never collide.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.paging import tenant_pages
from tenantlm.storage.sql.tables import conversation_items as items_t
from tenantlm.storage.sql.tables import conversations as conv_t

PAGE = 200


@dataclass(frozen=True, slots=True)
class ConversationRow:
    tenant_id: str
    id: str
    end_user: str | None
    created_at: float
    last_active_at: float
    next_position: int
    sealed_metadata: bytes
    sealed_summary: bytes | None = None
    summary_through: int = -1  # the summary covers the items at positions up to this one


@dataclass(frozen=True, slots=True)
class ItemRow:
    id: str
    conversation_id: str
    position: int
    created_at: float
    sealed_item: bytes


@dataclass(frozen=True, slots=True)
class NewItem:
    id: str
    sealed_item: bytes


def _conv(tenant_id: str, r: Any) -> ConversationRow:
    return ConversationRow(tenant_id=tenant_id, id=r.id, end_user=r.end_user, created_at=r.created_at,
                           last_active_at=r.last_active_at, next_position=r.next_position,
                           sealed_metadata=bytes(r.sealed_metadata),
                           sealed_summary=None if r.sealed_summary is None else bytes(r.sealed_summary),
                           summary_through=r.summary_through)


def _item(r: Any) -> ItemRow:
    return ItemRow(id=r.id, conversation_id=r.conversation_id, position=r.position, created_at=r.created_at,
                   sealed_item=bytes(r.sealed_item))


def _in_conversation(tenant_id: str, conversation_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(items_t.c.tenant_id == tenant_id, items_t.c.conversation_id == conversation_id)


class ConversationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- conversations ----------------------------------------------------------------------------------------
    async def insert(self, *, tenant_id: str, row: ConversationRow, items: Sequence[NewItem]) -> None:
        """A new conversation with its first items (positions 0..n-1), in one transaction."""
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(conv_t.insert().values(
                tenant_id=tenant_id, id=row.id, end_user=row.end_user, created_at=row.created_at,
                last_active_at=row.last_active_at, next_position=len(items), sealed_metadata=row.sealed_metadata,
                sealed_summary=None, summary_through=-1))
            if items:
                await conn.execute(items_t.insert(), [
                    {"tenant_id": tenant_id, "id": item.id, "conversation_id": row.id, "position": n,
                     "created_at": row.created_at, "sealed_item": item.sealed_item} for n, item in enumerate(items)])

    async def get(self, *, tenant_id: str, conversation_id: str) -> ConversationRow | None:
        q = sa.select(conv_t).where(conv_t.c.tenant_id == tenant_id, conv_t.c.id == conversation_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            found = (await conn.execute(q)).first()
        return None if found is None else _conv(tenant_id, found)

    async def set_metadata(self, *, tenant_id: str, conversation_id: str, sealed_metadata: bytes) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(conv_t.update().where(conv_t.c.tenant_id == tenant_id, conv_t.c.id == conversation_id)
                               .values(sealed_metadata=sealed_metadata))

    async def set_summary(self, *, tenant_id: str, conversation_id: str, sealed_summary: bytes,
                          through: int) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(conv_t.update().where(conv_t.c.tenant_id == tenant_id, conv_t.c.id == conversation_id,
                                                     conv_t.c.summary_through < through)
                               .values(sealed_summary=sealed_summary, summary_through=through))

    async def delete(self, *, tenant_id: str, conversation_id: str) -> bool:
        """The conversation and all its items."""
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(items_t.delete().where(_in_conversation(tenant_id, conversation_id)))
            res = await conn.execute(conv_t.delete().where(conv_t.c.tenant_id == tenant_id,
                                                           conv_t.c.id == conversation_id))
        return bool(res.rowcount)

    async def ids_of_end_user(self, *, tenant_id: str, end_user: str) -> list[str]:
        q = sa.select(conv_t.c.id).where(conv_t.c.tenant_id == tenant_id, conv_t.c.end_user == end_user) \
            .order_by(conv_t.c.created_at, conv_t.c.id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [r.id for r in await conn.execute(q)]

    async def expired(self, *, tenant_id: str, created_before: float | None, idle_before: float | None
                      ) -> list[str]:
        """Conversations created before ``created_before`` or last active before ``idle_before``."""
        conditions = []
        if created_before is not None:
            conditions.append(conv_t.c.created_at < created_before)
        if idle_before is not None:
            conditions.append(conv_t.c.last_active_at < idle_before)
        if not conditions:
            return []
        q = sa.select(conv_t.c.id).where(conv_t.c.tenant_id == tenant_id, sa.or_(*conditions)).limit(PAGE)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [r.id for r in await conn.execute(q)]

    # --- items ------------------------------------------------------------------------------------------------
    async def append(self, *, tenant_id: str, conversation_id: str, items: Sequence[NewItem], now: float) -> bool:
        """Add items after the conversation's last ones; False when the conversation is gone."""
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            bumped = await conn.execute(
                conv_t.update().where(conv_t.c.tenant_id == tenant_id, conv_t.c.id == conversation_id)
                .values(next_position=conv_t.c.next_position + len(items), last_active_at=now)
                .returning(conv_t.c.next_position))
            end = bumped.scalar_one_or_none()
            if end is None:
                return False
            first = end - len(items)
            if items:
                await conn.execute(items_t.insert(), [
                    {"tenant_id": tenant_id, "id": item.id, "conversation_id": conversation_id,
                     "position": first + n, "created_at": now, "sealed_item": item.sealed_item}
                    for n, item in enumerate(items)])
        return True

    async def get_item(self, *, tenant_id: str, conversation_id: str, item_id: str) -> ItemRow | None:
        q = sa.select(items_t).where(_in_conversation(tenant_id, conversation_id), items_t.c.id == item_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            found = (await conn.execute(q)).first()
        return None if found is None else _item(found)

    async def delete_item(self, *, tenant_id: str, conversation_id: str, item_id: str) -> bool:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            res = await conn.execute(items_t.delete().where(_in_conversation(tenant_id, conversation_id),
                                                            items_t.c.id == item_id))
        return bool(res.rowcount)

    async def list_items(self, *, tenant_id: str, conversation_id: str, order: Literal["asc", "desc"],
                         after_position: int | None, limit: int) -> list[ItemRow]:
        """Up to ``limit`` items in ``order``, starting after the item at ``after_position`` when given."""
        pos = items_t.c.position
        q = sa.select(items_t).where(_in_conversation(tenant_id, conversation_id))
        if after_position is not None:
            q = q.where(pos > after_position if order == "asc" else pos < after_position)
        q = q.order_by(pos.asc() if order == "asc" else pos.desc()).limit(limit)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_item(r) for r in await conn.execute(q)]

    async def all_items(self, *, tenant_id: str, conversation_id: str, after: int = -1
                        ) -> AsyncIterator[list[ItemRow]]:
        """Every item of the conversation (after position ``after``), oldest first, a page per transaction."""
        while True:
            page = await self.list_items(tenant_id=tenant_id, conversation_id=conversation_id, order="asc",
                                         after_position=after, limit=PAGE)
            if page:
                yield page
            if len(page) < PAGE:
                return
            after = page[-1].position

    # --- key rotation, tenant erasure -------------------------------------------------------------------------
    def conversation_pages(self, *, tenant_id: str) -> AsyncIterator[list[ConversationRow]]:
        return tenant_pages(self.db, conv_t, tenant_id=tenant_id, convert=lambda r: _conv(tenant_id, r), page=PAGE)

    def item_pages(self, *, tenant_id: str) -> AsyncIterator[list[ItemRow]]:
        return tenant_pages(self.db, items_t, tenant_id=tenant_id, convert=_item, page=PAGE)

    async def replace_conversation_sealed(self, *, tenant_id: str, conversation_id: str, sealed_metadata: bytes,
                                          sealed_summary: bytes | None) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(conv_t.update().where(conv_t.c.tenant_id == tenant_id, conv_t.c.id == conversation_id)
                               .values(sealed_metadata=sealed_metadata, sealed_summary=sealed_summary))

    async def replace_item_sealed(self, *, tenant_id: str, item_id: str, sealed_item: bytes) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(items_t.update().where(items_t.c.tenant_id == tenant_id, items_t.c.id == item_id)
                               .values(sealed_item=sealed_item))

    async def forget_tenant(self, *, tenant_id: str) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(items_t.delete().where(items_t.c.tenant_id == tenant_id))
            await conn.execute(conv_t.delete().where(conv_t.c.tenant_id == tenant_id))
