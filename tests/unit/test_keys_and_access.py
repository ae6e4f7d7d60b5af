"""Key format, hashing, parsing; role permissions and the access rules."""

from __future__ import annotations

import time

import pytest

from tenantlm.errors import NotFound, PermissionDenied
from tenantlm.tenancy import access, keys
from tenantlm.tenancy.models import (
    Permission,
    PlatformPermission,
    PlatformPrincipal,
    PlatformRole,
    Role,
    Tenant,
    TenantContext,
    TenantStatus,
    effective_permissions,
)


def test_tokens_are_random_parseable_and_verified_by_hash() -> None:
    key_id = keys.new_key_id()
    token = keys.make_token(keys.TENANT_PREFIX, key_id)
    other = keys.make_token(keys.TENANT_PREFIX, key_id)
    assert token != other and token.startswith("tlm_") and len(token) == 4 + 16 + 43
    parsed = keys.parse(token)
    assert parsed is not None and parsed.kind == "tenant" and parsed.key_id == key_id
    stored = keys.hash_token(token)
    assert len(stored) == 32 and token.encode() not in stored
    assert keys.matches(keys.hash_token(token), stored) and not keys.matches(keys.hash_token(other), stored)
    admin = keys.make_token(keys.ADMIN_PREFIX, key_id)
    assert keys.parse(admin).kind == "admin"  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["", "tlm_", "sk-abc", "tlm_" + "g" * 16 + "a" * 43, "tlm_" + "a" * 16 + "!" * 43,
                                 "tlm_" + "a" * 58, "tlm_" + "a" * 60, "tlmadmin_short"])
def test_malformed_tokens_are_rejected_before_storage(bad: str) -> None:
    assert keys.parse(bad) is None


def test_role_permissions() -> None:
    assert effective_permissions(Role.ADMIN, None) == frozenset(Permission)
    member = effective_permissions(Role.MEMBER, None)
    assert Permission.INFERENCE in member and Permission.KEYS_WRITE not in member
    viewer = effective_permissions(Role.VIEWER, None)
    assert Permission.INFERENCE not in viewer and Permission.MODELS_READ in viewer
    narrowed = effective_permissions(Role.ADMIN, ["inference"])
    assert narrowed == frozenset({Permission.INFERENCE})
    assert effective_permissions(Role.VIEWER, ["inference"]) == frozenset()  # scopes never widen a role


def _ctx(tenant_id: str, role: Role, scopes: list[str] | None = None) -> TenantContext:
    t = Tenant(id=tenant_id, name="t", status=TenantStatus.ACTIVE, plan="free", region="local", metadata={},
               settings={}, allowed_models=None, model_aliases={}, created_at=time.time(), updated_at=time.time())
    return TenantContext(tenant=t, key_id="key_x", role=role, permissions=effective_permissions(role, scopes))


def test_foreign_tenant_is_404_and_missing_right_is_403() -> None:
    admin = _ctx("ten_a", Role.ADMIN)
    access.on_tenant(admin, "ten_a", Permission.KEYS_WRITE)
    with pytest.raises(NotFound):
        access.on_tenant(admin, "ten_b", Permission.TENANT_READ)
    member = _ctx("ten_a", Role.MEMBER)
    with pytest.raises(PermissionDenied):
        access.on_tenant(member, "ten_a", Permission.KEYS_READ)
    with pytest.raises(NotFound):  # no oracle: the foreign id answers like a missing one, even without rights
        access.on_tenant(member, "ten_b", Permission.KEYS_READ)
    access.on_tenant(PlatformPrincipal(key_id="key_p"), "ten_b", Permission.KEYS_WRITE)


def test_data_plane_rules() -> None:
    with pytest.raises(PermissionDenied):
        access.data_plane(PlatformPrincipal(key_id="key_p"), Permission.INFERENCE)
    with pytest.raises(PermissionDenied):
        access.data_plane(_ctx("ten_a", Role.VIEWER), Permission.INFERENCE)
    assert access.data_plane(_ctx("ten_a", Role.MEMBER), Permission.INFERENCE).tenant_id == "ten_a"
    with pytest.raises(PermissionDenied):
        access.platform_only(_ctx("ten_a", Role.ADMIN), PlatformPermission.TENANTS_CREATE)


@pytest.mark.parametrize("role, allowed, refused", [
    (PlatformRole.ADMIN, [Permission.KEYS_WRITE, Permission.LOGS_READ, PlatformPermission.PLATFORM_KEYS_WRITE], []),
    (PlatformRole.AUDITOR, [Permission.AUDIT_READ, Permission.USAGE_READ, PlatformPermission.AUDIT_ALL],
     [Permission.LOGS_READ, Permission.DATA_EXPORT, Permission.TENANT_WRITE, PlatformPermission.TENANTS_CREATE,
      PlatformPermission.PLATFORM_KEYS_WRITE]),
    (PlatformRole.BILLING, [Permission.USAGE_READ, PlatformPermission.USAGE_ALL],
     [Permission.AUDIT_READ, Permission.KEYS_READ, PlatformPermission.AUDIT_ALL, PlatformPermission.METRICS_READ]),
])
def test_platform_roles(role: PlatformRole, allowed: list[Permission | PlatformPermission],
                        refused: list[Permission | PlatformPermission]) -> None:
    who = PlatformPrincipal(key_id="key_p", role=role)
    for grant in allowed:
        check(who, grant)
    for grant in refused:
        with pytest.raises(PermissionDenied, match=f"role \\({role.value}\\)"):
            check(who, grant)


def check(who: PlatformPrincipal, grant: Permission | PlatformPermission) -> None:
    if isinstance(grant, PlatformPermission):
        access.platform_only(who, grant)
    else:
        access.on_tenant(who, "ten_any", grant)


def test_a_403_names_the_scopes_when_the_role_would_allow_it() -> None:
    narrowed = _ctx("ten_a", Role.ADMIN, scopes=["models:read"])
    with pytest.raises(PermissionDenied) as by_scope:
        access.on_tenant(narrowed, "ten_a", Permission.KEYS_WRITE)
    assert "scopes do not include keys:write" in by_scope.value.message
    assert "role (" not in by_scope.value.message
    with pytest.raises(PermissionDenied) as by_scope_data:
        access.data_plane(_ctx("ten_a", Role.MEMBER, scopes=["models:read"]), Permission.INFERENCE)
    assert "scopes do not include inference" in by_scope_data.value.message


def test_a_403_names_the_role_when_the_role_does_not_grant_it() -> None:
    with pytest.raises(PermissionDenied) as by_role:
        access.on_tenant(_ctx("ten_a", Role.MEMBER), "ten_a", Permission.KEYS_WRITE)
    assert by_role.value.message == "this key's role (member) does not grant keys:write"
    # scopes never widen a role, and the message still blames the role, not the scopes
    with pytest.raises(PermissionDenied) as scoped_but_role:
        access.data_plane(_ctx("ten_a", Role.VIEWER, scopes=["inference"]), Permission.INFERENCE)
    assert scoped_but_role.value.message == "this key's role (viewer) does not grant inference"
