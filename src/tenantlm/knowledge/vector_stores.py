"""Vector stores (OpenAI's Vector Stores API) per tenant: stores, attached files, file batches, and what they answer.

A store's name, description and metadata, and each attached file's attributes, are sealed with the tenant's data key
(kinds ``vector_store_meta`` and ``vector_store_file_attributes``). Attaching a file queues its ingestion
(``ingestion.py``): the file shows ``in_progress`` until its chunks are stored, then ``completed``, or ``failed``
with ``last_error`` (``unsupported_file`` / ``invalid_file`` for a file that cannot be read, ``server_error``
otherwise). A store is ``in_progress`` while any of its files is, ``expired`` past its ``expires_after``.
Changes call ``on_change(tenant_id, store_id)`` so the store's search index follows at once.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from tenantlm.errors import InvalidRequest, NotFound
from tenantlm.knowledge.chunking import ChunkingStrategy
from tenantlm.knowledge.files import FilesService
from tenantlm.knowledge.vector_store_store import (
    CANCELLED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    STATUSES,
    BatchRow,
    FileRow,
    Order,
    StoreRow,
    VectorStoreStore,
    chunk_record,
)
from tenantlm.observability.logging import request_id_var
from tenantlm.tenancy.service import AuditSink

_ALPHABET = string.ascii_letters + string.digits
MAX_BATCH_FILES = 2000
DAY_S = 86400.0


class Sealer(Protocol):
    async def seal(self, *, tenant_id: str, kind: str, record_id: str, plaintext: bytes) -> bytes: ...
    async def open(self, *, tenant_id: str, kind: str, record_id: str, ciphertext: bytes) -> bytes: ...
    async def rewrap_record(self, *, tenant_id: str, kind: str, record_id: str,
                            ciphertext: bytes) -> bytes | None: ...


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(24))


# --- validation of OpenAI's shapes --------------------------------------------------------------------------------
def check_metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    """OpenAI's metadata: at most 16 keys of at most 64 characters, string values of at most 512."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 16:
        raise InvalidRequest(f"{param} must be an object of at most 16 keys", param=param)
    for key, item in value.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64 or not isinstance(item, str) or len(item) > 512:
            raise InvalidRequest(f"{param} keys are 1-64 characters and values strings of at most 512",
                                 param=f"{param}.{key}")
    return dict(value)


