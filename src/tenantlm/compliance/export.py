"""GDPR export: everything TenantLM holds for one tenant, decrypted, as a zip archive with a manifest.

The archive holds ``tenant.json``, ``keys.json`` (metadata only: secrets are never stored, hashes are left out),
``end_users.json``, ``request_log.jsonl`` (decrypted), ``audit.jsonl`` (the tenant's own entries), ``files.json``
(the uploaded files' objects) with each file's content, decrypted, under ``files/<file id>``, ``prompt_overrides.json``
(every version of the tenant's prompt overrides, decrypted, with their labels), ``memories.jsonl``
(every end user's long-term memories, decrypted, each naming its end user), ``conversations.jsonl`` (every
conversation, each with its end user and its items, decrypted), one JSON-lines file per further section of content
(``vector_stores.jsonl``: each store with its attached files and their attributes; ``responses.jsonl``: each stored
response with its own input items, decrypted), and ``manifest.json`` (format version, tenant id, creation time, and
per file its entry count and SHA-256).
"""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import orjson

from tenantlm.observability.logging import request_id_var
from tenantlm.requestlog.service import RequestLogService
from tenantlm.tenancy.service import AuditSink, TenancyService

FORMAT = "tenantlm-export/1"


class AuditReader(Protocol):
    def export_jsonl(self, *, tenant_id: str | None) -> AsyncIterator[bytes]: ...


class TenantMemories(Protocol):
    def export_tenant(self, *, tenant_id: str) -> AsyncIterator[dict[str, Any]]: ...


class StoredFiles(Protocol):
    def export(self, *, tenant_id: str) -> AsyncIterator[tuple[Any, bytes]]: ...


class ExportSection(Protocol):
    """A kind of tenant content, exported as ``<export_name>.jsonl`` with one decrypted record a line."""

    export_name: str

    def export_items(self, *, tenant_id: str) -> AsyncIterator[dict[str, Any]]: ...


class StoredConversations(Protocol):
    def export(self, *, tenant_id: str) -> AsyncIterator[dict[str, Any]]: ...


class PromptOverrides(Protocol):
    async def export(self, *, tenant_id: str) -> list[dict[str, Any]]: ...


class TenantExporter:
    def __init__(self, *, tenancy: TenancyService, request_log: RequestLogService, audit: AuditSink,
                 audit_reader: AuditReader, files: StoredFiles | None = None,
                 sections: tuple[ExportSection, ...] = (),
                 conversations: StoredConversations | None = None,
                 flush: Callable[[], Awaitable[None]] | None = None,
                 memories: TenantMemories | None = None, prompts: PromptOverrides | None = None) -> None:
        self.tenancy = tenancy
        self.prompts = prompts
        self.files = files
        self.sections = sections
        self.conversations = conversations
        self.request_log = request_log
        self.audit = audit
        self.audit_reader = audit_reader
        self.memories = memories
        self.flush = flush  # writes what is still buffered in memory (end users), so the archive is complete

    async def export(self, *, tenant_id: str, actor: str) -> bytes:
        tenant = await self.tenancy.get_tenant(tenant_id=tenant_id)
        if self.flush is not None:
            await self.flush()
        files: dict[str, tuple[bytes, int]] = {}
        files["tenant.json"] = (orjson.dumps(tenant.public(), option=orjson.OPT_INDENT_2), 1)
        keys = [k.public() for k in await self.tenancy.store.list_keys(tenant_id=tenant_id)]
        files["keys.json"] = (orjson.dumps(keys, option=orjson.OPT_INDENT_2), len(keys))
        users = await self.tenancy.store.list_end_users(tenant_id=tenant_id, limit=1_000_000)
        files["end_users.json"] = (orjson.dumps(users, option=orjson.OPT_INDENT_2), len(users))
        files["request_log.jsonl"] = await _jsonl(self.request_log.export(tenant_id=tenant_id))
        files["audit.jsonl"] = await _lines(self.audit_reader.export_jsonl(tenant_id=tenant_id))
        if self.memories is not None:
            files["memories.jsonl"] = await _jsonl(self.memories.export_tenant(tenant_id=tenant_id))
        if self.files is not None:
            listed = []
            async for stored, content in self.files.export(tenant_id=tenant_id):
                listed.append(stored.public())
                files[f"files/{stored.id}"] = (content, 1)
            files["files.json"] = (orjson.dumps(listed, option=orjson.OPT_INDENT_2), len(listed))
        for section in self.sections:
            files[f"{section.export_name}.jsonl"] = await _jsonl(section.export_items(tenant_id=tenant_id))
        if self.conversations is not None:
            files["conversations.jsonl"] = await _jsonl(self.conversations.export(tenant_id=tenant_id))
        if self.prompts is not None:
            overrides = await self.prompts.export(tenant_id=tenant_id)
            files["prompt_overrides.json"] = (orjson.dumps(overrides, option=orjson.OPT_INDENT_2), len(overrides))
        archive = _zip(tenant_id, files)
        await self.audit.append(actor=actor, action="tenant.exported", tenant_id=tenant_id,
                                request_id=request_id_var.get(),
                                details={"files": {n: c for n, (_, c) in files.items()}, "bytes": len(archive)})
        return archive


async def _jsonl(items: AsyncIterator[dict[str, Any]]) -> tuple[bytes, int]:
    out, n = io.BytesIO(), 0
    async for item in items:
        out.write(orjson.dumps(item) + b"\n")
        n += 1
    return out.getvalue(), n


async def _lines(chunks: AsyncIterator[bytes]) -> tuple[bytes, int]:
    data = b"".join([c async for c in chunks])
    return data, data.count(b"\n")


def _zip(tenant_id: str, files: dict[str, tuple[bytes, int]]) -> bytes:
    manifest = {"format": FORMAT, "tenant_id": tenant_id, "created_at": int(time.time()),
                "files": {name: {"entries": count, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                          for name, (data, count) in files.items()}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        for name, (data, _) in files.items():
            zf.writestr(name, data)
    return buf.getvalue()
