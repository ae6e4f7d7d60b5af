"""Stored responses over SQL. Every method takes ``tenant_id`` and runs in that tenant's transaction (row-level
security on Postgres). The rows hold sealed bytes only: the store never sees a response's text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.paging import tenant_pages
from tenantlm.storage.sql.tables import responses

PAGE = 200


@dataclass(frozen=True, slots=True)
class ResponseRow:
    tenant_id: str
    id: str
    previous_response_id: str | None
    created_at: float
    sealed_input: bytes  # this response's own new input items (sealed JSON)
    sealed_output: bytes  # the response object without its input (sealed JSON)
    end_user: str | None = None  # the end user the request named
    conversation_id: str | None = None  # the conversation it was made in (erased with it)


def _row(r: Any) -> ResponseRow:
    return ResponseRow(tenant_id=r.tenant_id, id=r.id, previous_response_id=r.previous_response_id,
                       created_at=r.created_at, sealed_input=bytes(r.sealed_input),
                       sealed_output=bytes(r.sealed_output), end_user=r.end_user,
                       conversation_id=r.conversation_id)


class ResponseStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, *, tenant_id: str, row: ResponseRow) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(responses.insert().values(
                tenant_id=tenant_id, id=row.id, previous_response_id=row.previous_response_id,
                created_at=row.created_at, sealed_input=row.sealed_input, sealed_output=row.sealed_output,
                end_user=row.end_user, conversation_id=row.conversation_id))

    async def get(self, *, tenant_id: str, response_id: str) -> ResponseRow | None:
        q = sa.select(responses).where(responses.c.tenant_id == tenant_id, responses.c.id == response_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            found = (await conn.execute(q)).first()
        return None if found is None else _row(found)

    async def delete(self, *, tenant_id: str, response_id: str) -> bool:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            res = await conn.execute(responses.delete().where(responses.c.tenant_id == tenant_id,
                                                              responses.c.id == response_id))
        return bool(res.rowcount)

    async def conversation_ids(self, *, tenant_id: str, conversation_id: str) -> list[str]:
        """The ids of every response made in the conversation."""
        q = sa.select(responses.c.id).where(responses.c.tenant_id == tenant_id,
                                            responses.c.conversation_id == conversation_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return list((await conn.execute(q)).scalars())

    async def delete_conversation(self, *, tenant_id: str, conversation_id: str) -> int:
        """Every response made in the conversation."""
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            res = await conn.execute(responses.delete().where(responses.c.tenant_id == tenant_id,
                                                              responses.c.conversation_id == conversation_id))
        return int(res.rowcount or 0)

    async def replace_sealed(self, *, tenant_id: str, response_id: str, sealed_input: bytes,
                             sealed_output: bytes) -> None:
        """Store a row re-sealed under a newer data key."""
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(responses.update().where(responses.c.tenant_id == tenant_id,
                                                        responses.c.id == response_id)
                               .values(sealed_input=sealed_input, sealed_output=sealed_output))

    def pages(self, *, tenant_id: str) -> AsyncIterator[list[ResponseRow]]:
        """Every row of the tenant, a page per transaction, in id order."""
        return tenant_pages(self.db, responses, tenant_id=tenant_id, convert=_row, page=PAGE)

    async def stored_bytes(self, *, tenant_id: str) -> int:
        """What the tenant's responses take in sealed bytes (a measure, for operators and tests)."""
        c = responses.c
        q = sa.select(sa.func.coalesce(sa.func.sum(sa.func.length(c.sealed_input) + sa.func.length(c.sealed_output)),
                                       0)).where(c.tenant_id == tenant_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return int((await conn.execute(q)).scalar_one())

    async def end_user_rows(self, *, tenant_id: str, end_user: str) -> list[ResponseRow]:
        """Every stored response of one end user of the tenant, oldest first."""
        q = sa.select(responses).where(responses.c.tenant_id == tenant_id, responses.c.end_user == end_user) \
            .order_by(responses.c.created_at, responses.c.id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_row(r) for r in await conn.execute(q)]

    async def delete_end_user(self, *, tenant_id: str, end_user: str) -> int:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            res = await conn.execute(responses.delete().where(responses.c.tenant_id == tenant_id,
                                                              responses.c.end_user == end_user))
        return int(res.rowcount or 0)

    async def forget_tenant(self, *, tenant_id: str) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(responses.delete().where(responses.c.tenant_id == tenant_id))