def check_attributes(value: Any, param: str = "attributes") -> dict[str, str | float | bool] | None:
    """OpenAI's attributes: at most 16 keys of at most 64 characters; values strings (at most 512), numbers or
    booleans."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16:
        raise InvalidRequest(f"{param} must be an object of at most 16 keys", param=param)
    for key, item in value.items():
        ok = isinstance(item, bool | int | float) or (isinstance(item, str) and len(item) <= 512)
        if not isinstance(key, str) or not 0 < len(key) <= 64 or not ok:
            raise InvalidRequest(f"{param} keys are 1-64 characters; values are strings of at most 512 characters, "
                                 "numbers or booleans", param=f"{param}.{key}")
    return dict(value)


def check_expires_after(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("anchor") != "last_active_at":
        raise InvalidRequest("expires_after.anchor must be 'last_active_at'", param="expires_after.anchor")
    days = value.get("days")
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 365:
        raise InvalidRequest("expires_after.days must be a whole number from 1 to 365", param="expires_after.days")
    return days


def _string(value: Any, param: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidRequest(f"{param} must be a string of at most {limit} characters", param=param)
    return value


@dataclass(frozen=True, slots=True)
class StoreMeta:
    name: str
    description: str
    metadata: dict[str, str]


def _counts(by_status: dict[str, int]) -> dict[str, int]:
    counts = {s: by_status.get(s, 0) for s in STATUSES}
    return {**counts, "total": sum(counts.values())}


class VectorStoresService:
    def __init__(self, *, store: VectorStoreStore, files: FilesService, sealer: Sealer, audit: AuditSink,
                 on_change: Callable[[str, str], None] | None = None, wake: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.files = files
        self.sealer = sealer
        self.audit = audit
        self.on_change = on_change or (lambda _t, _s: None)
        self.wake = wake or (lambda: None)  # tells the ingestion workers there is work
        self.clock = clock

    # --- stores -----------------------------------------------------------------------------------------------
    async def create_store(self, *, tenant_id: str, body: dict[str, Any], actor: str) -> dict[str, Any]:
        meta = StoreMeta(name=_string(body.get("name"), "name", 256),
                         description=_string(body.get("description"), "description", 512),
                         metadata=check_metadata(body.get("metadata")))
        days = check_expires_after(body.get("expires_after"))
        strategy = ChunkingStrategy.parse(body.get("chunking_strategy"))
        file_ids = self._file_ids(body.get("file_ids"), "file_ids")
        for file_id in file_ids:
            await self.files.get(tenant_id=tenant_id, file_id=file_id)  # 404 before anything is made
        now = self.clock()
        store_id = new_id("vs_")
        await self.store.insert_store(tenant_id=tenant_id, row=StoreRow(
            tenant_id=tenant_id, id=store_id, sealed_meta=await self._seal_meta(tenant_id, store_id, meta),
            created_at=now, last_active_at=now, expires_after_days=days))
        for file_id in file_ids:
            await self._attach(tenant_id, store_id, file_id, None, strategy, None)
        await self._audit(actor, "vector_store.created", tenant_id, vector_store_id=store_id, files=len(file_ids))
        return await self.get_store(tenant_id=tenant_id, store_id=store_id)

    async def _seal_meta(self, tenant_id: str, store_id: str, meta: StoreMeta) -> bytes:
        plain = orjson.dumps({"name": meta.name, "description": meta.description, "metadata": meta.metadata})
        return await self.sealer.seal(tenant_id=tenant_id, kind="vector_store_meta", record_id=store_id,
                                      plaintext=plain)

    async def _meta(self, row: StoreRow) -> StoreMeta:
        plain = orjson.loads(await self.sealer.open(tenant_id=row.tenant_id, kind="vector_store_meta",
                                                    record_id=row.id, ciphertext=row.sealed_meta))
        return StoreMeta(name=plain["name"], description=plain["description"], metadata=plain["metadata"])

    async def _row(self, tenant_id: str, store_id: str) -> StoreRow:
        row = await self.store.get_store(tenant_id=tenant_id, store_id=store_id)
        if row is None:
            raise NotFound(f"No vector store found with id '{store_id}'.", param="vector_store_id")
        return row

    def _expires_at(self, row: StoreRow) -> float | None:
        return None if row.expires_after_days is None else row.last_active_at + row.expires_after_days * DAY_S

    async def _public(self, row: StoreRow) -> dict[str, Any]:
        meta = await self._meta(row)
        by_status, usage = await self.store.counts(tenant_id=row.tenant_id, store_id=row.id)
        expires_at = self._expires_at(row)
        status = "expired" if expires_at is not None and expires_at <= self.clock() else (
            IN_PROGRESS if by_status.get(IN_PROGRESS) else COMPLETED)
        return {"id": row.id, "object": "vector_store", "created_at": int(row.created_at), "name": meta.name,
                "description": meta.description or None, "usage_bytes": usage, "file_counts": _counts(by_status),
                "status": status, "last_active_at": int(row.last_active_at), "metadata": meta.metadata,
                "expires_after": None if row.expires_after_days is None else {
                    "anchor": "last_active_at", "days": row.expires_after_days},
                "expires_at": None if expires_at is None else int(expires_at)}

    async def get_store(self, *, tenant_id: str, store_id: str) -> dict[str, Any]:
        return await self._public(await self._row(tenant_id, store_id))

    async def usable_store(self, *, tenant_id: str, store_id: str) -> StoreRow:
        """A store that may be searched: it exists for this tenant and has not expired (its use is noted)."""
        row = await self._row(tenant_id, store_id)
        expires_at = self._expires_at(row)
        if expires_at is not None and expires_at <= self.clock():
            raise InvalidRequest(f"The vector store '{store_id}' has expired.", param="vector_store_id",
                                 code="vector_store_expired")
        await self.store.update_store(tenant_id=tenant_id, store_id=store_id, values={"last_active_at": self.clock()})
        return row

    async def list_stores(self, *, tenant_id: str, after: str | None, before: str | None, limit: int,
                          order: Order) -> dict[str, Any]:
        cursors = [None if c is None else await self._row(tenant_id, c) for c in (after, before)]
        rows = await self.store.page_stores(
            tenant_id=tenant_id, after=None if cursors[0] is None else (cursors[0].created_at, cursors[0].id),
            before=None if cursors[1] is None else (cursors[1].created_at, cursors[1].id), order=order,
            limit=limit + 1)
        return _page([await self._public(r) for r in rows[:limit]], len(rows) > limit)

    async def update_store(self, *, tenant_id: str, store_id: str, body: dict[str, Any], actor: str
                           ) -> dict[str, Any]:
        row = await self._row(tenant_id, store_id)
        meta = await self._meta(row)
        values: dict[str, Any] = {}
        if "name" in body or "metadata" in body:
            meta = StoreMeta(name=_string(body["name"], "name", 256) if "name" in body else meta.name,
                             description=meta.description,
                             metadata=check_metadata(body["metadata"]) if "metadata" in body else meta.metadata)
            values["sealed_meta"] = await self._seal_meta(tenant_id, store_id, meta)
        if "expires_after" in body:
            values["expires_after_days"] = check_expires_after(body["expires_after"])
        if values:
            await self.store.update_store(tenant_id=tenant_id, store_id=store_id, values=values)
            await self._audit(actor, "vector_store.updated", tenant_id, vector_store_id=store_id,
                              fields=sorted(k for k in body if k in ("name", "metadata", "expires_after")))
        return await self.get_store(tenant_id=tenant_id, store_id=store_id)

    async def delete_store(self, *, tenant_id: str, store_id: str, actor: str) -> dict[str, Any]:
        await self._row(tenant_id, store_id)
        await self.store.delete_store(tenant_id=tenant_id, store_id=store_id)
        self.on_change(tenant_id, store_id)
        await self._audit(actor, "vector_store.deleted", tenant_id, vector_store_id=store_id)
        return {"id": store_id, "object": "vector_store.deleted", "deleted": True}

    # --- attached files ---------------------------------------------------------------------------------------
    @staticmethod
    def _file_ids(value: Any, param: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise InvalidRequest(f"{param} must be a list of file ids", param=param)
        if len(value) > MAX_BATCH_FILES:
            raise InvalidRequest(f"{param} may name at most {MAX_BATCH_FILES} files", param=param)
        return list(dict.fromkeys(value))

    async def _attach(self, tenant_id: str, store_id: str, file_id: str, attributes: dict[str, Any] | None,
                      strategy: ChunkingStrategy, batch_id: str | None) -> FileRow:
        sealed = None if attributes is None else await self.sealer.seal(
            tenant_id=tenant_id, kind="vector_store_file_attributes", record_id=f"{store_id}:{file_id}",
            plaintext=orjson.dumps(attributes))
        row = await self.store.attach(tenant_id=tenant_id, row=FileRow(
            tenant_id=tenant_id, vector_store_id=store_id, file_id=file_id, batch_id=batch_id, status=IN_PROGRESS,
            error_code=None, error_message=None, sealed_attributes=sealed, chunking=strategy.to_json(),
            usage_bytes=0, created_at=self.clock(), attempts=0))
        self.wake()
        return row

    async def attributes(self, row: FileRow) -> dict[str, str | float | bool] | None:
        if row.sealed_attributes is None:
            return None
        plain = await self.sealer.open(tenant_id=row.tenant_id, kind="vector_store_file_attributes",
                                       record_id=f"{row.vector_store_id}:{row.file_id}",
                                       ciphertext=row.sealed_attributes)
        attrs: dict[str, str | float | bool] = orjson.loads(plain)
        return attrs

    async def _file_public(self, row: FileRow) -> dict[str, Any]:
        error = None if row.error_code is None else {"code": row.error_code, "message": row.error_message or ""}
        return {"id": row.file_id, "object": "vector_store.file", "created_at": int(row.created_at),
                "vector_store_id": row.vector_store_id, "status": row.status, "last_error": error,
                "usage_bytes": row.usage_bytes, "attributes": await self.attributes(row),
                "chunking_strategy": row.chunking}

    async def _file_row(self, tenant_id: str, store_id: str, file_id: str) -> FileRow:
        row = await self.store.get_file(tenant_id=tenant_id, store_id=store_id, file_id=file_id)
        if row is None:
            raise NotFound(f"No file found with id '{file_id}' in vector store '{store_id}'.", param="file_id")
        return row

    async def attach_file(self, *, tenant_id: str, store_id: str, body: dict[str, Any], actor: str
                          ) -> dict[str, Any]:
        await self.usable_store(tenant_id=tenant_id, store_id=store_id)
        file_id = body.get("file_id")
        if not isinstance(file_id, str) or not file_id:
            raise InvalidRequest("file_id is required", param="file_id")
        await self.files.get(tenant_id=tenant_id, file_id=file_id)
        row = await self._attach(tenant_id, store_id, file_id, check_attributes(body.get("attributes")),
                                 ChunkingStrategy.parse(body.get("chunking_strategy")), None)
        await self._audit(actor, "vector_store.file_attached", tenant_id, vector_store_id=store_id, file_id=file_id)
        return await self._file_public(row)

    async def get_file(self, *, tenant_id: str, store_id: str, file_id: str) -> dict[str, Any]:
        await self._row(tenant_id, store_id)
        return await self._file_public(await self._file_row(tenant_id, store_id, file_id))

    async def list_files(self, *, tenant_id: str, store_id: str, status: str | None, after: str | None,
                         before: str | None, limit: int, order: Order, batch_id: str | None = None
                         ) -> dict[str, Any]:
        await self._row(tenant_id, store_id)
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"filter must be one of {', '.join(STATUSES)}", param="filter")
        cursors = [None if c is None else await self._file_row(tenant_id, store_id, c) for c in (after, before)]
        rows = await self.store.page_files(
            tenant_id=tenant_id, store_id=store_id, status=status, batch_id=batch_id,
            after=None if cursors[0] is None else (cursors[0].created_at, cursors[0].file_id),
            before=None if cursors[1] is None else (cursors[1].created_at, cursors[1].file_id), order=order,
            limit=limit + 1)
        return _page([await self._file_public(r) for r in rows[:limit]], len(rows) > limit)

    async def update_file(self, *, tenant_id: str, store_id: str, file_id: str, body: dict[str, Any], actor: str
                          ) -> dict[str, Any]:
        await self._row(tenant_id, store_id)
        await self._file_row(tenant_id, store_id, file_id)
        if "attributes" not in body:
            raise InvalidRequest("attributes is required (null removes them)", param="attributes")
        attributes = check_attributes(body["attributes"])
        sealed = None if attributes is None else await self.sealer.seal(
            tenant_id=tenant_id, kind="vector_store_file_attributes", record_id=f"{store_id}:{file_id}",
            plaintext=orjson.dumps(attributes))
        await self.store.set_attributes(tenant_id=tenant_id, store_id=store_id, file_id=file_id, sealed=sealed)
        self.on_change(tenant_id, store_id)
        await self._audit(actor, "vector_store.file_updated", tenant_id, vector_store_id=store_id, file_id=file_id)
        return await self.get_file(tenant_id=tenant_id, store_id=store_id, file_id=file_id)

    async def detach_file(self, *, tenant_id: str, store_id: str, file_id: str, actor: str) -> dict[str, Any]:
        await self._row(tenant_id, store_id)
        await self._file_row(tenant_id, store_id, file_id)
        await self.store.detach(tenant_id=tenant_id, store_id=store_id, file_id=file_id)
        self.on_change(tenant_id, store_id)
        await self._audit(actor, "vector_store.file_detached", tenant_id, vector_store_id=store_id, file_id=file_id)
        return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}

    async def file_removed(self, tenant_id: str, file_id: str) -> None:
        """A file was deleted: it leaves every store of the tenant at once (search no longer finds it)."""
        for store_id in await self.store.stores_of_file(tenant_id=tenant_id, file_id=file_id):
            await self.store.detach(tenant_id=tenant_id, store_id=store_id, file_id=file_id)
            self.on_change(tenant_id, store_id)

    async def file_content(self, *, tenant_id: str, store_id: str, file_id: str) -> dict[str, Any]:
        """The parsed text of an attached file, chunk by chunk (OpenAI's ``vector_store.file_content.page``)."""
        await self._row(tenant_id, store_id)
        await self._file_row(tenant_id, store_id, file_id)
        parts = []
        for chunk in await self.store.file_chunks(tenant_id=tenant_id, store_id=store_id, file_id=file_id):
            text = await self.sealer.open(tenant_id=tenant_id, kind="chunk_text",
                                          record_id=chunk_record(store_id, file_id, chunk.seq),
                                          ciphertext=chunk.sealed_text)
            parts.append({"type": "text", "text": text.decode("utf-8")})
        return {"object": "vector_store.file_content.page", "data": parts, "has_more": False, "next_page": None}

    # --- batches ----------------------------------------------------------------------------------------------
    async def create_batch(self, *, tenant_id: str, store_id: str, body: dict[str, Any], actor: str
                           ) -> dict[str, Any]:
        await self.usable_store(tenant_id=tenant_id, store_id=store_id)
        entries = self._batch_entries(body)
        for file_id, _, _ in entries:
            await self.files.get(tenant_id=tenant_id, file_id=file_id)
        batch_id = new_id("vsfb_")
        await self.store.insert_batch(tenant_id=tenant_id, row=BatchRow(
            tenant_id=tenant_id, id=batch_id, vector_store_id=store_id, cancelled=False, created_at=self.clock()))
        for file_id, attributes, strategy in entries:
            await self._attach(tenant_id, store_id, file_id, attributes, strategy, batch_id)
        await self._audit(actor, "vector_store.file_batch_created", tenant_id, vector_store_id=store_id,
                          batch_id=batch_id, files=len(entries))
        return await self.get_batch(tenant_id=tenant_id, store_id=store_id, batch_id=batch_id)

    def _batch_entries(self, body: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None, ChunkingStrategy]]:
        if body.get("files") is not None and body.get("file_ids") is not None:
            raise InvalidRequest("give file_ids or files, not both", param="files")
        if body.get("files") is not None:
            files = body["files"]
            if not isinstance(files, list) or not files or len(files) > MAX_BATCH_FILES:
                raise InvalidRequest(f"files must be a list of 1-{MAX_BATCH_FILES} objects", param="files")
            out = []
            for i, item in enumerate(files):
                if not isinstance(item, dict) or not isinstance(item.get("file_id"), str):
                    raise InvalidRequest("each entry of files needs a file_id", param=f"files[{i}].file_id")
                out.append((item["file_id"], check_attributes(item.get("attributes"), f"files[{i}].attributes"),
                            ChunkingStrategy.parse(item.get("chunking_strategy"))))
            return out
        file_ids = self._file_ids(body.get("file_ids"), "file_ids")
        if not file_ids:
            raise InvalidRequest("file_ids (or files) must name at least one file", param="file_ids")
        attributes = check_attributes(body.get("attributes"))
        strategy = ChunkingStrategy.parse(body.get("chunking_strategy"))
        return [(file_id, attributes, strategy) for file_id in file_ids]

    async def _batch_row(self, tenant_id: str, store_id: str, batch_id: str) -> BatchRow:
        await self._row(tenant_id, store_id)
        row = await self.store.get_batch(tenant_id=tenant_id, store_id=store_id, batch_id=batch_id)
        if row is None:
            raise NotFound(f"No file batch found with id '{batch_id}' in vector store '{store_id}'.",
                           param="batch_id")
        return row

    async def get_batch(self, *, tenant_id: str, store_id: str, batch_id: str) -> dict[str, Any]:
        row = await self._batch_row(tenant_id, store_id, batch_id)
        by_status, _ = await self.store.counts(tenant_id=tenant_id, store_id=store_id, batch_id=batch_id)
        counts = _counts(by_status)
        if counts[IN_PROGRESS]:
            status = IN_PROGRESS
        elif row.cancelled:
            status = CANCELLED
        else:
            status = FAILED if counts[FAILED] and counts[FAILED] == counts["total"] else COMPLETED
        return {"id": row.id, "object": "vector_store.files_batch", "created_at": int(row.created_at),
                "vector_store_id": store_id, "status": status, "file_counts": counts}

    async def cancel_batch(self, *, tenant_id: str, store_id: str, batch_id: str, actor: str) -> dict[str, Any]:
        await self._batch_row(tenant_id, store_id, batch_id)
        await self.store.cancel_batch(tenant_id=tenant_id, store_id=store_id, batch_id=batch_id)
        await self._audit(actor, "vector_store.file_batch_cancelled", tenant_id, vector_store_id=store_id,
                          batch_id=batch_id)
        return await self.get_batch(tenant_id=tenant_id, store_id=store_id, batch_id=batch_id)

    async def batch_files(self, *, tenant_id: str, store_id: str, batch_id: str, status: str | None,
                          after: str | None, before: str | None, limit: int, order: Order) -> dict[str, Any]:
        await self._batch_row(tenant_id, store_id, batch_id)
        return await self.list_files(tenant_id=tenant_id, store_id=store_id, status=status, after=after,
                                     before=before, limit=limit, order=order, batch_id=batch_id)

    # --- erasure and re-sealing ---------------------------------------------------------------------------------
    export_name = storage_kind = "vector_stores"

    async def stored_bytes(self, *, tenant_id: str) -> int:
        return await self.store.stored_bytes(tenant_id=tenant_id)

    async def export_items(self, *, tenant_id: str) -> AsyncIterator[dict[str, Any]]:
        """Every vector store of the tenant as its API object with its attached files (objects and attributes);
        the chunks are derived from the files, which the export holds."""
        for row in await self.store.all_stores(tenant_id=tenant_id):
            attached = await self.store.all_files(tenant_id=tenant_id, store_id=row.id)
            yield {**await self._public(row), "files": [await self._file_public(f) for f in attached]}

    async def forget_tenant(self, *, tenant_id: str) -> None:
        await self.store.forget_tenant(tenant_id=tenant_id)

    async def rewrap(self, *, tenant_id: str) -> int:
        """Re-seal the tenant's store names and metadata, file attributes, chunk texts and vectors under its active
        data key (after a rotation); returns how many records moved."""
        moved = 0
        for row in await self.store.all_stores(tenant_id=tenant_id):
            fresh = await self._rewrap(tenant_id, "vector_store_meta", row.id, row.sealed_meta)
            if fresh is not None:
                await self.store.update_store(tenant_id=tenant_id, store_id=row.id, values={"sealed_meta": fresh})
                moved += 1
            for attached in await self.store.all_files(tenant_id=tenant_id, store_id=row.id):
                if attached.sealed_attributes is None:
                    continue
                fresh = await self._rewrap(tenant_id, "vector_store_file_attributes",
                                           f"{row.id}:{attached.file_id}", attached.sealed_attributes)
                if fresh is not None:
                    await self.store.set_attributes(tenant_id=tenant_id, store_id=row.id, file_id=attached.file_id,
                                                    sealed=fresh)
                    moved += 1
        return moved + await self._rewrap_chunks(tenant_id)

    async def _rewrap_chunks(self, tenant_id: str) -> int:
        moved, after = 0, 0
        while page := await self.store.tenant_chunks(tenant_id=tenant_id, after=after, limit=500):
            for store_id, chunk in page:
                record = chunk_record(store_id, chunk.file_id, chunk.seq)
                text = await self._rewrap(tenant_id, "chunk_text", record, chunk.sealed_text)
                vector = await self._rewrap(tenant_id, "chunk_vector", record, chunk.sealed_vector)
                if text is not None or vector is not None:
                    await self.store.replace_chunk(tenant_id=tenant_id, chunk_id=chunk.id,
                                                   sealed_text=text or chunk.sealed_text,
                                                   sealed_vector=vector or chunk.sealed_vector)
                    moved += 1
            after = page[-1][1].id
        return moved

    async def _rewrap(self, tenant_id: str, kind: str, record_id: str, sealed: bytes) -> bytes | None:
        return await self.sealer.rewrap_record(tenant_id=tenant_id, kind=kind, record_id=record_id,
                                               ciphertext=sealed)

    async def _audit(self, actor: str, action: str, tenant_id: str, **details: Any) -> None:
        await self.audit.append(actor=actor, action=action, tenant_id=tenant_id, request_id=request_id_var.get(),
                                details=details)


def _page(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}
