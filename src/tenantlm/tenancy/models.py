"""Domain objects of tenancy: tenants, keys, roles, and the TenantContext every request carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TenantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


class PlatformRole(StrEnum):
    """What a platform key may do: everything (``admin``), read everything but tenant content (``auditor``), or
    read usage and export bills (``billing``)."""

    ADMIN = "admin"
    AUDITOR = "auditor"
    BILLING = "billing"


class Permission(StrEnum):
    MODELS_READ = "models:read"
    INFERENCE = "inference"
    TENANT_READ = "tenant:read"
    TENANT_WRITE = "tenant:write"
    KEYS_READ = "keys:read"
    KEYS_WRITE = "keys:write"
    LOGS_READ = "logs:read"
    DATA_EXPORT = "data:export"
    ENCRYPTION_MANAGE = "encryption:manage"
    AUDIT_READ = "audit:read"
    LIMITS_READ = "limits:read"
    LIMITS_WRITE = "limits:write"
    USAGE_READ = "usage:read"
    KNOWLEDGE_READ = "knowledge:read"  # list, read and search files and vector stores
    KNOWLEDGE_WRITE = "knowledge:write"  # upload, attach, change and delete them
    END_USER_DATA = "end_users:data"  # an end user's personal data: memories, export, erasure (admin keys)
    CONVERSATIONS_READ = "conversations:read"  # read conversations and their items
    CONVERSATIONS_WRITE = "conversations:write"  # create, change, end and delete them


class PlatformPermission(StrEnum):
    """What only platform keys do: act across tenants, or on the platform itself."""

    TENANTS_LIST = "tenants:list"
    TENANTS_CREATE = "tenants:create"
    TENANTS_DELETE = "tenants:delete"
    TENANTS_TIER = "tenants:tier"  # move a tenant between the pool and its own silo database
    PLANS_READ = "plans:read"
    PLANS_WRITE = "plans:write"
    CATALOG_READ = "catalog:read"
    USAGE_ALL = "usage:all"  # every tenant's usage at once, and its exports
    AUDIT_ALL = "audit:all"  # the platform's whole audit trail
    PLATFORM_KEYS_READ = "platform_keys:read"
    PLATFORM_KEYS_WRITE = "platform_keys:write"
    METRICS_READ = "metrics:read"
    PROMPTS_READ = "prompts:read"  # the platform's base prompts
    PROMPTS_WRITE = "prompts:write"


Grant = Permission | PlatformPermission

# A platform key's rights on any tenant (Permission) and on the platform (PlatformPermission). An auditor reads
# everything but tenant content (request logs, exports) and key material; billing reads usage and exports it.
PLATFORM_ROLE_GRANTS: dict[PlatformRole, frozenset[Grant]] = {
    PlatformRole.ADMIN: frozenset(Permission) | frozenset(PlatformPermission),
    PlatformRole.AUDITOR: frozenset({
        Permission.TENANT_READ, Permission.KEYS_READ, Permission.LIMITS_READ, Permission.USAGE_READ,
        Permission.AUDIT_READ, PlatformPermission.TENANTS_LIST, PlatformPermission.PLANS_READ,
        PlatformPermission.CATALOG_READ, PlatformPermission.USAGE_ALL, PlatformPermission.AUDIT_ALL,
        PlatformPermission.PLATFORM_KEYS_READ, PlatformPermission.METRICS_READ, PlatformPermission.PROMPTS_READ}),
    PlatformRole.BILLING: frozenset({
        Permission.TENANT_READ, Permission.USAGE_READ, PlatformPermission.TENANTS_LIST,
        PlatformPermission.PLANS_READ, PlatformPermission.USAGE_ALL}),
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.MEMBER: frozenset({Permission.MODELS_READ, Permission.INFERENCE, Permission.TENANT_READ,
                            Permission.KNOWLEDGE_READ, Permission.KNOWLEDGE_WRITE, Permission.CONVERSATIONS_READ,
                            Permission.CONVERSATIONS_WRITE}),
    Role.VIEWER: frozenset({Permission.MODELS_READ, Permission.TENANT_READ, Permission.KEYS_READ,
                            Permission.LIMITS_READ, Permission.KNOWLEDGE_READ, Permission.CONVERSATIONS_READ}),
}


def effective_permissions(role: Role, scopes: list[str] | None) -> frozenset[Permission]:
    """A key's rights: its role's permissions, narrowed to ``scopes`` when the key was given any."""
    granted = ROLE_PERMISSIONS[role]
    if scopes is None:
        return granted
    return granted & frozenset(Permission(s) for s in scopes)


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    status: TenantStatus
    plan: str
    region: str
    metadata: dict[str, Any]
    settings: dict[str, Any]
    allowed_models: list[str] | None
    model_aliases: dict[str, str]
    created_at: float
    updated_at: float
    billing: dict[str, Any] = field(default_factory=dict)  # the operator's billing identifiers; platform-only
    # Regions whose model deployments may serve this tenant (None: any); enforced by tenancy.residency.
    allowed_regions: list[str] | None = None
    tier: str = "pool"  # where its content lives: "pool" (shared tables) or "silo" (its own database)
    reserved_share: float | None = None  # a silo tenant's reserved share of every model's capacity
    # The storage location (named by its region) that keeps its content; None: the home database.
    storage_region: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "tenant",
            "name": self.name,
            "status": self.status.value,
            "plan": self.plan,
            "region": self.region,
            "allowed_regions": self.allowed_regions,
            "metadata": self.metadata,
            "settings": self.settings,
            "allowed_models": self.allowed_models,
            "model_aliases": self.model_aliases,
            "billing": self.billing,
            "tier": self.tier,
            "reserved_share": self.reserved_share,
            "storage_region": self.storage_region,
            "created_at": int(self.created_at),
            "updated_at": int(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    tenant_id: str
    name: str
    role: Role
    scopes: list[str] | None
    secret_hash: bytes
    hint: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    limits: dict[str, Any] | None = None  # sub-limits inside the tenant's (tenancy.limits.SubLimits fields)

    def usable_at(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "api_key",
            "tenant_id": self.tenant_id,
            "name": self.name,
            "role": self.role.value,
            "scopes": self.scopes,
            "hint": self.hint,
            "created_at": int(self.created_at),
            "expires_at": None if self.expires_at is None else int(self.expires_at),
            "revoked_at": None if self.revoked_at is None else int(self.revoked_at),
            "last_used_at": None if self.last_used_at is None else int(self.last_used_at),
            "limits": self.limits,
        }


@dataclass(frozen=True, slots=True)
class AdminKey:
    """A platform key (``tlmadmin_...``): acts on the admin API across tenants, within its role."""

    id: str
    name: str
    role: PlatformRole
    secret_hash: bytes
    hint: str
    created_at: float
    revoked_at: float | None
    last_used_at: float | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "platform_key",
            "name": self.name,
            "role": self.role.value,
            "hint": self.hint,
            "created_at": int(self.created_at),
            "revoked_at": None if self.revoked_at is None else int(self.revoked_at),
            "last_used_at": None if self.last_used_at is None else int(self.last_used_at),
        }


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who is calling: resolved only from the authenticated key, never from anything else in the request."""

    tenant: Tenant
    key_id: str
    role: Role
    permissions: frozenset[Permission]
    end_user: str | None = None
    key_limits: dict[str, Any] | None = None

    @property
    def tenant_id(self) -> str:
        return self.tenant.id


@dataclass(frozen=True, slots=True)
class PlatformPrincipal:
    """A platform key: acts across tenants within its role, has no data-plane tenant."""

    key_id: str
    role: PlatformRole = PlatformRole.ADMIN


Principal = TenantContext | PlatformPrincipal


@dataclass(slots=True)
class CreatedKey:
    """A key just made; ``secret`` is returned to the caller once and never stored."""

    key: ApiKey
    secret: str
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {**self.key.public(), "key": self.secret}
