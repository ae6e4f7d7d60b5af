"""Isolation tiers and storage locations: move a tenant's content between the pool and its own silo database, and
between the storage locations of different regions (``tiers/locations.py``), online. A tenant's placement is its
tier and its storage region; a move goes from one placement to another (either or both may change).

A move runs in the background, in phases the tenant object shows (``tier_move``):

``preparing``   create and migrate the silo (when the target is one), copy the tenant's row into the target's
                ``tenants`` table (when the target is not the home pool), count the rows to copy
``copying``     copy every content row, table by table, while the tenant keeps working on the source
``catching_up`` copy again what changed during the copy (a shorter delta)
``switching``   close the tenant's fence (new transactions wait, those in flight finish), copy the last delta,
                read the target again and compare it with the source row by row and value by value, record the new
                tier, switch the route, open the fence
``cleaning``    delete the tenant's rows from the old side (a pool's rows, or the silo's file or schema)
``done`` / ``failed``

Nothing the tenant does fails during a move: before the switch it works on the source, during it waits at the fence
(as long as the last delta takes), after it works on the target. A failure before the switch leaves the tenant where
it was and removes the partial copy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenantlm.errors import Conflict, InvalidRequest, RegionNotAllowed
from tenantlm.observability.logging import request_id_var
from tenantlm.storage.sql import tenant_copy
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.router import TenantRouter
from tenantlm.storage.sql.tables import tenants
from tenantlm.tenancy.models import Tenant
from tenantlm.tenancy.service import AuditSink, TenancyService
from tenantlm.tiers.locations import Location, Locations

log = logging.getLogger(__name__)

POOL, SILO = "pool", "silo"
TIERS = (POOL, SILO)
FINISHED = ("done", "failed")


MAX_RESERVED_SHARE = 0.9
SILO_KEY_PREFIX = "tlm:silo:"


def silo_key_prefix(router: TenantRouter) -> Callable[[str], str | None]:
    """A silo tenant's own prefix for its keys in Redis (``tlm:silo:{<tenant_id>}:...``), else None (the default).
    It follows the route: after a move the limiter's windows start afresh under the new prefix, and its budgets are
    raised to the ledger's there (``TiersService.after_switch``)."""
    def prefix_of(tenant_id: str) -> str | None:
        return SILO_KEY_PREFIX if router.silo(tenant_id) is not None else None
    return prefix_of


KEEP: Any = object()  # start_move: leave the storage region as it is


@dataclass(frozen=True)
class Placement:
    tier: str
    region: str | None  # the storage location's region as the tenant's row records it (None: the home database)


def _check_request(tier: Any, reserved_share: Any) -> float | None:
    if tier not in TIERS:
        raise InvalidRequest("tier must be 'pool' or 'silo'", param="tier")
    if reserved_share is None:
        return None
    if tier != SILO:
        raise InvalidRequest("only a silo tenant may have a reserved share of capacity", param="reserved_share")
    if isinstance(reserved_share, bool) or not isinstance(reserved_share, int | float) or not (
            0 < reserved_share <= MAX_RESERVED_SHARE):
        raise InvalidRequest(f"reserved_share must be a number above 0 and at most {MAX_RESERVED_SHARE}",
                             param="reserved_share")
    return float(reserved_share)


class VerificationFailed(RuntimeError):
    """The two sides differed after the last delta copy; the move does not switch."""


class TenantCaches(Protocol):
    """Anything that holds a tenant's rows (or ids of them) in memory and must reload them after a move."""

    async def forget_tenant(self, *, tenant_id: str) -> None: ...


@dataclass
class Move:
    tenant_id: str
    source: str
    target: str
    reserved_share: float | None = None
    source_region: str | None = None
    target_region: str | None = None
    phase: str = "preparing"
    rows_total: int = 0
    rows_copied: int = 0
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    fenced_ms: float | None = None
    last_delta: int | None = None  # rows copied with the fence closed
    verified_rows: int | None = None  # rows compared value by value before the switch
    error: str | None = None

    def public(self) -> dict[str, Any]:
        progress = 1.0 if self.phase in ("cleaning", "done") else (
            min(self.rows_copied / self.rows_total, 1.0) if self.rows_total else 0.0)
        return {"from": self.source, "to": self.target, "reserved_share": self.reserved_share,
                "from_storage_region": self.source_region, "to_storage_region": self.target_region,
                "phase": self.phase, "progress": round(progress, 4),
                "rows_total": self.rows_total, "rows_copied": self.rows_copied,
                "started_at": round(self.started_at, 3),
                "finished_at": None if self.finished_at is None else round(self.finished_at, 3),
                "fenced_ms": None if self.fenced_ms is None else round(self.fenced_ms, 1),
                "last_delta_rows": self.last_delta, "verified_rows": self.verified_rows, "error": self.error}


