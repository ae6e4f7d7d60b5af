"""Reading all of one tenant's rows of a table a page at a time (key rotation, export, erasure walk them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from tenantlm.storage.sql.engine import Database

T = TypeVar("T")


async def tenant_pages(db: Database, table: sa.Table, *, tenant_id: str, convert: Callable[[Any], T], page: int,
                       keys: tuple[str, ...] = ("id",)) -> AsyncIterator[list[T]]:
    """Every row of the tenant in ``table``, in ``keys`` order, ``page`` rows per transaction (keyset pagination:
    each page starts after the last key of the one before), each row passed through ``convert``."""
    columns = [table.c[k] for k in keys]
    after: tuple[Any, ...] | None = None
    while True:
        q = sa.select(table).where(table.c.tenant_id == tenant_id)
        if after is not None:
            q = q.where(columns[0] > after[0] if len(columns) == 1 else sa.tuple_(*columns) > after)
        async with db.tenant_tx(tenant_id=tenant_id) as conn:
            rows = list(await conn.execute(q.order_by(*columns).limit(page)))
        if rows:
            yield [convert(r) for r in rows]
        if len(rows) < page:
            return
        after = tuple(rows[-1]._mapping[k] for k in keys)
