"""Moving a tenant's sealed records to its active data key after a rotation, so the old key can be retired."""

from __future__ import annotations

from typing import Protocol

from tenantlm.tenancy.service import AuditSink


class Rewrappable(Protocol):
    async def rewrap(self, *, tenant_id: str) -> int: ...


class TenantRewrapper:
    def __init__(self, *, contents: list[Rewrappable], audit: AuditSink) -> None:
        self.contents = contents
        self.audit = audit

    async def rewrap(self, *, tenant_id: str, actor: str) -> int:
        """Re-seal every record of the tenant under its active data key; audited with the count."""
        moved = 0
        for content in self.contents:
            moved += await content.rewrap(tenant_id=tenant_id)
        await self.audit.append(actor=actor, action="encryption.rewrapped", tenant_id=tenant_id, request_id=None,
                                details={"records": moved})
        return moved
