"""Authentication: an API key in, a principal out, with no database round trip per request.

Resolved keys are cached per key id for ``ttl_s`` (default 1 s). A fresh entry is served from memory; a stale one is
reloaded once (concurrent requests for the same key share the reload). Revocation and tenant changes made through this
process drop the entry at once; those made by another replica are seen when the entry goes stale, so within one TTL.
Last-use times are gathered in memory and written in batches by ``flush``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from tenantlm.errors import AuthenticationFailed, TenantSuspended
from tenantlm.tenancy import keys
from tenantlm.tenancy.models import (
    AdminKey,
    ApiKey,
    PlatformPrincipal,
    Principal,
    Tenant,
    TenantContext,
    TenantStatus,
    effective_permissions,
)
from tenantlm.tenancy.store import TenancyStore

_INVALID = "Incorrect API key provided. You can find your API key in your TenantLM tenant's key settings."
BOOTSTRAP_ADMIN_ID = "key_bootstrap"


@dataclass(slots=True)
class _Entry:
    fetched_at: float
    key: ApiKey | AdminKey | None
    tenant: Tenant | None


class Authenticator:
    def __init__(self, *, store: TenancyStore, ttl_s: float = 1.0, bootstrap_admin_key: str | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.clock = clock
        self.wall = wall
        self._bootstrap = keys.hash_token(bootstrap_admin_key) if bootstrap_admin_key else None
        self._cache: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Future[_Entry]] = {}
        self._used: dict[str, float] = {}

    @property
    def has_bootstrap_key(self) -> bool:
        return self._bootstrap is not None

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an Authorization header. Every failure is the same 401 to the caller; the
        exception carries ``reason``, ``key_id`` and ``tenant_id`` for the audit trail."""
        return await self._authenticate(authorization)

    async def _authenticate(self, authorization: str | None) -> Principal:
        token = _bearer(authorization)
        digest = keys.hash_token(token)  # once: compared with the bootstrap key's hash and the stored one
        if self._bootstrap is not None and keys.matches(digest, self._bootstrap):
            return PlatformPrincipal(key_id=BOOTSTRAP_ADMIN_ID)
        parsed = keys.parse(token)
        if parsed is None:
            raise _failed("malformed_key")
        entry = await self._entry(parsed)
        key_id = keys.public_key_id(parsed.key_id)
        if entry.key is None:
            raise _failed("unknown_key", key_id)
        tenant_id = entry.tenant.id if entry.tenant is not None else None
        if not keys.matches(digest, entry.key.secret_hash):
            raise _failed("wrong_secret", key_id, tenant_id)
        if isinstance(entry.key, AdminKey):
            if entry.key.revoked_at is not None:
                raise _failed("revoked", key_id)
            return PlatformPrincipal(key_id=entry.key.id)
        return self._tenant_context(entry.key, entry.tenant)

    def _tenant_context(self, key: ApiKey, tenant: Tenant | None) -> TenantContext:
        if tenant is None:
            raise _failed("unknown_key", key.id)
        now = self.wall()
        if not key.usable_at(now):
            raise _failed("revoked" if key.revoked_at is not None else "expired", key.id, tenant.id)
        if tenant.status is not TenantStatus.ACTIVE:
            raise TenantSuspended("this tenant is suspended; contact the platform operator")
        self._used[key.id] = now
        return TenantContext(tenant=tenant, key_id=key.id, role=key.role,
                             permissions=effective_permissions(key.role, key.scopes), key_limits=key.limits)

    async def _entry(self, parsed: keys.ParsedKey) -> _Entry:
        cache_id = keys.public_key_id(parsed.key_id)
        entry = self._cache.get(cache_id)
        if entry is not None and self.clock() - entry.fetched_at < self.ttl_s:
            return entry
        pending = self._loading.get(cache_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._loading[cache_id] = fut
        try:
            entry = await self._load(parsed.kind, cache_id)
            self._cache[cache_id] = entry
            fut.set_result(entry)
            return entry
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved so a lone waiter-less failure does not warn
            raise
        finally:
            del self._loading[cache_id]

    async def _load(self, kind: str, key_id: str) -> _Entry:
        now = self.clock()
        if kind == "admin":
            return _Entry(now, await self.store.platform_admin_key(key_id=key_id), None)
        found = await self.store.platform_key_for_auth(key_id=key_id)
        if found is None:
            return _Entry(now, None, None)
        return _Entry(now, found[0], found[1])

    def invalidate_key(self, key_id: str) -> None:
        self._cache.pop(key_id, None)

    def invalidate_tenant(self, tenant_id: str) -> None:
        for key_id, entry in list(self._cache.items()):
            if entry.tenant is not None and entry.tenant.id == tenant_id:
                self._cache.pop(key_id, None)

    async def flush(self) -> None:
        used, self._used = self._used, {}
        await self.store.platform_touch_keys(used)


def _failed(reason: str, key_id: str | None = None, tenant_id: str | None = None) -> AuthenticationFailed:
    """The one message every bad key gets (no oracle), carrying the reason for the audit trail only."""
    return AuthenticationFailed(_INVALID, reason=reason, key_id=key_id, tenant_id=tenant_id)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it in the Authorization header as 'Bearer tlm_...'.",
            code="missing_api_key")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("The Authorization header must be 'Bearer <API key>'.", code="missing_api_key")
    return token.strip()
