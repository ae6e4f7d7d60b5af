"""Where a tenant's content lives: the pool (shared tables, the default) or the tenant's own silo database.

``TenantRouter`` is a ``Database`` whose ``tenant_tx(tenant_id=...)`` opens the transaction on the tenant's silo when
it has one, else on the pool. Content stores (request log, files, vector stores, responses) are handed a router
instead of the pool ``Database``; nothing else in them changes, because ``tenant_tx`` was already the only door to a
tenant's rows. The control plane (tenants, keys, limits, data keys, audit, usage ledger) keeps the pool ``Database``.

Every ``tenant_tx`` of the router first passes the tenant's ``TenantFence``. A move closes the fence for its last
delta copy and the switch: new transactions of that tenant wait (they do not fail), the ones in flight finish, the
move copies what changed, flips the route, and opens the fence; the waiters then run on the new database.

Besides silos, a tenant may be routed to the pool of another storage location (a database in another region, when
the operator configures several: ``tiers/locations.py``); a silo then lives in that location too.

``platform_each()`` opens one platform transaction per database (the home pool, the other locations' pools, then
each silo) for the sweeps that look across tenants (retention, expired files, the ingestion queue).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tenantlm.errors import ServiceUnavailable
from tenantlm.storage.sql.engine import Database

# Tenants whose fence this task already passed: a transaction opened inside another of the same tenant (same task)
# must not wait for a fence that waits for the outer one to finish.
_PASSED: ContextVar[frozenset[str]] = ContextVar("tenantlm_fence_passed", default=frozenset())
# Several replicas: the tenants whose placement lock this task holds, and the database their placement named (None:
# the home pool). A transaction opened inside another of the same tenant reuses both (taking the shared lock again
# would queue behind a mover's exclusive request that waits for the outer one: a wait only lock_timeout ends).
_HELD: ContextVar[Mapping[str, Database | None]] = ContextVar("tenantlm_placement_held",
                                                               default=MappingProxyType({}))

# pg_advisory_xact_lock(key1, key2): the first key names TenantLM's tenant placement locks, the second the tenant.
_LOCK_NAMESPACE = 0x544C4D
# Two statements, not one: a statement reads rows as of its start, so a row read in the statement that waited for
# the lock would be the row from before the move that held it.
_SHARED = sa.text("SELECT pg_advisory_xact_lock_shared(:ns, hashtext(:t))")
_PLACEMENT = sa.text("SELECT tier, storage_region FROM tenants WHERE id = :t")
_EXCLUSIVE = sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext(:t))")
_LOCK_NOT_AVAILABLE = "55P03"


class PlacementResolver(Protocol):
    """Turns a tenant's placement as its row says now into the database to use (None: the home pool)."""

    def resolve(self, tenant_id: str, tier: str, region: str | None) -> Database | None: ...


class FenceTimeout(ServiceUnavailable):
    """The tenant's transactions in flight did not finish in time; the move gives up and opens the fence again."""


