"""Tenancy use cases: create and change tenants, issue and revoke keys. Validation lives here, storage in the store,
and every change that affects authentication is pushed to the authenticator's cache at once.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tenantlm.conversations.policy import SETTINGS as MEMORY_SETTINGS
from tenantlm.errors import InvalidRequest, NotFound, PermissionDenied
from tenantlm.observability.logging import request_id_var
from tenantlm.requestlog.service import SETTING as REQUEST_LOG_DAYS
from tenantlm.requestlog.service import check_retention
from tenantlm.respcache.policy import SETTING as CACHE_SETTING
from tenantlm.respcache.policy import check_cache
from tenantlm.tenancy import keys
from tenantlm.tenancy.auth import Authenticator
from tenantlm.tenancy.models import (
    AdminKey,
    ApiKey,
    CreatedKey,
    Permission,
    PlatformRole,
    Role,
    Tenant,
    TenantStatus,
)
from tenantlm.tenancy.residency import check_allowed_regions
from tenantlm.tenancy.store import TenancyStore

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,199}$")
EDITABLE = frozenset({"name", "status", "plan", "region", "metadata", "settings", "allowed_models",
                       "model_aliases", "billing", "allowed_regions"})
# Fields a tenant's own admin may change; status, plan, regions and billing identifiers are the operator's.
TENANT_ADMIN_EDITABLE = frozenset({"name", "metadata", "settings"})


# Known tenant settings and their validators; PATCH merges settings key by key (null removes a key).
SETTINGS: dict[str, Callable[[Any], Any]] = {REQUEST_LOG_DAYS: check_retention, CACHE_SETTING: check_cache,
                                             **MEMORY_SETTINGS}
# The operator's billing identifiers for a tenant (``billing``), read by the Stripe export. Platform-only: a tenant
# that could set its own customer id could have its usage billed to another customer.
BILLING_FIELDS = frozenset({"stripe_customer_id"})
_BILLING_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


class AuditSink(Protocol):
    async def append(self, *, actor: str, action: str, tenant_id: str | None, request_id: str | None,
                     details: dict[str, Any]) -> Any: ...


class TenantKeys(Protocol):
    async def ensure_tenant(self, tenant_id: str) -> object: ...


class SettingsListener(Protocol):
    async def retention_changed(self, *, tenant_id: str, days: int) -> None: ...


class Placements(Protocol):
    """Where a new tenant's content goes (the tier service, which knows the storage locations)."""

    def region_for_new(self, allowed_regions: list[str] | None) -> str | None: ...

    async def placed(self, tenant_id: str, region: str | None) -> None: ...


def new_tenant_id() -> str:
    return "ten_" + secrets.token_hex(8)


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest(
            f"{what} must be 1-200 characters of letters, digits, space, '.', '_' or '-', starting with a letter "
            "or digit", param="name")
    return name


def _check_settings(value: Any, current: dict[str, Any]) -> dict[str, Any]:
    changes = _check_json_object(value, "settings")
    merged = dict(current)
    for name, new in changes.items():
        if name not in SETTINGS:
            raise InvalidRequest(f"unknown setting {name!r}; known: {', '.join(sorted(SETTINGS))}",
                                 param=f"settings.{name}")
        if new is None:
            merged.pop(name, None)
        else:
            merged[name] = SETTINGS[name](new)
    return merged


