"""Files (OpenAI's Files API) per tenant: upload, list, retrieve, content, delete, expiry.

An upload is read as it arrives (``uploads.read_upload``): every MiB of the file is sealed with the tenant's data key
(kind ``file_part``, record ``<file id>:<part>``, so parts cannot be swapped) and stored at once; the name is sealed
too (kind ``file_name``). Nothing of the content is kept in the clear: not in memory beyond one part, not in a
temporary file, not in a log. Limits: the tenant's ``max_file_bytes`` (one upload, 413 as soon as it is passed) and
``storage_bytes`` (all of its files, 429 ``insufficient_quota``; checked in the transaction that completes the
upload), and the server's ``max_upload_bytes``. An upload that fails or is abandoned leaves nothing behind: its parts
are deleted at once, or by the sweep when the process died meanwhile.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tenantlm.errors import InvalidRequest, NotFound, PayloadTooLarge
from tenantlm.knowledge.file_store import FileRow, FileStore, StorageQuotaExceeded
from tenantlm.knowledge.uploads import UploadForm, read_upload
from tenantlm.observability.logging import request_id_var
from tenantlm.tenancy.limits_service import LimitsService
from tenantlm.tenancy.models import Tenant
from tenantlm.tenancy.service import AuditSink

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
PART_BYTES = 1 << 20
EXPIRY_MIN_S, EXPIRY_MAX_S = 3600, 30 * 86400
BATCH_DEFAULT_EXPIRY_S = 30 * 86400  # OpenAI: batch files expire after 30 days unless told otherwise
STALE_UPLOAD_S = 3600.0  # an upload still incomplete after this long was abandoned (its process died)
_ID_ALPHABET = string.ascii_letters + string.digits


class Sealer(Protocol):
    async def seal(self, *, tenant_id: str, kind: str, record_id: str, plaintext: bytes) -> bytes: ...
    async def open(self, *, tenant_id: str, kind: str, record_id: str, ciphertext: bytes) -> bytes: ...
    async def rewrap_record(self, *, tenant_id: str, kind: str, record_id: str,
                            ciphertext: bytes) -> bytes | None: ...


class QuotaExceeded(InvalidRequest):
    """429 insufficient_quota: the tenant's file storage is full."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


def new_file_id() -> str:
    return "file-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    size: int
    created_at: float
    expires_at: float | None
    parts: int

    def public(self) -> dict[str, Any]:
        """OpenAI's ``file`` object (``status`` is deprecated there; a stored file is ``processed``)."""
        return {"id": self.id, "object": "file", "bytes": self.size, "created_at": int(self.created_at),
                "expires_at": None if self.expires_at is None else int(self.expires_at), "filename": self.filename,
                "purpose": self.purpose, "status": "processed", "status_details": None}


@dataclass(frozen=True, slots=True)
class FileLimits:
    max_file_bytes: int | None
    storage_bytes: int | None


