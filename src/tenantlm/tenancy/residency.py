"""Residency: a tenant's ``allowed_regions`` (null: any) against the region of every model deployment a request
would reach. The catalog checks the model a request names (directly, through an alias, a private model or an
adapter); the provider router checks each fallback before trying it. A refusal is a 403 ``region_not_allowed``
(param ``model``) and an audit event naming the model, its region and the tenant's regions.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from tenantlm.errors import InvalidRequest, RegionNotAllowed
from tenantlm.observability.logging import request_id_var
from tenantlm.settings import ModelConfig
from tenantlm.tenancy.models import Tenant, TenantContext

Via = Literal["direct", "alias", "private", "adapter", "fallback"]
REFUSED = "model.region_refused"


class AuditSink(Protocol):
    async def append(self, *, actor: str, action: str, tenant_id: str | None, request_id: str | None,
                     details: dict[str, Any]) -> Any: ...


def permits(tenant: Tenant, config: ModelConfig) -> bool:
    return tenant.allowed_regions is None or config.region in tenant.allowed_regions


def check_allowed_regions(value: Any, known: set[str] | None, storage_regions: list[str] | None = None, *,
                          moved_by: str | None = None) -> list[str] | None:
    """``allowed_regions`` as sent to PATCH /admin/v1/tenants/{id}: null (any region) or a list of region names the
    operator configured (on models, providers or storage); an empty list allows no model at all. When storage is
    tagged with regions, the list must include one the tenant's data may be kept in: for a tenant that exists
    (``moved_by`` its id), the region its data is kept in now (``storage_regions`` holds that one region)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidRequest("allowed_regions must be a list of region names or null (any region)",
                             param="allowed_regions")
    unknown = sorted(set(value) - known) if known is not None else []
    if unknown:
        raise InvalidRequest(f"unknown region(s) {', '.join(unknown)}; configured: {', '.join(sorted(known or ()))}",
                             param="allowed_regions")
    if storage_regions and not set(storage_regions) & set(value):
        if moved_by is not None:
            raise InvalidRequest(
                f"this tenant's data is kept in region {storage_regions[0]!r}, so allowed_regions must include it; "
                f"move the data first (POST /admin/v1/tenants/{moved_by}/tier with \"storage_region\", or "
                f"`tenantlm tenants promote {moved_by} --storage-region REGION`)", param="allowed_regions")
        raise InvalidRequest(f"allowed_regions must include a region this deployment keeps tenant data in "
                             f"({', '.join(storage_regions)}); a tenant whose data must stay elsewhere needs a "
                             f"storage location there (storage_locations)", param="allowed_regions")
    return sorted(set(value))


class Residency:
    """One request's residency rule: its tenant, the key that asked and the model name it used."""

    def __init__(self, *, ctx: TenantContext, requested: str, audit: AuditSink | None) -> None:
        self.ctx = ctx
        self.requested = requested
        self._audit = audit

    def allows(self, config: ModelConfig) -> bool:
        return permits(self.ctx.tenant, config)

    async def check(self, config: ModelConfig, *, via: Via) -> None:
        if not self.allows(config):
            raise await self.refuse(config, via=via)

    async def refuse(self, config: ModelConfig, *, via: Via) -> RegionNotAllowed:
        """Record the refusal in the audit trail and return the error to raise."""
        allowed = self.ctx.tenant.allowed_regions or []
        if self._audit is not None:
            await self._audit.append(
                actor=f"tenant:{self.ctx.tenant_id}:{self.ctx.key_id}", action=REFUSED, tenant_id=self.ctx.tenant_id,
                request_id=request_id_var.get(),
                details={"model": self.requested, "deployment": config.name, "region": config.region,
                         "allowed_regions": allowed, "via": via})
        what = f"'{self.requested}'" if via != "fallback" else f"the fallback of '{self.requested}'"
        return RegionNotAllowed(
            f"{what} is served in region '{config.region}', outside this tenant's allowed regions "
            f"({', '.join(allowed) or 'none'})", param="model")
