"""Authentication: an API key in, a principal out, with no database round trip per request.

Resolved keys are cached per (kind, key id) for ``ttl_s`` (default 1 s) in the server's bounded single-flight cache
(``tenantlm.cache``): a fresh entry is served from memory, a stale one is reloaded once for all concurrent requests.
Revocation and tenant changes made through this process drop the entry at once; those made by another replica are
seen when the entry goes stale, so within one TTL.

The kind (tenant key ``tlm_`` or platform key ``tlmadmin_``) is part of the cache key: a key of one kind can never
stand in for, or poison the cached entry of, a key of the other kind that happens to share its id.

A key id that was never issued costs no database lookup: ``KnownKeys`` holds the id of every stored key (refreshed
incrementally, at most once per ``min_refresh_s`` however many unknown ids arrive), and an id it does not hold is
refused from memory. So a client sending endless random well-formed keys costs bounded memory (the cache has a size
bound) and a bounded number of database reads. Last-use times are gathered in memory and written in batches by
``flush``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from tenantlm.cache import TtlCache
from tenantlm.errors import AuthenticationFailed, TenantSuspended
from tenantlm.tenancy import keys
from tenantlm.tenancy.keys import KeyKind
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
KEY_OVERLAP_S = 300.0  # an incremental refresh re-reads keys this much older than the newest seen (replica clocks)
FULL_REFRESH_S = 600.0  # and a full one this often, which also forgets the ids of deleted keys


@dataclass(frozen=True, slots=True)
class _Entry:
    key: ApiKey | AdminKey | None
    tenant: Tenant | None


@dataclass(slots=True)
class AuthStats:
    """Database reads made by authentication: key records loaded, and refreshes of the known-key index."""

    key_loads: int = 0
    index_refreshes: int = 0


class KnownKeys:
    """The ids of every stored key, by kind, so that authentication refuses an id nobody issued without asking the
    database. Keys made by this process are added at once; keys made by another replica are found by a refresh,
    which a miss triggers: the request waits for a refresh that began after it arrived (so a key created a moment
    ago elsewhere is found), and refreshes start at most once per ``min_refresh_s``, whatever the rate of misses."""

    def __init__(self, *, store: TenancyStore, stats: AuthStats, min_refresh_s: float = 0.1,
                 wall: Callable[[], float] = time.time, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.stats = stats
        self.min_refresh_s = min_refresh_s
        self.wall = wall
        self.clock = clock
        self._ids: set[tuple[KeyKind, str]] = set()
        self._newest = 0.0  # created_at of the newest key seen
        self._started_at = float("-inf")  # when the last refresh began (clock)
        self._full_at = float("-inf")
        self._refresh: asyncio.Task[None] | None = None

    def add(self, kind: KeyKind, key_id: str) -> None:
        self._ids.add((kind, key_id))

    async def contains(self, kind: KeyKind, key_id: str) -> bool:
        if (kind, key_id) in self._ids:
            return True
        arrived = self.clock()
        while self._started_at < arrived:
            if self._refresh is None:
                self._refresh = asyncio.ensure_future(self._run())
            await asyncio.shield(self._refresh)
        return (kind, key_id) in self._ids

    async def _run(self) -> None:
        try:
            wait = self._started_at + self.min_refresh_s - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            self._started_at = self.clock()
            await self._load()
        finally:
            self._refresh = None

    async def _load(self) -> None:
        self.stats.index_refreshes += 1
        full = self._started_at - self._full_at >= FULL_REFRESH_S
        rows = await self.store.platform_key_ids(created_since=None if full else self._newest - KEY_OVERLAP_S)
        found = {(kind, key_id) for kind, key_id, _ in rows}
        if full:
            self._ids = found
            self._full_at = self._started_at
        else:
            self._ids |= found
        self._newest = max([self._newest, *(created for _, _, created in rows)])


class Authenticator:
    def __init__(self, *, store: TenancyStore, ttl_s: float = 1.0, max_entries: int = 100_000,
                 bootstrap_admin_key: str | None = None, min_refresh_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.wall = wall
        self.stats = AuthStats()
        self._bootstrap = keys.hash_token(bootstrap_admin_key) if bootstrap_admin_key else None
        self._cache: TtlCache[tuple[KeyKind, str], _Entry] = TtlCache(ttl_s=ttl_s, clock=clock,
                                                                       max_entries=max_entries)
        self.known = KnownKeys(store=store, stats=self.stats, min_refresh_s=min_refresh_s, wall=wall, clock=clock)
        self._used: dict[str, float] = {}

    @property
    def has_bootstrap_key(self) -> bool:
        return self._bootstrap is not None

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an Authorization header. Every failure is the same 401 to the caller; the
        exception carries ``reason``, ``key_id`` and ``tenant_id`` for the audit trail."""
        token = _bearer(authorization)
        digest = keys.hash_token(token)  # once: compared with the bootstrap key's hash and the stored one
        if self._bootstrap is not None and keys.matches(digest, self._bootstrap):
            return PlatformPrincipal(key_id=BOOTSTRAP_ADMIN_ID)
        parsed = keys.parse(token)
        if parsed is None:
            raise _failed("malformed_key")
        key_id = keys.public_key_id(parsed.key_id)
        entry = await self._entry(parsed.kind, key_id)
        if entry.key is None:
            raise _failed("unknown_key", key_id)
        tenant_id = entry.tenant.id if entry.tenant is not None else None
        if not keys.matches(digest, entry.key.secret_hash):
            raise _failed("wrong_secret", key_id, tenant_id)
        if isinstance(entry.key, AdminKey):
            if entry.key.revoked_at is not None:
                raise _failed("revoked", key_id)
            self._used[entry.key.id] = self.wall()
            return PlatformPrincipal(key_id=entry.key.id, role=entry.key.role)
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

    async def _entry(self, kind: KeyKind, key_id: str) -> _Entry:
        hit = self._cache.get((kind, key_id))
        if hit is not None:
            return hit
        if not await self.known.contains(kind, key_id):
            return _Entry(None, None)  # never issued: refused without a database read, and nothing is cached
        return await self._cache.get_or_load((kind, key_id), lambda: self._load(kind, key_id))

    async def _load(self, kind: KeyKind, key_id: str) -> _Entry:
        self.stats.key_loads += 1
        if kind == "admin":
            return _Entry(await self.store.platform_admin_key(key_id=key_id), None)
        found = await self.store.platform_key_for_auth(key_id=key_id)
        return _Entry(None, None) if found is None else _Entry(found[0], found[1])

    def key_created(self, kind: KeyKind, key_id: str) -> None:
        """A key this process just stored: usable at once, without waiting for a refresh of the known ids."""
        self.known.add(kind, key_id)

    def invalidate_key(self, key_id: str) -> None:
        self._cache.evict(lambda cached, _entry: cached[1] == key_id)

    def invalidate_tenant(self, tenant_id: str) -> None:
        self._cache.evict(lambda _key, entry: entry.tenant is not None and entry.tenant.id == tenant_id)

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
