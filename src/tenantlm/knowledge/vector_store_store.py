"""Vector stores over SQL: stores, attached files (each also the durable ingestion job of its file), batches and
chunks. Tenant methods take ``tenant_id`` and run in that tenant's transaction (row-level security on Postgres); the
job queue's claim, which looks across tenants for work, is the one ``platform_*`` read. Sealed columns are opaque
here: the store never sees plaintext.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import chunks, vector_store_file_batches, vector_store_files, vector_stores

IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "in_progress", "completed", "failed", "cancelled"
STATUSES = (IN_PROGRESS, COMPLETED, FAILED, CANCELLED)
Order = Literal["asc", "desc"]


@dataclass(frozen=True, slots=True)
class StoreRow:
    tenant_id: str
    id: str
    sealed_meta: bytes
    created_at: float
    last_active_at: float
    expires_after_days: int | None


@dataclass(frozen=True, slots=True)
class FileRow:
    tenant_id: str
    vector_store_id: str
    file_id: str
    batch_id: str | None
    status: str
    error_code: str | None
    error_message: str | None
    sealed_attributes: bytes | None
    chunking: dict[str, Any]
    usage_bytes: int
    created_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class BatchRow:
    tenant_id: str
    id: str
    vector_store_id: str
    cancelled: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class ChunkRow:
    id: int
    file_id: str
    seq: int
    tokens: int
    sealed_text: bytes
    sealed_vector: bytes


@dataclass(frozen=True, slots=True)
class NewChunk:
    seq: int
    tokens: int
    sealed_text: bytes
    sealed_vector: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """A job taken by one worker until ``lease_until``; only the holder of ``token`` may complete it."""

    tenant_id: str
    vector_store_id: str
    file_id: str
    token: str
    attempts: int
    chunking: dict[str, Any]


def chunk_record(store_id: str, file_id: str, seq: int) -> str:
    """The record id a chunk's text and vector are sealed under (bound to store, file and position)."""
    return f"{store_id}:{file_id}:{seq}"


def _store(r: Any) -> StoreRow:
    return StoreRow(tenant_id=r.tenant_id, id=r.id, sealed_meta=bytes(r.sealed_meta), created_at=r.created_at,
                    last_active_at=r.last_active_at, expires_after_days=r.expires_after_days)


def _file(r: Any) -> FileRow:
    return FileRow(tenant_id=r.tenant_id, vector_store_id=r.vector_store_id, file_id=r.file_id, batch_id=r.batch_id,
                   status=r.status, error_code=r.error_code, error_message=r.error_message,
                   sealed_attributes=None if r.sealed_attributes is None else bytes(r.sealed_attributes),
                   chunking=dict(r.chunking or {}), usage_bytes=int(r.usage_bytes), created_at=r.created_at,
                   attempts=int(r.attempts))


def _batch(r: Any) -> BatchRow:
    return BatchRow(tenant_id=r.tenant_id, id=r.id, vector_store_id=r.vector_store_id, cancelled=bool(r.cancelled),
                    created_at=r.created_at)


def _paged(q: sa.Select[Any], created: Any, ident: Any, *, after: tuple[float, str] | None,
           before: tuple[float, str] | None, order: Order, limit: int) -> sa.Select[Any]:
    key = sa.tuple_(created, ident)
    if after is not None:
        cursor = sa.tuple_(sa.literal(after[0]), sa.literal(after[1]))
        q = q.where(key > cursor if order == "asc" else key < cursor)
    if before is not None:
        cursor = sa.tuple_(sa.literal(before[0]), sa.literal(before[1]))
        q = q.where(key < cursor if order == "asc" else key > cursor)
    ordering = (created.asc(), ident.asc()) if order == "asc" else (created.desc(), ident.desc())
    return q.order_by(*ordering).limit(limit)


class VectorStoreStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- stores -----------------------------------------------------------------------------------------------
    async def insert_store(self, *, tenant_id: str, row: StoreRow) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(vector_stores.insert().values(
                tenant_id=tenant_id, id=row.id, sealed_meta=row.sealed_meta, created_at=row.created_at,
                last_active_at=row.last_active_at, expires_after_days=row.expires_after_days))

    async def get_store(self, *, tenant_id: str, store_id: str) -> StoreRow | None:
        q = sa.select(vector_stores).where(vector_stores.c.tenant_id == tenant_id, vector_stores.c.id == store_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            row = (await conn.execute(q)).first()
        return None if row is None else _store(row)

    async def page_stores(self, *, tenant_id: str, after: tuple[float, str] | None, before: tuple[float, str] | None,
                          order: Order, limit: int) -> list[StoreRow]:
        c = vector_stores.c
        q = _paged(sa.select(vector_stores).where(c.tenant_id == tenant_id), c.created_at, c.id, after=after,
                   before=before, order=order, limit=limit)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_store(r) for r in await conn.execute(q)]

    async def update_store(self, *, tenant_id: str, store_id: str, values: dict[str, Any]) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(vector_stores.update().where(vector_stores.c.tenant_id == tenant_id,
                                                            vector_stores.c.id == store_id).values(**values))

    async def delete_store(self, *, tenant_id: str, store_id: str) -> bool:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            for table in (chunks, vector_store_files, vector_store_file_batches):
                await conn.execute(table.delete().where(table.c.tenant_id == tenant_id,
                                                        table.c.vector_store_id == store_id))
            res = await conn.execute(vector_stores.delete().where(vector_stores.c.tenant_id == tenant_id,
                                                                  vector_stores.c.id == store_id))
        return bool(res.rowcount)

    async def counts(self, *, tenant_id: str, store_id: str, batch_id: str | None = None) -> tuple[dict[str, int], int]:
        """Files per status, and the bytes they use, of a store (or of one batch of it)."""
        c = vector_store_files.c
        q = sa.select(c.status, sa.func.count(), sa.func.coalesce(sa.func.sum(c.usage_bytes), 0)).where(
            c.tenant_id == tenant_id, c.vector_store_id == store_id)
        if batch_id is not None:
            q = q.where(c.batch_id == batch_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            rows = (await conn.execute(q.group_by(c.status))).all()
        return {r[0]: int(r[1]) for r in rows}, sum(int(r[2]) for r in rows)

    async def stored_bytes(self, *, tenant_id: str) -> int:
        """The bytes all of the tenant's stores use (their files' ``usage_bytes``: sealed chunk texts and vectors)."""
        c = vector_store_files.c
        q = sa.select(sa.func.coalesce(sa.func.sum(c.usage_bytes), 0)).where(c.tenant_id == tenant_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return int((await conn.execute(q)).scalar_one())

    # --- attached files ---------------------------------------------------------------------------------------
    async def attach(self, *, tenant_id: str, row: FileRow) -> FileRow:
        """Attach a file (a new ingestion job), or return the attachment that exists already."""
        found = await self.get_file(tenant_id=tenant_id, store_id=row.vector_store_id, file_id=row.file_id)
        if found is not None:
            return found
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(vector_store_files.insert().values(
                tenant_id=tenant_id, vector_store_id=row.vector_store_id, file_id=row.file_id, batch_id=row.batch_id,
                status=IN_PROGRESS, sealed_attributes=row.sealed_attributes, chunking=row.chunking, usage_bytes=0,
                created_at=row.created_at, attempts=0))
        return row

    async def get_file(self, *, tenant_id: str, store_id: str, file_id: str) -> FileRow | None:
        c = vector_store_files.c
        q = sa.select(vector_store_files).where(c.tenant_id == tenant_id, c.vector_store_id == store_id,
                                                c.file_id == file_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            row = (await conn.execute(q)).first()
        return None if row is None else _file(row)

    async def page_files(self, *, tenant_id: str, store_id: str, status: str | None, batch_id: str | None,
                         after: tuple[float, str] | None, before: tuple[float, str] | None, order: Order,
                         limit: int) -> list[FileRow]:
        c = vector_store_files.c
        q = sa.select(vector_store_files).where(c.tenant_id == tenant_id, c.vector_store_id == store_id)
        if status is not None:
            q = q.where(c.status == status)
        if batch_id is not None:
            q = q.where(c.batch_id == batch_id)
        q = _paged(q, c.created_at, c.file_id, after=after, before=before, order=order, limit=limit)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_file(r) for r in await conn.execute(q)]

    async def all_files(self, *, tenant_id: str, store_id: str) -> list[FileRow]:
        c = vector_store_files.c
        q = sa.select(vector_store_files).where(c.tenant_id == tenant_id, c.vector_store_id == store_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_file(r) for r in await conn.execute(q)]

    async def set_attributes(self, *, tenant_id: str, store_id: str, file_id: str, sealed: bytes | None) -> None:
        c = vector_store_files.c
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(vector_store_files.update().where(
                c.tenant_id == tenant_id, c.vector_store_id == store_id, c.file_id == file_id).values(
                sealed_attributes=sealed))

    async def detach(self, *, tenant_id: str, store_id: str, file_id: str) -> bool:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(chunks.delete().where(chunks.c.tenant_id == tenant_id,
                                                     chunks.c.vector_store_id == store_id, chunks.c.file_id == file_id))
            c = vector_store_files.c
            res = await conn.execute(vector_store_files.delete().where(
                c.tenant_id == tenant_id, c.vector_store_id == store_id, c.file_id == file_id))
        return bool(res.rowcount)

    async def stores_of_file(self, *, tenant_id: str, file_id: str) -> list[str]:
        c = vector_store_files.c
        q = sa.select(c.vector_store_id).where(c.tenant_id == tenant_id, c.file_id == file_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [r[0] for r in await conn.execute(q)]

    # --- batches ----------------------------------------------------------------------------------------------
    async def insert_batch(self, *, tenant_id: str, row: BatchRow) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(vector_store_file_batches.insert().values(
                tenant_id=tenant_id, id=row.id, vector_store_id=row.vector_store_id, cancelled=False,
                created_at=row.created_at))

    async def get_batch(self, *, tenant_id: str, store_id: str, batch_id: str) -> BatchRow | None:
        c = vector_store_file_batches.c
        q = sa.select(vector_store_file_batches).where(c.tenant_id == tenant_id, c.vector_store_id == store_id,
                                                       c.id == batch_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            row = (await conn.execute(q)).first()
        return None if row is None else _batch(row)

    async def cancel_batch(self, *, tenant_id: str, store_id: str, batch_id: str) -> None:
        """The batch's files not yet ingested become ``cancelled`` (a job in flight will not commit)."""
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            b = vector_store_file_batches.c
            await conn.execute(vector_store_file_batches.update().where(
                b.tenant_id == tenant_id, b.vector_store_id == store_id, b.id == batch_id).values(cancelled=True))
            f = vector_store_files.c
            await conn.execute(vector_store_files.update().where(
                f.tenant_id == tenant_id, f.vector_store_id == store_id, f.batch_id == batch_id,
                f.status == IN_PROGRESS).values(status=CANCELLED, lease_until=None, lease_token=None))

    # --- chunks -----------------------------------------------------------------------------------------------
    async def store_chunks(self, *, tenant_id: str, store_id: str) -> AsyncIterator[list[ChunkRow]]:
        """The chunks of a store's completed files, in pages (for building its index)."""
        c, f = chunks.c, vector_store_files.c
        after = 0
        while True:
            q = sa.select(chunks).join(vector_store_files, sa.and_(
                f.tenant_id == c.tenant_id, f.vector_store_id == c.vector_store_id, f.file_id == c.file_id)).where(
                c.tenant_id == tenant_id, c.vector_store_id == store_id, f.status == COMPLETED,
                c.id > after).order_by(c.id).limit(2000)
            async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
                page = [ChunkRow(id=int(r.id), file_id=r.file_id, seq=r.seq, tokens=r.tokens,
                                 sealed_text=bytes(r.sealed_text), sealed_vector=bytes(r.sealed_vector))
                        for r in await conn.execute(q)]
            if not page:
                return
            yield page
            after = page[-1].id

    async def chunk_texts(self, *, tenant_id: str, store_id: str, ids: Sequence[int]
                          ) -> dict[int, tuple[str, int, bytes]]:
        """(file id, seq, sealed text) of the given chunk ids, for a search's results."""
        if not ids:
            return {}
        c = chunks.c
        q = sa.select(c.id, c.file_id, c.seq, c.sealed_text).where(
            c.tenant_id == tenant_id, c.vector_store_id == store_id, c.id.in_(list(ids)))
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return {int(r.id): (r.file_id, int(r.seq), bytes(r.sealed_text)) for r in await conn.execute(q)}

    async def file_chunks(self, *, tenant_id: str, store_id: str, file_id: str) -> list[ChunkRow]:
        c = chunks.c
        q = sa.select(chunks).where(c.tenant_id == tenant_id, c.vector_store_id == store_id,
                                    c.file_id == file_id).order_by(c.seq)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [ChunkRow(id=int(r.id), file_id=r.file_id, seq=r.seq, tokens=r.tokens,
                             sealed_text=bytes(r.sealed_text), sealed_vector=bytes(r.sealed_vector))
                    for r in await conn.execute(q)]

    # --- the ingestion queue ----------------------------------------------------------------------------------
    async def platform_pending_tenants(self, *, now: float, limit: int = 256) -> list[str]:
        """Tenants with a job that is waiting or whose lease ran out (the worker serves them in turn)."""
        c = vector_store_files.c
        q = sa.select(c.tenant_id).where(c.status == IN_PROGRESS,
                                          sa.or_(c.lease_until.is_(None), c.lease_until < now)).distinct().limit(limit)
        found: set[str] = set()
        async for conn in self.db.platform_each():
            found.update(r[0] for r in await conn.execute(q))
        return sorted(found)[:limit]

    async def claim(self, *, tenant_id: str, now: float, lease_s: float, token: str) -> Claim | None:
        """Take the tenant's oldest waiting job (or one whose lease ran out) until ``now + lease_s``."""
        c = vector_store_files.c
        free = sa.and_(c.tenant_id == tenant_id, c.status == IN_PROGRESS,
                       sa.or_(c.lease_until.is_(None), c.lease_until < now))
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            row = (await conn.execute(sa.select(c.vector_store_id, c.file_id, c.attempts, c.chunking).where(free)
                                      .order_by(c.created_at, c.file_id).limit(1))).first()
            if row is None:
                return None
            taken = await conn.execute(vector_store_files.update().where(
                free, c.vector_store_id == row.vector_store_id, c.file_id == row.file_id).values(
                lease_until=now + lease_s, lease_token=token, attempts=c.attempts + 1))
            if taken.rowcount != 1:
                return None  # another worker took it between the two statements
        return Claim(tenant_id=tenant_id, vector_store_id=row.vector_store_id, file_id=row.file_id, token=token,
                     attempts=int(row.attempts) + 1, chunking=dict(row.chunking or {}))

    async def complete(self, *, claim: Claim, new_chunks: Sequence[NewChunk], usage_bytes: int) -> bool:
        """In one transaction: replace the file's chunks and mark it completed, if the claim still holds (not
        cancelled, detached or taken over meanwhile). A job redone after a crash replaces, never duplicates."""
        t, s, f = claim.tenant_id, claim.vector_store_id, claim.file_id
        c = vector_store_files.c
        mine = sa.and_(c.tenant_id == t, c.vector_store_id == s, c.file_id == f, c.status == IN_PROGRESS,
                       c.lease_token == claim.token)
        async with self.db.tenant_tx(tenant_id=t) as conn:
            done = await conn.execute(vector_store_files.update().where(mine).values(
                status=COMPLETED, usage_bytes=usage_bytes, lease_until=None, lease_token=None, error_code=None,
                error_message=None))
            if done.rowcount != 1:
                return False
            await conn.execute(chunks.delete().where(chunks.c.tenant_id == t, chunks.c.vector_store_id == s,
                                                     chunks.c.file_id == f))
            if new_chunks:
                await conn.execute(chunks.insert(), [
                    {"tenant_id": t, "vector_store_id": s, "file_id": f, "seq": n.seq, "tokens": n.tokens,
                     "sealed_text": n.sealed_text, "sealed_vector": n.sealed_vector} for n in new_chunks])
        return True

    async def renew(self, *, claim: Claim, until: float) -> None:
        c = vector_store_files.c
        async with self.db.tenant_tx(tenant_id=claim.tenant_id) as conn:
            await conn.execute(vector_store_files.update().where(
                c.tenant_id == claim.tenant_id, c.vector_store_id == claim.vector_store_id,
                c.file_id == claim.file_id, c.lease_token == claim.token).values(lease_until=until))

    async def fail(self, *, claim: Claim, code: str, message: str) -> bool:
        c = vector_store_files.c
        async with self.db.tenant_tx(tenant_id=claim.tenant_id) as conn:
            res = await conn.execute(vector_store_files.update().where(
                c.tenant_id == claim.tenant_id, c.vector_store_id == claim.vector_store_id,
                c.file_id == claim.file_id, c.status == IN_PROGRESS, c.lease_token == claim.token).values(
                status=FAILED, error_code=code, error_message=message[:500], lease_until=None, lease_token=None))
        return bool(res.rowcount)

    async def release(self, *, claim: Claim, retry_at: float) -> None:
        """Give a job back after a transient failure; it is taken again from ``retry_at``."""
        c = vector_store_files.c
        async with self.db.tenant_tx(tenant_id=claim.tenant_id) as conn:
            await conn.execute(vector_store_files.update().where(
                c.tenant_id == claim.tenant_id, c.vector_store_id == claim.vector_store_id,
                c.file_id == claim.file_id, c.lease_token == claim.token).values(lease_until=retry_at,
                                                                                   lease_token=None))

    # --- re-sealing after a key rotation -------------------------------------------------------------------------
    async def all_stores(self, *, tenant_id: str) -> list[StoreRow]:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [_store(r) for r in await conn.execute(
                sa.select(vector_stores).where(vector_stores.c.tenant_id == tenant_id))]

    async def tenant_chunks(self, *, tenant_id: str, after: int, limit: int) -> list[tuple[str, ChunkRow]]:
        """(store id, chunk) of every chunk of the tenant, in id order from ``after``."""
        q = sa.select(chunks).where(chunks.c.tenant_id == tenant_id, chunks.c.id > after).order_by(chunks.c.id) \
            .limit(limit)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return [(r.vector_store_id, ChunkRow(id=int(r.id), file_id=r.file_id, seq=r.seq, tokens=r.tokens,
                                                 sealed_text=bytes(r.sealed_text),
                                                 sealed_vector=bytes(r.sealed_vector)))
                    for r in await conn.execute(q)]

    async def replace_chunk(self, *, tenant_id: str, chunk_id: int, sealed_text: bytes, sealed_vector: bytes) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(chunks.update().where(chunks.c.tenant_id == tenant_id, chunks.c.id == chunk_id)
                               .values(sealed_text=sealed_text, sealed_vector=sealed_vector))

    async def forget_tenant(self, *, tenant_id: str) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            for table in (chunks, vector_store_files, vector_store_file_batches, vector_stores):
                await conn.execute(table.delete().where(table.c.tenant_id == tenant_id))
