"""Authorization: what a principal may do to which tenant. Routes call these; they never compare tenant ids
themselves.

Rules: a platform admin key may do everything on the admin API and nothing on the data plane. A tenant key acts only
on its own tenant; any other tenant id is answered exactly like a missing one (404), so ids cannot be probed.
Lacking a permission on its own tenant is a 403.
"""

from __future__ import annotations

from tenantlm.errors import NotFound, PermissionDenied
from tenantlm.tenancy.models import Permission, PlatformPrincipal, Principal, TenantContext


def data_plane(principal: Principal, permission: Permission) -> TenantContext:
    if isinstance(principal, PlatformPrincipal):
        raise PermissionDenied("platform admin keys manage tenants; call the data plane with a tenant's key")
    if permission not in principal.permissions:
        raise PermissionDenied(f"this key's role ({principal.role.value}) may not use {permission.value}")
    return principal


def on_tenant(principal: Principal, tenant_id: str, permission: Permission) -> None:
    """Allow ``principal`` to exercise ``permission`` on ``tenant_id``, or raise 404/403."""
    if isinstance(principal, PlatformPrincipal):
        return
    if principal.tenant_id != tenant_id:
        raise NotFound(f"no tenant {tenant_id!r}", param="tenant_id")
    if permission not in principal.permissions:
        raise PermissionDenied(f"this key's role ({principal.role.value}) may not use {permission.value}")


def platform_only(principal: Principal, action: str) -> PlatformPrincipal:
    if not isinstance(principal, PlatformPrincipal):
        raise PermissionDenied(f"only a platform admin key may {action}")
    return principal


def actor(principal: Principal) -> str:
    """How the audit trail names whoever acted: ``platform:<key id>`` or ``tenant:<tenant id>:<key id>``."""
    if isinstance(principal, PlatformPrincipal):
        return f"platform:{principal.key_id}"
    return f"tenant:{principal.tenant_id}:{principal.key_id}"