class TenantFence:
    """Per tenant: count the transactions in flight, and hold new ones while a move has the fence closed."""

    def __init__(self) -> None:
        self._active: dict[str, int] = {}
        self._closed: dict[str, asyncio.Event] = {}

    def in_flight(self, tenant_id: str) -> int:
        return self._active.get(tenant_id, 0)

    def is_closed(self, tenant_id: str) -> bool:
        return tenant_id in self._closed

    @asynccontextmanager
    async def passage(self, tenant_id: str) -> AsyncIterator[None]:
        passed = _PASSED.get()
        if tenant_id in passed:
            yield
            return
        while (opened := self._closed.get(tenant_id)) is not None:
            await opened.wait()
        self._active[tenant_id] = self._active.get(tenant_id, 0) + 1
        token = _PASSED.set(passed | {tenant_id})
        try:
            yield
        finally:
            _PASSED.reset(token)
            left = self._active[tenant_id] - 1
            if left:
                self._active[tenant_id] = left
            else:
                del self._active[tenant_id]

    @asynccontextmanager
    async def closed(self, tenant_id: str, *, drain_timeout_s: float) -> AsyncIterator[None]:
        """Hold the tenant's new transactions and wait for those in flight; open again on exit, whatever happens."""
        if tenant_id in self._closed:
            raise RuntimeError(f"the fence of {tenant_id} is already closed")
        opened = asyncio.Event()
        self._closed[tenant_id] = opened
        try:
            await self._drain(tenant_id, drain_timeout_s)
            yield
        finally:
            del self._closed[tenant_id]
            opened.set()

    async def _drain(self, tenant_id: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.in_flight(tenant_id):
            if time.monotonic() > deadline:
                raise FenceTimeout(f"tenant {tenant_id} still had transactions in flight after {timeout_s}s")
            await asyncio.sleep(0.002)


class TenantRouter(Database):
    """The home pool ``Database`` plus the other databases tenants are routed to (their silos, the pools of other
    storage locations), chosen per ``tenant_tx``.

    With several replicas on Postgres (``coordinate``), a replica cannot know from memory that another one moved a
    tenant: every routed transaction then first takes the tenant's placement lock in shared mode in the home
    database (``pg_advisory_xact_lock_shared``, held to the end of the transaction), then reads the tenant's tier
    and storage region from its row (two more statements); a move takes the lock in exclusive mode for its last delta
    and the switch (``exclusive``), so transactions of the tenant on every replica wait there, and the ones that
    were in flight finish first. For a tenant in the home pool the lock and the content share one
    transaction; elsewhere the home transaction holding the lock stays open beside the content's."""

    def __init__(self, engine: AsyncEngine, *, locations: Sequence[Database] = ()) -> None:
        super().__init__(engine)
        self.fence = TenantFence()
        self.resolver: PlacementResolver | None = None
        self.locations = list(locations)  # the pools of the other storage locations (for the platform sweeps)
        self._routes: dict[str, Database] = {}
        self._silo_tenants: set[str] = set()

    def route(self, tenant_id: str) -> Database | None:
        """The database of the tenant's content when it is not the home pool."""
        return self._routes.get(tenant_id)

    def silo(self, tenant_id: str) -> Database | None:
        return self._routes.get(tenant_id) if tenant_id in self._silo_tenants else None

    def attach(self, tenant_id: str, db: Database, *, silo: bool = True) -> None:
        """Route the tenant to ``db`` from its next transaction on (call with the fence closed during a move)."""
        self._routes[tenant_id] = db
        if silo:
            self._silo_tenants.add(tenant_id)
        else:
            self._silo_tenants.discard(tenant_id)

    def detach(self, tenant_id: str) -> Database | None:
        """Route the tenant back to the home pool; returns its silo, if it had one (the caller disposes of it)."""
        db = self._routes.pop(tenant_id, None)
        was_silo = tenant_id in self._silo_tenants
        self._silo_tenants.discard(tenant_id)
        return db if was_silo else None

    def pool(self) -> Database:
        """The home pool alone, whatever the routes (the mover's view of the pool)."""
        return Database(self.engine)

    def coordinate(self, resolver: PlacementResolver) -> None:
        """Read every tenant's placement per transaction under its shared placement lock (several replicas)."""
        if not self.is_postgres:
            raise ValueError("placement locks need Postgres")
        self.resolver = resolver

    @asynccontextmanager
    async def tenant_tx(self, *, tenant_id: str) -> AsyncIterator[AsyncConnection]:
        async with self.fence.passage(tenant_id):
            held = _HELD.get()
            if self.resolver is None or tenant_id in held:
                db = held[tenant_id] if tenant_id in held else self._routes.get(tenant_id)
                async with (db.tenant_tx(tenant_id=tenant_id) if db is not None
                            else Database.tenant_tx(self, tenant_id=tenant_id)) as conn:
                    yield conn
                return
            async with Database.tenant_tx(self, tenant_id=tenant_id) as home, self._holding(home, tenant_id) as db:
                if db is None:
                    yield home
                else:
                    async with db.tenant_tx(tenant_id=tenant_id) as conn:
                        yield conn

    @asynccontextmanager
    async def _holding(self, home: AsyncConnection, tenant_id: str) -> AsyncIterator[Database | None]:
        """Take the tenant's placement lock (shared) in ``home`` and resolve its placement as its row says now."""
        assert self.resolver is not None
        await home.execute(_SHARED, {"ns": _LOCK_NAMESPACE, "t": tenant_id})
        row = (await home.execute(_PLACEMENT, {"t": tenant_id})).first()
        db = None if row is None else self.resolver.resolve(tenant_id, row.tier, row.storage_region)
        token = _HELD.set({**_HELD.get(), tenant_id: db})
        try:
            yield db
        finally:
            _HELD.reset(token)

    @asynccontextmanager
    async def tenant_snapshot(self, *, tenant_id: str) -> AsyncIterator[AsyncConnection]:
        async with self.fence.passage(tenant_id):
            held = _HELD.get()
            if self.resolver is None or tenant_id in held:
                where = (held[tenant_id] if tenant_id in held else self._routes.get(tenant_id)) or self.pool()
                async with where.tenant_snapshot(tenant_id=tenant_id) as conn:
                    yield conn
                return
            async with (Database.tenant_tx(self, tenant_id=tenant_id) as home, self._holding(home, tenant_id) as db,
                        (db or self.pool()).tenant_snapshot(tenant_id=tenant_id) as conn):
                yield conn

    @asynccontextmanager
    async def exclusive(self, tenant_id: str, *, timeout_s: float) -> AsyncIterator[None]:
        """A move's switch: hold the tenant's placement lock exclusively, once every replica's transactions of the
        tenant that hold it have finished (at most ``timeout_s``, else ``FenceTimeout``); new ones wait until the
        block ends. Without coordination (one replica) the fence alone does this, and this does nothing."""
        if self.resolver is None:
            yield
            return
        async with Database.platform_tx(self) as conn:
            await conn.execute(sa.text(f"SET LOCAL lock_timeout = {max(1, int(timeout_s * 1000))}"))
            try:
                await conn.execute(_EXCLUSIVE, {"ns": _LOCK_NAMESPACE, "t": tenant_id})
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                    raise FenceTimeout(f"tenant {tenant_id} still had transactions in flight on some replica "
                                       f"after {timeout_s}s") from exc
                raise
            yield

    def databases(self) -> list[Database]:
        """The home pool, the other locations' pools and every silo, each once."""
        out: dict[int, Database] = {}
        for db in [self.pool(), *self.locations, *self._routes.values()]:
            out.setdefault(id(db.engine), db)
        return list(out.values())

    async def platform_each(self) -> AsyncIterator[AsyncConnection]:
        for db in self.databases():
            async with db.platform_tx() as conn:
                yield conn

    async def reclaim(self) -> None:
        """After an erasure: every database lets go of the deleted rows (a silo's or a location's too)."""
        for db in self.databases():
            await db.reclaim()

    async def dispose(self) -> None:
        for db in self.databases()[1:]:
            await db.dispose()
        await super().dispose()