def _check_billing(value: Any, current: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for name, new in _check_json_object(value, "billing").items():
        if name not in BILLING_FIELDS:
            raise InvalidRequest(f"unknown billing field {name!r}; known: {', '.join(sorted(BILLING_FIELDS))}",
                                 param=f"billing.{name}")
        if new is None:
            merged.pop(name, None)
        elif isinstance(new, str) and _BILLING_ID.match(new):
            merged[name] = new
        else:
            raise InvalidRequest(f"billing.{name} must be 1-255 letters, digits, '_' or '-' (or null to remove it)",
                                 param=f"billing.{name}")
    return merged


def _check_json_object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{param} must be a JSON object", param=param)
    return value


def _check_models(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest("allowed_models must be a list of model names or null", param="allowed_models")
    return list(value)


def _check_aliases(value: Any) -> dict[str, str]:
    obj = _check_json_object(value, "model_aliases")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
        raise InvalidRequest("model_aliases maps alias names to catalog model names", param="model_aliases")
    return obj


class TenancyService:
    def __init__(self, *, store: TenancyStore, auth: Authenticator, known_models: Callable[[], set[str]],
                 audit: AuditSink, tenant_keys: TenantKeys, settings_listener: SettingsListener,
                 plan_exists: Callable[[str], Awaitable[bool]] | None = None,
                 known_regions: Callable[[], set[str]] | None = None, storage_region: str | None = None,
                 storage_regions: Sequence[str] = (), clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.auth = auth
        self.known_models = known_models
        self.audit = audit
        self.tenant_keys = tenant_keys
        self.settings_listener = settings_listener
        self.plan_exists = plan_exists
        self.known_regions = known_regions
        self.storage_region = storage_region  # the home database's region
        self.storage_regions = list(storage_regions)  # every storage location's region, home first
        self.placements: Placements | None = None  # set by the tier service: where a new tenant's content goes
        self.clock = clock

    async def _audit(self, actor: str, action: str, tenant_id: str | None, **details: Any) -> None:
        await self.audit.append(actor=actor, action=action, tenant_id=tenant_id, request_id=request_id_var.get(),
                                details=details)

    # --- tenants ----------------------------------------------------------------------------------------------
    async def create_tenant(self, body: dict[str, Any], *, actor: str) -> Tenant:
        unknown = set(body) - EDITABLE
        if unknown:
            raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0])
        await self._check_plan(body.get("plan", "free"))
        now = self.clock()
        allowed_regions = self._regions(body.get("allowed_regions"), None)
        storage_region = None if self.placements is None else self.placements.region_for_new(allowed_regions)
        tenant = Tenant(
            id=new_tenant_id(), name=_check_name(body.get("name"), "name"),
            status=self._status(body.get("status", "active")), plan=str(body.get("plan", "free")),
            region=str(body.get("region", "local")), metadata=_check_json_object(body.get("metadata", {}), "metadata"),
            settings=_check_settings(body.get("settings", {}), {}),
            allowed_models=self._models(body.get("allowed_models")),
            model_aliases=self._aliases(body.get("model_aliases", {})), created_at=now, updated_at=now,
            billing=_check_billing(body.get("billing", {}), {}),
            allowed_regions=allowed_regions, storage_region=storage_region,
        )
        await self.store.insert_tenant(tenant_id=tenant.id, tenant=tenant)
        await self.tenant_keys.ensure_tenant(tenant.id)
        if self.placements is not None:
            await self.placements.placed(tenant.id, storage_region)
        await self._audit(actor, "tenant.created", tenant.id, plan=tenant.plan, region=tenant.region,
                          status=tenant.status.value, allowed_regions=tenant.allowed_regions,
                          storage_region=storage_region or self.storage_region)
        return tenant

    async def list_tenants(self, *, limit: int = 100, after: str | None = None) -> list[Tenant]:
        return await self.store.platform_list_tenants(limit=max(1, min(limit, 1000)), after=after)

    async def get_tenant(self, *, tenant_id: str) -> Tenant:
        tenant = await self.store.get_tenant(tenant_id=tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id!r}", param="tenant_id")
        return tenant

    async def update_tenant(self, *, tenant_id: str, body: dict[str, Any], actor: str,
                            allowed: frozenset[str] = EDITABLE) -> Tenant:
        unknown = set(body) - EDITABLE
        if unknown:
            raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0])
        current = await self.get_tenant(tenant_id=tenant_id)
        values = self._validated_changes(body, allowed, current)
        if "plan" in values:
            await self._check_plan(values["plan"])
        values["updated_at"] = self.clock()
        tenant = await self.store.update_tenant(tenant_id=tenant_id, values=values)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id!r}", param="tenant_id")
        self.auth.invalidate_tenant(tenant_id)
        await self._after_update(actor, current, tenant, sorted(body))
        return tenant

    async def set_tier(self, *, tenant_id: str, tier: str, reserved_share: float | None,
                       storage_region: str | None) -> Tenant:
        """Record where the tenant's content now lives and its reserved capacity (only the tier service does)."""
        tenant = await self.store.update_tenant(tenant_id=tenant_id, values={
            "tier": tier, "reserved_share": reserved_share, "storage_region": storage_region,
            "updated_at": self.clock()})
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id!r}", param="tenant_id")
        self.auth.invalidate_tenant(tenant_id)
        return tenant

    async def _after_update(self, actor: str, before: Tenant, after: Tenant, fields: list[str]) -> None:
        if before.status != after.status:
            action = "tenant.suspended" if after.status is TenantStatus.SUSPENDED else "tenant.resumed"
            await self._audit(actor, action, after.id)
        await self._audit(actor, "tenant.updated", after.id, fields=fields)
        if before.allowed_regions != after.allowed_regions:
            await self._audit(actor, "tenant.regions_changed", after.id, before=before.allowed_regions,
                              after=after.allowed_regions)
        old_days, new_days = before.settings.get(REQUEST_LOG_DAYS, 0), after.settings.get(REQUEST_LOG_DAYS, 0)
        if new_days != old_days:
            await self.settings_listener.retention_changed(tenant_id=after.id, days=int(new_days))

    def _validated_changes(self, body: dict[str, Any], allowed: frozenset[str], current: Tenant) -> dict[str, Any]:
        forbidden = set(body) - allowed
        if forbidden:
            raise PermissionDenied(f"this key may not change {', '.join(sorted(forbidden))}",
                                   param=sorted(forbidden)[0])
        checks: dict[str, Callable[[Any], Any]] = {
            "name": lambda v: _check_name(v, "name"), "status": lambda v: self._status(v).value,
            "plan": str, "region": str, "metadata": lambda v: _check_json_object(v, "metadata"),
            "settings": lambda v: _check_settings(v, current.settings), "allowed_models": self._models,
            "model_aliases": self._aliases, "billing": lambda v: _check_billing(v, current.billing),
            "allowed_regions": lambda v: self._regions(v, current),
        }
        return {k: checks[k](v) for k, v in body.items()}

    async def _check_plan(self, plan: Any) -> None:
        if not isinstance(plan, str) or (self.plan_exists is not None and not await self.plan_exists(plan)):
            raise InvalidRequest(f"no plan {plan!r}; list them with GET /admin/v1/plans", param="plan")

    @staticmethod
    def _status(value: Any) -> TenantStatus:
        try:
            return TenantStatus(value)
        except ValueError:
            raise InvalidRequest("status must be 'active' or 'suspended'", param="status") from None

    def _regions(self, value: Any, current: Tenant | None) -> list[str] | None:
        """``current``: the tenant being changed, whose data must stay inside its regions (None: a new tenant,
        placed in a location inside them when there is one)."""
        known = None if self.known_regions is None else self.known_regions()
        if current is not None:
            kept = current.storage_region or self.storage_region
            return check_allowed_regions(value, known, [kept] if kept else [], moved_by=current.id)
        return check_allowed_regions(value, known, self.storage_regions)

    def _models(self, value: Any) -> list[str] | None:
        models = _check_models(value)
        unknown = set(models or ()) - self.known_models()
        if unknown:
            raise InvalidRequest(f"unknown model(s) in allowed_models: {', '.join(sorted(unknown))}",
                                 param="allowed_models")
        return models

    def _aliases(self, value: Any) -> dict[str, str]:
        aliases = _check_aliases(value)
        unknown = set(aliases.values()) - self.known_models()
        if unknown:
            raise InvalidRequest(f"model_aliases point at unknown model(s): {', '.join(sorted(unknown))}",
                                 param="model_aliases")
        return aliases

    # --- keys -------------------------------------------------------------------------------------------------
    async def create_key(self, *, tenant_id: str, body: dict[str, Any], actor: str) -> CreatedKey:
        await self.get_tenant(tenant_id=tenant_id)
        name = _check_name(body.get("name", "key"), "name")
        try:
            role = Role(body.get("role", "member"))
        except ValueError:
            raise InvalidRequest("role must be 'admin', 'member' or 'viewer'", param="role") from None
        scopes = self._scopes(body.get("scopes"))
        expires_at = self._expiry(body.get("expires_at"), body.get("expires_in_s"))
        key_id = keys.new_key_id()
        token = keys.make_token(keys.TENANT_PREFIX, key_id)
        key = ApiKey(id=keys.public_key_id(key_id), tenant_id=tenant_id, name=name, role=role, scopes=scopes,
                     secret_hash=keys.hash_token(token), hint=keys.hint(token), created_at=self.clock(),
                     expires_at=expires_at, revoked_at=None, last_used_at=None)
        await self.store.insert_key(tenant_id=tenant_id, key=key)
        self.auth.key_created("tenant", key.id)
        await self._audit(actor, "key.created", tenant_id, key_id=key.id, role=role.value, scopes=scopes,
                          expires_at=expires_at)
        return CreatedKey(key=key, secret=token)

    @staticmethod
    def _scopes(value: Any) -> list[str] | None:
        if value is None:
            return None
        valid = {p.value for p in Permission}
        if not isinstance(value, list) or not all(isinstance(s, str) and s in valid for s in value):
            raise InvalidRequest(f"scopes must be a list drawn from {sorted(valid)}", param="scopes")
        return sorted(set(value))

    def _expiry(self, at: Any, in_s: Any) -> float | None:
        if at is not None and in_s is not None:
            raise InvalidRequest("give expires_at or expires_in_s, not both", param="expires_at")
        if in_s is not None:
            if not isinstance(in_s, int | float) or isinstance(in_s, bool) or in_s <= 0:
                raise InvalidRequest("expires_in_s must be a positive number of seconds", param="expires_in_s")
            return self.clock() + float(in_s)
        if at is not None:
            if not isinstance(at, int | float) or isinstance(at, bool) or at <= self.clock():
                raise InvalidRequest("expires_at must be a unix time in the future", param="expires_at")
            return float(at)
        return None

    async def list_keys(self, *, tenant_id: str) -> list[ApiKey]:
        await self.get_tenant(tenant_id=tenant_id)
        return await self.store.list_keys(tenant_id=tenant_id)

    async def get_key(self, *, tenant_id: str, key_id: str) -> ApiKey:
        key = await self.store.get_key(tenant_id=tenant_id, key_id=key_id)
        if key is None:
            raise NotFound(f"no key {key_id!r}", param="key_id")
        return key

    async def revoke_key(self, *, tenant_id: str, key_id: str, actor: str) -> ApiKey:
        key = await self.store.revoke_key(tenant_id=tenant_id, key_id=key_id, at=self.clock())
        if key is None:
            raise NotFound(f"no key {key_id!r}", param="key_id")
        self.auth.invalidate_key(key_id)
        await self._audit(actor, "key.revoked", tenant_id, key_id=key_id)
        return key

    # --- platform keys --------------------------------------------------------------------------------------
    async def ensure_admin_key(self) -> str | None:
        """At first start with no ``TENANTLM_ADMIN_KEY``, make one admin key and return its secret (shown once)."""
        if self.auth.has_bootstrap_key or await self.store.platform_count_admin_keys() > 0:
            return None
        return (await self._new_platform_key("bootstrap", PlatformRole.ADMIN)).secret

    async def create_platform_key(self, *, name: str, role: PlatformRole, actor: str) -> CreatedPlatformKey:
        created = await self._new_platform_key(_check_name(name, "name"), role)
        await self._audit(actor, "platform_key.created", None, key_id=created.key.id, role=role.value)
        return created

    async def list_platform_keys(self) -> list[AdminKey]:
        return await self.store.platform_list_admin_keys()

    async def revoke_platform_key(self, *, key_id: str, actor: str) -> AdminKey:
        """Revoked here at once; other replicas refuse it within the key cache's TTL."""
        key = await self.store.platform_revoke_admin_key(key_id=key_id, at=self.clock())
        if key is None:
            raise NotFound(f"no platform key {key_id!r}", param="key_id")
        self.auth.invalidate_key(key_id)
        await self._audit(actor, "platform_key.revoked", None, key_id=key_id, role=key.role.value)
        return key

    async def _new_platform_key(self, name: str, role: PlatformRole) -> CreatedPlatformKey:
        key_id = keys.new_key_id()
        token = keys.make_token(keys.ADMIN_PREFIX, key_id)
        key = AdminKey(id=keys.public_key_id(key_id), name=name, role=role, secret_hash=keys.hash_token(token),
                       hint=keys.hint(token), created_at=self.clock(), revoked_at=None)
        await self.store.platform_insert_admin_key(key)
        self.auth.key_created("admin", key.id)
        return CreatedPlatformKey(key=key, secret=token)


@dataclass(frozen=True, slots=True)
class CreatedPlatformKey:
    """A platform key just made; ``secret`` is returned to the caller once and never stored."""

    key: AdminKey
    secret: str

    def public(self) -> dict[str, Any]:
        return {**self.key.public(), "key": self.secret}