def _purpose(value: str | None) -> str:
    if value not in PURPOSES:
        raise InvalidRequest(f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
    return value


def _expiry(form: UploadForm, purpose: str, now: float) -> float | None:
    anchor = form.fields.get("expires_after[anchor]")
    seconds = form.fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return now + BATCH_DEFAULT_EXPIRY_S if purpose == "batch" else None
    if anchor != "created_at":
        raise InvalidRequest("expires_after.anchor must be 'created_at'", param="expires_after.anchor")
    if seconds is None or not seconds.isdigit() or not EXPIRY_MIN_S <= int(seconds) <= EXPIRY_MAX_S:
        raise InvalidRequest(f"expires_after.seconds must be a whole number from {EXPIRY_MIN_S} to {EXPIRY_MAX_S}",
                             param="expires_after.seconds")
    return now + int(seconds)


class _Upload:
    """One upload's sealed parts, written as the body arrives."""

    def __init__(self, service: FilesService, tenant_id: str, file_id: str, limit: int) -> None:
        self.service = service
        self.tenant_id = tenant_id
        self.file_id = file_id
        self.limit = limit
        self.buffer = bytearray()
        self.parts = 0
        self.size = 0
        self.begun = False

    async def piece(self, data: bytes | None, form: UploadForm) -> None:
        if data is None:  # the file part starts
            await self.service._begin(self.tenant_id, self.file_id, form)
            self.begun = True
            return
        self.size += len(data)
        if self.size > self.limit:
            raise PayloadTooLarge(f"the file is larger than the {self.limit} bytes one upload may have here")
        self.buffer += data
        while len(self.buffer) >= PART_BYTES:
            await self._store(bytes(self.buffer[:PART_BYTES]))
            del self.buffer[:PART_BYTES]

    async def finish(self) -> None:
        if self.buffer or self.parts == 0:
            await self._store(bytes(self.buffer))
            self.buffer.clear()

    async def _store(self, plaintext: bytes) -> None:
        await self.service._store_part(self.tenant_id, self.file_id, self.parts, plaintext)
        self.parts += 1


class FilesService:
    def __init__(self, *, store: FileStore, sealer: Sealer, limits: LimitsService, audit: AuditSink,
                 max_upload_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.sealer = sealer
        self.limits = limits
        self.audit = audit
        self.max_upload_bytes = max_upload_bytes
        self.clock = clock
        # called after a file is deleted (vector stores drop it everywhere at once)
        self.on_delete: list[Callable[[str, str], Awaitable[None]]] = []

    async def _limits(self, tenant: Tenant) -> FileLimits:
        eff = (await self.limits.effective(tenant)).tenant
        return FileLimits(max_file_bytes=eff.max_file_bytes, storage_bytes=eff.storage_bytes)

    # --- upload -----------------------------------------------------------------------------------------------
    async def upload(self, *, tenant: Tenant, content_type: str | None, body: AsyncIterator[bytes],
                     actor: str) -> StoredFile:
        limits = await self._limits(tenant)
        if limits.storage_bytes is not None and \
                await self.store.used_bytes(tenant_id=tenant.id) >= limits.storage_bytes:
            raise self._full(limits.storage_bytes)
        one = min(x for x in (limits.max_file_bytes, self.max_upload_bytes) if x is not None)
        upload = _Upload(self, tenant.id, new_file_id(), one)
        form = UploadForm()
        try:
            async def on_file(piece: bytes | None) -> None:
                await upload.piece(piece, form)

            parsed = await read_upload(content_type, body, on_file=on_file, form=form)
            await upload.finish()
            stored = await self._complete(tenant.id, upload, parsed, limits)
        except BaseException:
            if upload.begun:
                await self.store.delete(tenant_id=tenant.id, file_id=upload.file_id)
            raise
        await self._audit(actor, "file.created", tenant.id, file_id=stored.id, purpose=stored.purpose,
                          bytes=stored.size)
        return stored

    async def _begin(self, tenant_id: str, file_id: str, form: UploadForm) -> None:
        name = (form.filename or "upload").strip()[:512] or "upload"
        sealed = await self.sealer.seal(tenant_id=tenant_id, kind="file_name", record_id=file_id,
                                        plaintext=name.encode())
        await self.store.begin(tenant_id=tenant_id, row=FileRow(
            tenant_id=tenant_id, id=file_id, purpose=form.fields.get("purpose") or "", size=0, parts=0,
            status="uploading", created_at=self.clock(), expires_at=None, sealed_name=sealed))

    async def _store_part(self, tenant_id: str, file_id: str, part: int, plaintext: bytes) -> None:
        sealed = await self.sealer.seal(tenant_id=tenant_id, kind="file_part", record_id=f"{file_id}:{part}",
                                        plaintext=plaintext)
        await self.store.add_part(tenant_id=tenant_id, file_id=file_id, part=part, sealed=sealed)

    async def _complete(self, tenant_id: str, upload: _Upload, form: UploadForm, limits: FileLimits) -> StoredFile:
        purpose = _purpose(form.fields.get("purpose"))
        try:
            row = await self.store.complete(tenant_id=tenant_id, file_id=upload.file_id, purpose=purpose,
                                            size=upload.size, parts=upload.parts,
                                            expires_at=_expiry(form, purpose, self.clock()),
                                            storage_limit=limits.storage_bytes)
        except StorageQuotaExceeded as exc:
            raise self._full(exc.limit) from None
        return await self._stored(row)

    @staticmethod
    def _full(limit: int) -> QuotaExceeded:
        return QuotaExceeded(f"this file would take the tenant's file storage past its limit of {limit} bytes; "
                             "delete files or ask the operator for more storage")

    # --- reads ------------------------------------------------------------------------------------------------
    async def _stored(self, row: FileRow) -> StoredFile:
        name = await self.sealer.open(tenant_id=row.tenant_id, kind="file_name", record_id=row.id,
                                      ciphertext=row.sealed_name)
        return StoredFile(id=row.id, filename=name.decode("utf-8", "replace"), purpose=row.purpose, size=row.size,
                          created_at=row.created_at, expires_at=row.expires_at, parts=row.parts)

    async def get(self, *, tenant_id: str, file_id: str) -> StoredFile:
        row = await self.store.get(tenant_id=tenant_id, file_id=file_id)
        if row is None or self._expired(row):
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return await self._stored(row)

    def _expired(self, row: FileRow) -> bool:
        return row.expires_at is not None and row.expires_at <= self.clock()

    async def list(self, *, tenant_id: str, purpose: str | None, after: str | None, limit: int,
                   order: Literal["asc", "desc"]) -> tuple[list[StoredFile], bool]:
        cursor = None
        if after is not None:
            cursor = await self.store.get(tenant_id=tenant_id, file_id=after)
            if cursor is None:
                raise InvalidRequest(f"after: no file {after!r}", param="after")
        rows = await self.store.page(tenant_id=tenant_id, purpose=purpose, after=cursor, limit=limit + 1,
                                     order=order)
        live = [r for r in rows[:limit] if not self._expired(r)]
        return [await self._stored(r) for r in live], len(rows) > limit

    async def content(self, *, tenant_id: str, file_id: str) -> tuple[StoredFile, AsyncIterator[bytes]]:
        """The file and its content as an iterator of decrypted parts (for a streamed response)."""
        stored = await self.get(tenant_id=tenant_id, file_id=file_id)

        async def chunks() -> AsyncIterator[bytes]:
            async for part, sealed in self.store.parts(tenant_id=tenant_id, file_id=file_id, count=stored.parts):
                yield await self.sealer.open(tenant_id=tenant_id, kind="file_part", record_id=f"{file_id}:{part}",
                                             ciphertext=sealed)

        return stored, chunks()

    async def read_all(self, *, tenant_id: str, file_id: str) -> tuple[StoredFile, bytes]:
        """The whole content in memory (for parsing, which needs it whole; bounded by the upload limits)."""
        stored, chunks = await self.content(tenant_id=tenant_id, file_id=file_id)
        return stored, b"".join([c async for c in chunks])

    # --- delete, expiry, erasure ------------------------------------------------------------------------------
    async def delete(self, *, tenant_id: str, file_id: str, actor: str) -> dict[str, Any]:
        await self.get(tenant_id=tenant_id, file_id=file_id)
        await self.store.delete(tenant_id=tenant_id, file_id=file_id)
        for hook in self.on_delete:
            await hook(tenant_id, file_id)
        await self._audit(actor, "file.deleted", tenant_id, file_id=file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    async def sweep(self) -> int:
        """Delete expired files and abandoned uploads (every tenant; each delete in its tenant's scope)."""
        now = self.clock()
        doomed = await self.store.platform_expired(now=now, stale_before=now - STALE_UPLOAD_S)
        for tenant_id, file_id in doomed:
            await self.store.delete(tenant_id=tenant_id, file_id=file_id)
            for hook in self.on_delete:
                await hook(tenant_id, file_id)
        return len(doomed)

    storage_kind = "files"

    async def stored_bytes(self, *, tenant_id: str) -> int:
        """The bytes of the tenant's uploaded files (as uploaded; what ``storage_bytes`` limits)."""
        return await self.store.used_bytes(tenant_id=tenant_id)

    async def forget_tenant(self, *, tenant_id: str) -> None:
        await self.store.forget_tenant(tenant_id=tenant_id)

    async def rewrap(self, *, tenant_id: str) -> int:
        """Re-seal every name and part of the tenant's files under its active data key (after a rotation)."""
        moved = 0
        after: str | None = None
        while True:
            page, more = await self.list(tenant_id=tenant_id, purpose=None, after=after, limit=100, order="asc")
            for stored in page:
                moved += await self._rewrap_file(tenant_id, stored)
            if not more or not page:
                return moved
            after = page[-1].id

    async def _rewrap_file(self, tenant_id: str, stored: StoredFile) -> int:
        moved = 0
        name = await self.store.name_of(tenant_id=tenant_id, file_id=stored.id)
        records: list[tuple[int | None, str, str, bytes]] = [] if name is None else [
            (None, "file_name", stored.id, name)]
        async for number, part_sealed in self.store.parts(tenant_id=tenant_id, file_id=stored.id,
                                                          count=stored.parts):
            records.append((number, "file_part", f"{stored.id}:{number}", part_sealed))
        for part, kind, record_id, sealed in records:
            fresh = await self.sealer.rewrap_record(tenant_id=tenant_id, kind=kind, record_id=record_id,
                                                   ciphertext=sealed)
            if fresh is not None:
                await self.store.replace_sealed(tenant_id=tenant_id, file_id=stored.id, part=part, sealed=fresh)
                moved += 1
        return moved

    async def export(self, *, tenant_id: str) -> AsyncIterator[tuple[StoredFile, bytes]]:
        """Every file of the tenant, decrypted (GDPR export)."""
        after: str | None = None
        while True:
            page, more = await self.list(tenant_id=tenant_id, purpose=None, after=after, limit=100, order="asc")
            for stored in page:
                yield (await self.read_all(tenant_id=tenant_id, file_id=stored.id))
            if not more or not page:
                return
            after = page[-1].id

    async def _audit(self, actor: str, action: str, tenant_id: str, **details: Any) -> None:
        await self.audit.append(actor=actor, action=action, tenant_id=tenant_id, request_id=request_id_var.get(),
                                details=details)