class TiersService:
    def __init__(self, *, router: TenantRouter, locations: Locations, tenancy: TenancyService,
                 audit: AuditSink, caches: list[TenantCaches], drain_timeout_s: float = 30.0,
                 one_replica: bool = True) -> None:
        self.router = router
        self.locations = locations
        self.tenancy = tenancy
        self.audit = audit
        self.caches = caches
        self.drain_timeout_s = drain_timeout_s
        self.one_replica = one_replica
        self._moves: dict[str, Move] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._placed: dict[str, Placement] = {}  # the tenants not in the home pool
        self._closing: set[asyncio.Task[None]] = set()  # silos other replicas moved tenants out of, being closed
        # Run with the fence still closed once the route is switched: e.g. the limiter's budgets under the tenant's
        # new key prefix in Redis, raised to the ledger's.
        self.after_switch: list[Callable[[str], Awaitable[None]]] = []

    async def load(self) -> None:
        """At start: bring the other locations and every silo to the schema head (as the home database was) and
        route each tenant that is not in the home pool to its database."""
        await self.locations.prepare()
        for tenant_id, tier, region in await self.tenancy.store.platform_placements():
            if region is not None and region not in self.locations.regions:
                raise RuntimeError(f"tenant {tenant_id} keeps its content in storage region {region!r}, which is no "
                                   f"longer configured (storage_locations); add it back to serve that tenant")
            loc = self.locations.get(region)
            db = await self._open(loc, tier, tenant_id, create=loc.silos.can_create)
            self._route(tenant_id, Placement(tier, region), db)

    def _route(self, tenant_id: str, placement: Placement, db: Database) -> None:
        loc = self.locations.get(placement.region)
        if placement.tier == POOL and loc.home:
            self.router.detach(tenant_id)
            self._placed.pop(tenant_id, None)
        else:
            self.router.attach(tenant_id, db, silo=placement.tier == SILO)
            self._placed[tenant_id] = placement

    @staticmethod
    async def _open(loc: Location, tier: str, tenant_id: str, *, create: bool) -> Database:
        if tier == POOL:
            return loc.pool
        return await loc.silos.create(tenant_id) if create else loc.silos.open(tenant_id)

    def _region(self, tenant: Tenant) -> str | None:
        return tenant.storage_region or self.locations.home.region

    def resolve(self, tenant_id: str, tier: str, region: str | None) -> Database | None:
        """Several replicas: the database of the tenant's placement as its row says now (None: the home pool). A
        placement another replica's move changed is routed here from now on; a silo left behind is closed."""
        placement = Placement(tier, region)
        if placement != self._placed.get(tenant_id, Placement(POOL, None)):
            loc = self.locations.get(region)
            if tier == POOL and loc.home:
                left = self.router.detach(tenant_id)
                self._placed.pop(tenant_id, None)
            else:
                left = self.router.silo(tenant_id)
                self._route(tenant_id, placement, loc.pool if tier == POOL else loc.silos.open(tenant_id))
            if left is not None:
                self._closing.add(task := asyncio.create_task(left.dispose()))
                task.add_done_callback(self._closing.discard)
        return self.router.route(tenant_id)

    # --- placing a new tenant (TenancyService.create_tenant) ------------------------------------------------------
    def region_for_new(self, allowed_regions: list[str] | None) -> str | None:
        return self.locations.for_new_tenant(allowed_regions)

    async def placed(self, tenant_id: str, region: str | None) -> None:
        """A new tenant whose content goes to another location: its row there, and its route."""
        loc = self.locations.get(region)
        if loc.home:
            return
        await self._anchor(self.router.pool(), loc.pool, tenant_id)
        self._route(tenant_id, Placement(POOL, region), loc.pool)

    def progress(self, tenant_id: str) -> dict[str, Any] | None:
        move = self._moves.get(tenant_id)
        return None if move is None else move.public()

    def moving(self, tenant_id: str) -> bool:
        move = self._moves.get(tenant_id)
        return move is not None and move.phase not in FINISHED

    async def start_move(self, *, tenant_id: str, tier: Any, actor: str, reserved_share: Any = None,
                         storage_region: Any = KEEP) -> Move:
        """Start moving the tenant to ``tier`` and/or ``storage_region`` (or only change a silo tenant's
        ``reserved_share``). ``tier`` None keeps the tenant's tier."""
        tenant = await self.tenancy.get_tenant(tenant_id=tenant_id)
        tier = tenant.tier if tier is None else tier
        share = _check_request(tier, reserved_share)
        region = self._region(tenant) if storage_region is KEEP else self._target_region(tenant, storage_region)
        if self.moving(tenant_id):
            raise Conflict(f"tenant {tenant_id} is already moving; wait for its move to finish", param="tier")
        move = Move(tenant_id=tenant_id, source=tenant.tier, target=tier, reserved_share=share,
                    source_region=self._region(tenant), target_region=region)
        if tenant.tier == tier and self._region(tenant) == region:
            if share != tenant.reserved_share:
                await self.tenancy.set_tier(tenant_id=tenant_id, tier=tier, reserved_share=share,
                                            storage_region=tenant.storage_region)
                await self._audit(actor, "tenant.reserved_share_changed", tenant_id,
                                  **{"from": tenant.reserved_share, "to": share})
            move.phase, move.finished_at = "done", time.time()
            self._moves[tenant_id] = move
            return move
        self._check_can_move(tier)
        self._moves[tenant_id] = move
        await self._audit(actor, "tenant.tier_move_started", tenant_id, **self._what(move))
        task = asyncio.create_task(self._run(move, actor), name=f"tenantlm-tier-{tenant_id}")
        self._tasks[tenant_id] = task
        task.add_done_callback(lambda t: self._tasks.pop(tenant_id) if self._tasks.get(tenant_id) is t else None)
        return move

    @staticmethod
    def _what(move: Move) -> dict[str, Any]:
        return {"from": move.source, "to": move.target, "reserved_share": move.reserved_share,
                "from_storage_region": move.source_region, "to_storage_region": move.target_region}

    def _target_region(self, tenant: Tenant, region: Any) -> str | None:
        if not isinstance(region, str) or not region:
            raise InvalidRequest("storage_region must be the region of a storage location", param="storage_region")
        self.locations.get(region)  # a 400 naming the configured ones when there is none
        if tenant.allowed_regions is not None and region not in tenant.allowed_regions:
            raise RegionNotAllowed(f"storage region {region!r} is outside this tenant's allowed regions "
                                   f"({', '.join(tenant.allowed_regions) or 'none'})", param="storage_region")
        return region

    def _check_can_move(self, tier: str) -> None:
        if tier == SILO and not all(loc.silos.can_create for loc in [self.locations.home, *self.locations.others]):
            raise InvalidRequest("moving a tenant needs a database the server can create silos in: on Postgres, set "
                                 "TENANTLM_DATABASE_MIGRATE_URL (the owner role creates and drops silo schemas; "
                                 "database_migrate_url for each storage location)",
                                 param="tier", code="tier_unavailable")
        if not self.one_replica and self.router.resolver is None:
            raise InvalidRequest(
                "with several replicas a move is coordinated by a lock in Postgres; this deployment runs several "
                "replicas (TENANTLM_REDIS_URL or TENANTLM_REPLICAS > 1) on SQLite: run one replica for the move",
                param="tier", code="tier_unavailable")

    async def wait(self, tenant_id: str) -> Move | None:
        task = self._tasks.get(tenant_id)
        if task is not None:
            await asyncio.wait([task])
        return self._moves.get(tenant_id)

    async def _run(self, move: Move, actor: str) -> None:
        try:
            await self._move(move)
        except asyncio.CancelledError:
            move.phase, move.error, move.finished_at = "failed", "cancelled", time.time()
            raise
        except Exception as exc:
            log.exception("moving tenant %s to %s failed in %s", move.tenant_id, move.target, move.phase)
            if move.phase != "cleaning":  # before the switch: the tenant stays where it was
                move.error = f"{type(exc).__name__}: {exc}"
                await self._audit(actor, "tenant.tier_move_failed", move.tenant_id, **self._what(move),
                                  error=move.error)
                move.phase, move.finished_at = "failed", time.time()  # last: a new move may start from here on
                return
            # after it: the tenant works on its new placement; only the old side's copy is left behind
            move.error = f"switched; removing the old copy failed: {type(exc).__name__}: {exc}"
        finished_at = time.time()
        done = {"rows": move.rows_total, "seconds": round(finished_at - move.started_at, 3),
                "fenced_ms": move.fenced_ms, "error": move.error}
        if move.source != move.target:
            await self._audit(actor, "tenant.tier_changed", move.tenant_id,
                              **{"from": move.source, "to": move.target, **done})
        if move.source_region != move.target_region:
            await self._audit(actor, "tenant.storage_region_changed", move.tenant_id,
                              **{"from": move.source_region, "to": move.target_region, "tier": move.target, **done})
        move.phase, move.finished_at = "done", finished_at  # last: a new move may start from here on

    async def _move(self, move: Move) -> None:
        tenant_id, home = move.tenant_id, self.router.pool()
        source_loc, target_loc = self.locations.get(move.source_region), self.locations.get(move.target_region)
        source = self.router.route(tenant_id) or home
        target = await self._open(target_loc, move.target, tenant_id, create=True)
        try:
            if not (target_loc.home and move.target == POOL):
                await self._anchor(home, target, tenant_id)
            await self._copy(move, source, target)
            await self._switch(move, source, target)
        except BaseException:
            if move.phase != "cleaning":  # not switched: the target's copy is garbage
                await self._discard(target_loc, move.target, tenant_id, target)
            raise
        await self._discard(source_loc, move.source, tenant_id, source)

    @staticmethod
    async def _discard(loc: Location, tier: str, tenant_id: str, db: Database) -> None:
        """Remove the tenant's content (and its row, outside the home database) from one side of a move."""
        await tenant_copy.delete_tenant_rows(db, tenant_id)
        if tier == SILO:
            await loc.silos.remove(tenant_id, db)
        elif not loc.home:
            async with db.tenant_tx(tenant_id=tenant_id) as conn:
                await conn.execute(tenants.delete().where(tenants.c.id == tenant_id))

    @staticmethod
    async def _anchor(pool: Database, silo: Database, tenant_id: str) -> None:
        """The silo's own copy of the tenant's row, which its content rows' foreign keys point at."""
        async with pool.tenant_tx(tenant_id=tenant_id) as conn:
            row = (await conn.execute(tenants.select().where(tenants.c.id == tenant_id))).mappings().one()
        async with silo.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(tenants.delete().where(tenants.c.id == tenant_id))
            await conn.execute(tenants.insert().values(dict(row)))

    async def _copy(self, move: Move, source: Database, target: Database) -> None:
        move.rows_total = await tenant_copy.count_rows(source, move.tenant_id)

        def copied(n: int) -> None:
            move.rows_copied += n
        move.phase = "copying"
        await tenant_copy.sync(source, target, move.tenant_id, copied)
        move.phase = "catching_up"
        await tenant_copy.sync(source, target, move.tenant_id, copied)

    async def _switch(self, move: Move, source: Database, target: Database) -> None:
        move.phase = "switching"
        tenant_id = move.tenant_id
        async with self.router.fence.closed(tenant_id, drain_timeout_s=self.drain_timeout_s), \
                self.router.exclusive(tenant_id, timeout_s=self.drain_timeout_s):
            fenced_at = time.monotonic()
            move.last_delta = await tenant_copy.sync(source, target, tenant_id)
            differ = await tenant_copy.verify(source, target, tenant_id)
            if differ:
                raise VerificationFailed(f"the copy differs from the source in {', '.join(differ)}")
            move.verified_rows = await tenant_copy.count_rows(target, tenant_id)
            await self.tenancy.set_tier(tenant_id=tenant_id, tier=move.target, reserved_share=move.reserved_share,
                                        storage_region=self.locations.stored_region(move.target_region))
            self._route(tenant_id, Placement(move.target, self.locations.stored_region(move.target_region)), target)
            move.phase = "cleaning"
            await self._reload_caches(tenant_id)
            for hook in self.after_switch:
                try:
                    await hook(tenant_id)
                except Exception:
                    log.exception("after moving tenant %s", tenant_id)
            move.fenced_ms = (time.monotonic() - fenced_at) * 1000

    async def _reload_caches(self, tenant_id: str) -> None:
        for cache in self.caches:
            try:
                await cache.forget_tenant(tenant_id=tenant_id)
            except Exception:
                log.exception("dropping the cached content of tenant %s after its move failed", tenant_id)

    async def forget_tenant(self, *, tenant_id: str) -> None:
        """Erasure (first of the content steps, after the keys are shredded): stop any move; a tenant outside the
        home pool has its content deleted where it lives (a silo's file or schema dropped, a location's rows and its
        copy of the tenant's row deleted) and is routed back to the home pool, where the other steps delete the rest."""
        task = self._tasks.get(tenant_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._moves.pop(tenant_id, None)
        if self.router.resolver is not None:  # another replica may have moved it: its row says where it is
            tenant = await self.tenancy.store.get_tenant(tenant_id=tenant_id)
            if tenant is not None:
                self.resolve(tenant_id, tenant.tier, tenant.storage_region)
        placement, db = self._placed.pop(tenant_id, None), self.router.route(tenant_id)
        self.router.detach(tenant_id)
        if placement is not None and db is not None:
            await self._discard(self.locations.get(placement.region), placement.tier, tenant_id, db)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _audit(self, actor: str, action: str, tenant_id: str, **details: Any) -> None:
        await self.audit.append(actor=actor, action=action, tenant_id=tenant_id, request_id=request_id_var.get(),
                                details=details)
