"""Erasing a tenant: keys first (crypto-shredding), then rows, then files, each step audited.

Destroying the tenant's key-encryption key comes first because it is the step that also reaches copies made before
the delete: a backup of the database keeps the sealed rows and the wrapped data keys, but nothing can unwrap them once
the tenant's KEK (which never lives in the database) is gone. If a later step fails, the tenant's content is already
unreadable and the delete can be retried.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Protocol

from tenantlm.errors import InvalidRequest
from tenantlm.observability.logging import request_id_var
from tenantlm.tenancy.auth import Authenticator
from tenantlm.tenancy.service import AuditSink, TenancyService


class Shredder(Protocol):
    async def shred(self, *, tenant_id: str) -> None: ...


class TenantContent(Protocol):
    async def forget_tenant(self, *, tenant_id: str) -> None: ...


class TenantSeries(Protocol):
    """Metrics labelled by tenant: a deleted tenant's series are removed."""

    def forget_tenant(self, *, tenant_id: str) -> None: ...


def tenant_files(data_dir: Path, tenant_id: str) -> Path:
    return data_dir / "tenants" / tenant_id


def confirmed(confirm: Any, tenant_id: str) -> bool:
    """An explicit confirmation: the tenant's id (preferred: it cannot be aimed at the wrong tenant), or true."""
    if confirm is True:
        return True
    return isinstance(confirm, str) and confirm.strip().lower() in {tenant_id.lower(), "true", "yes"}


class TenantEraser:
    def __init__(self, *, tenancy: TenancyService, keyring: Shredder, contents: list[TenantContent],
                 audit: AuditSink, auth: Authenticator, data_dir: Path, metrics: TenantSeries | None = None) -> None:
        self.tenancy = tenancy
        self.keyring = keyring
        self.contents = contents
        self.audit = audit
        self.auth = auth
        self.data_dir = data_dir
        self.metrics = metrics

    async def erase(self, *, tenant_id: str, confirm: Any, actor: str) -> None:
        await self.tenancy.get_tenant(tenant_id=tenant_id)
        if not confirmed(confirm, tenant_id):
            raise InvalidRequest(
                "deleting a tenant destroys its encryption keys and every record it owns, irreversibly; to confirm, "
                "send 'confirm' set to the tenant's id (or true), in the JSON body or as a query parameter",
                param="confirm")
        rid = request_id_var.get()
        await self.audit.append(actor=actor, action="tenant.delete_started", tenant_id=tenant_id, request_id=rid,
                                details={})
        await self.keyring.shred(tenant_id=tenant_id)
        await self.audit.append(actor=actor, action="tenant.keys_shredded", tenant_id=tenant_id, request_id=rid,
                                details={})
        for content in self.contents:
            await content.forget_tenant(tenant_id=tenant_id)
        await self.tenancy.store.delete_tenant(tenant_id=tenant_id)
        self.auth.invalidate_tenant(tenant_id)
        if self.metrics is not None:
            self.metrics.forget_tenant(tenant_id=tenant_id)
        files = tenant_files(self.data_dir, tenant_id)
        if files.exists():
            shutil.rmtree(files)
        await self.audit.append(actor=actor, action="tenant.deleted", tenant_id=tenant_id, request_id=rid,
                                details={"files_removed": True})
