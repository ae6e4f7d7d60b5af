"""Authorization: what a principal may do to which tenant. Routes call these; they never compare tenant ids
themselves.

Rules: a platform key acts on every tenant and on the platform within its role (``PLATFORM_ROLE_GRANTS``: admin
everything, auditor read-only without tenant content, billing usage and exports) and never on the data plane. A tenant
key acts only on its own tenant; any other tenant id is answered exactly like a missing one (404), so ids cannot be
probed. Lacking a permission is a 403 whose message says why: the key's role does not grant it, or the role does
but the key was issued with scopes that leave it out.
"""

from __future__ import annotations

from tenantlm.errors import NotFound, PermissionDenied
from tenantlm.tenancy.models import (
    PLATFORM_ROLE_GRANTS,
    ROLE_PERMISSIONS,
    Permission,
    PlatformPermission,
    PlatformPrincipal,
    Principal,
    TenantContext,
)


def data_plane(principal: Principal, permission: Permission) -> TenantContext:
    if isinstance(principal, PlatformPrincipal):
        raise PermissionDenied("platform keys manage tenants; call the data plane with a tenant's key")
    _require(principal, permission)
    return principal


def on_tenant(principal: Principal, tenant_id: str, permission: Permission) -> None:
    """Allow ``principal`` to exercise ``permission`` on ``tenant_id``, or raise 404/403."""
    if isinstance(principal, PlatformPrincipal):
        _platform_grant(principal, permission)
        return
    if principal.tenant_id != tenant_id:
        raise NotFound(f"no tenant {tenant_id!r}", param="tenant_id")
    _require(principal, permission)


def _require(ctx: TenantContext, permission: Permission) -> None:
    """403 unless the key holds ``permission``, naming what withholds it: the role, or the key's scopes."""
    if permission in ctx.permissions:
        return
    if permission in ROLE_PERMISSIONS[ctx.role]:
        raise PermissionDenied(f"this key's scopes do not include {permission.value} (its role, {ctx.role.value}, "
                               f"would allow it); issue a key whose scopes include {permission.value}")
    raise PermissionDenied(f"this key's role ({ctx.role.value}) does not grant {permission.value}")


def platform_only(principal: Principal, permission: PlatformPermission) -> PlatformPrincipal:
    """Allow only a platform key whose role grants ``permission``."""
    if not isinstance(principal, PlatformPrincipal):
        raise PermissionDenied(f"only a platform key may use {permission.value}")
    _platform_grant(principal, permission)
    return principal


def _platform_grant(principal: PlatformPrincipal, permission: Permission | PlatformPermission) -> None:
    if permission not in PLATFORM_ROLE_GRANTS[principal.role]:
        raise PermissionDenied(f"this platform key's role ({principal.role.value}) does not grant "
                               f"{permission.value}")


def actor(principal: Principal) -> str:
    """How the audit trail names whoever acted: ``platform:<key id>`` or ``tenant:<tenant id>:<key id>``."""
    if isinstance(principal, PlatformPrincipal):
        return f"platform:{principal.key_id}"
    return f"tenant:{principal.tenant_id}:{principal.key_id}"
