"""Prompts over SQL. Base prompts belong to the platform (``platform_tx``); every override method takes
``tenant_id`` and runs in that tenant's transaction (row-level security on Postgres). Override rows hold sealed bytes
only: the store never sees a tenant's template text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tenantlm.errors import Conflict
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import (
    prompt_labels,
    prompt_override_labels,
    prompt_overrides,
    prompt_versions,
    prompts,
)


@dataclass(frozen=True, slots=True)
class PromptRow:
    id: str
    name: str
    created_at: float
    latest: int
    labels: dict[str, int]


@dataclass(frozen=True, slots=True)
class VersionRow:
    prompt_id: str
    version: int
    template: Any
    variables: dict[str, Any]
    model: dict[str, Any] | None
    created_at: float


@dataclass(frozen=True, slots=True)
class OverrideRow:
    tenant_id: str
    prompt_id: str
    version: int
    created_at: float
    sealed: bytes


@dataclass(frozen=True, slots=True)
class OverrideHead:
    """A tenant's override of one prompt: its newest version and its labels."""

    prompt_id: str
    latest: int
    labels: dict[str, int]


async def _next(conn: AsyncConnection, column: Any, *where: Any) -> int:
    return int((await conn.execute(sa.select(sa.func.coalesce(sa.func.max(column), 0)).where(*where))).scalar_one()) + 1


async def _set_label(conn: AsyncConnection, table: sa.Table, keys: dict[str, str], label: str, version: int) -> None:
    where = [table.c[k] == v for k, v in keys.items()] + [table.c.label == label]
    done = await conn.execute(table.update().where(*where).values(version=version))
    if not done.rowcount:
        await conn.execute(table.insert().values(**keys, label=label, version=version))


class PromptStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- the platform's prompts -----------------------------------------------------------------------------------
    async def create(self, *, prompt_id: str, name: str, first: VersionRow) -> None:
        async with self.db.platform_tx() as conn:
            await conn.execute(prompts.insert().values(id=prompt_id, name=name, created_at=first.created_at))
            await conn.execute(prompt_versions.insert().values(**_version_values(first)))
            await conn.execute(prompt_labels.insert().values(prompt_id=prompt_id, label="production", version=1))

    async def add_version(self, *, row: VersionRow) -> int:
        """Store ``row`` as the next version (its ``version`` is ignored); returns the number it got."""
        async with self.db.platform_tx() as conn:
            number = await _next(conn, prompt_versions.c.version, prompt_versions.c.prompt_id == row.prompt_id)
            try:
                await conn.execute(prompt_versions.insert().values(**{**_version_values(row), "version": number}))
            except sa.exc.IntegrityError:
                raise Conflict("another version of this prompt was created at the same time; retry") from None
        return number

    async def get(self, *, prompt_id: str) -> PromptRow | None:
        async with self.db.platform_tx() as conn:
            found = (await conn.execute(sa.select(prompts).where(prompts.c.id == prompt_id))).first()
            if found is None:
                return None
            return await _prompt_row(conn, found)

    async def list_prompts(self, *, limit: int, after: str | None) -> list[PromptRow]:
        q = sa.select(prompts).order_by(prompts.c.id).limit(limit)
        if after is not None:
            q = q.where(prompts.c.id > after)
        async with self.db.platform_tx() as conn:
            return [await _prompt_row(conn, r) for r in (await conn.execute(q)).all()]

    async def version(self, *, prompt_id: str, version: int) -> VersionRow | None:
        q = sa.select(prompt_versions).where(prompt_versions.c.prompt_id == prompt_id,
                                             prompt_versions.c.version == version)
        async with self.db.platform_tx() as conn:
            found = (await conn.execute(q)).first()
        return None if found is None else VersionRow(
            prompt_id=found.prompt_id, version=found.version, template=found.template, variables=found.variables,
            model=found.model, created_at=found.created_at)

    async def set_label(self, *, prompt_id: str, label: str, version: int) -> None:
        async with self.db.platform_tx() as conn:
            await _set_label(conn, prompt_labels, {"prompt_id": prompt_id}, label, version)

    async def delete(self, *, prompt_id: str) -> bool:
        """The prompt, its versions and labels, and every tenant's override of it."""
        async with self.db.platform_tx() as conn:
            for table in (prompt_override_labels, prompt_overrides, prompt_labels, prompt_versions):
                await conn.execute(table.delete().where(table.c.prompt_id == prompt_id))
            done = await conn.execute(prompts.delete().where(prompts.c.id == prompt_id))
        return bool(done.rowcount)

    # --- a tenant's overrides -------------------------------------------------------------------------------------
    async def add_override(self, *, tenant_id: str, prompt_id: str, created_at: float,
                           seal: Any) -> int:
        """The next override version; ``seal(version)`` gives its sealed bytes (the record id holds the version).
        The first version also gets the ``production`` label."""
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            c = prompt_overrides.c
            number = await _next(conn, c.version, c.tenant_id == tenant_id, c.prompt_id == prompt_id)
            try:
                await conn.execute(prompt_overrides.insert().values(
                    tenant_id=tenant_id, prompt_id=prompt_id, version=number, created_at=created_at,
                    sealed=await seal(number)))
            except sa.exc.IntegrityError:
                raise Conflict("another version of this override was created at the same time; retry") from None
            if number == 1:
                await _set_label(conn, prompt_override_labels, {"tenant_id": tenant_id, "prompt_id": prompt_id},
                                 "production", 1)
        return number

    async def override_head(self, *, tenant_id: str, prompt_id: str) -> OverrideHead | None:
        heads = await self.override_heads(tenant_id=tenant_id, prompt_ids=[prompt_id])
        return heads[0] if heads else None

    async def override_heads(self, *, tenant_id: str, prompt_ids: Sequence[str] | None = None) -> list[OverrideHead]:
        c, lc = prompt_overrides.c, prompt_override_labels.c
        q = sa.select(c.prompt_id, sa.func.max(c.version).label("latest")).where(c.tenant_id == tenant_id) \
            .group_by(c.prompt_id).order_by(c.prompt_id)
        lq = sa.select(lc.prompt_id, lc.label, lc.version).where(lc.tenant_id == tenant_id)
        if prompt_ids is not None:
            q, lq = q.where(c.prompt_id.in_(prompt_ids)), lq.where(lc.prompt_id.in_(prompt_ids))
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            latest = (await conn.execute(q)).all()
            labels = (await conn.execute(lq)).all()
        return [OverrideHead(prompt_id=r.prompt_id, latest=int(r.latest),
                             labels={lb.label: int(lb.version) for lb in labels if lb.prompt_id == r.prompt_id})
                for r in latest]

    async def override(self, *, tenant_id: str, prompt_id: str, version: int) -> OverrideRow | None:
        c = prompt_overrides.c
        q = sa.select(prompt_overrides).where(c.tenant_id == tenant_id, c.prompt_id == prompt_id, c.version == version)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            found = (await conn.execute(q)).first()
        return None if found is None else OverrideRow(tenant_id=found.tenant_id, prompt_id=found.prompt_id,
                                                      version=found.version, created_at=found.created_at,
                                                      sealed=bytes(found.sealed))

    async def overrides(self, *, tenant_id: str) -> list[OverrideRow]:
        """Every override version of the tenant (re-sealing, export)."""
        c = prompt_overrides.c
        q = sa.select(prompt_overrides).where(c.tenant_id == tenant_id).order_by(c.prompt_id, c.version)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [OverrideRow(tenant_id=r.tenant_id, prompt_id=r.prompt_id, version=r.version,
                                created_at=r.created_at, sealed=bytes(r.sealed)) for r in await conn.execute(q)]

    async def replace_sealed(self, *, tenant_id: str, prompt_id: str, version: int, sealed: bytes) -> None:
        c = prompt_overrides.c
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(prompt_overrides.update().where(
                c.tenant_id == tenant_id, c.prompt_id == prompt_id, c.version == version).values(sealed=sealed))

    async def set_override_label(self, *, tenant_id: str, prompt_id: str, label: str, version: int) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await _set_label(conn, prompt_override_labels, {"tenant_id": tenant_id, "prompt_id": prompt_id}, label,
                             version)

    async def delete_override(self, *, tenant_id: str, prompt_id: str) -> bool:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            for table in (prompt_override_labels, prompt_overrides):
                done = await conn.execute(table.delete().where(table.c.tenant_id == tenant_id,
                                                               table.c.prompt_id == prompt_id))
        return bool(done.rowcount)

    async def forget_tenant(self, *, tenant_id: str) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            for table in (prompt_override_labels, prompt_overrides):
                await conn.execute(table.delete().where(table.c.tenant_id == tenant_id))


def _version_values(row: VersionRow) -> dict[str, Any]:
    return {"prompt_id": row.prompt_id, "version": row.version, "template": row.template,
            "variables": row.variables, "model": row.model, "created_at": row.created_at}


async def _prompt_row(conn: AsyncConnection, r: Any) -> PromptRow:
    latest = await _next(conn, prompt_versions.c.version, prompt_versions.c.prompt_id == r.id) - 1
    labels = (await conn.execute(sa.select(prompt_labels.c.label, prompt_labels.c.version)
                                 .where(prompt_labels.c.prompt_id == r.id))).all()
    return PromptRow(id=r.id, name=r.name, created_at=r.created_at, latest=latest,
                     labels={lb.label: int(lb.version) for lb in labels})
