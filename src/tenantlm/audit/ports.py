"""What the audit log's collaborators need from each other, as small protocols, so that neither module imports the
other: the auth-failure aggregator appends through an ``AuditAppender``; the log's background loop flushes whatever
``PendingEntries`` it is handed."""

from __future__ import annotations

from typing import Any, Protocol

from tenantlm.audit.models import AuditEntry


class AuditAppender(Protocol):
    async def append(self, *, actor: str, action: str, tenant_id: str | None, request_id: str | None,
                     details: dict[str, Any]) -> AuditEntry: ...


class PendingEntries(Protocol):
    async def flush(self, *, force: bool = False) -> list[AuditEntry]: ...
