"""Isolation tiers: move a tenant's content between the pool and its own silo database, online.

A move runs in the background, in phases the tenant object shows (``tier_move``):

``preparing``   create and migrate the silo (promotion), count the rows to copy
``copying``     copy every content row, table by table, while the tenant keeps working on the source
``catching_up`` copy again what changed during the copy (a shorter delta)
``switching``   close the tenant's fence (new transactions wait, those in flight finish), copy the last delta,
                read the target again and compare it with the source row by row and value by value, record the new
                tier, switch the route, open the fence
``cleaning``    delete the tenant's rows from the old side (the pool's rows, or the silo's file)
``done`` / ``failed``

Nothing the tenant does fails during a move: before the switch it works on the source, during it waits at the fence
(as long as the last delta takes), after it works on the target. A failure before the switch leaves the tenant where
it was and removes the partial copy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenantlm.errors import Conflict, InvalidRequest
from tenantlm.observability.logging import request_id_var
from tenantlm.storage.sql import tenant_copy
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.router import TenantRouter
from tenantlm.storage.sql.tables import tenants
from tenantlm.tenancy.service import AuditSink, TenancyService
from tenantlm.tiers.silos import Silos

log = logging.getLogger(__name__)

POOL, SILO = "pool", "silo"
TIERS = (POOL, SILO)
FINISHED = ("done", "failed")


MAX_RESERVED_SHARE = 0.9
SILO_KEY_PREFIX = "tlm:silo:"


def silo_key_prefix(router: TenantRouter) -> Callable[[str], str | None]:
    """A silo tenant's own prefix for its keys in Redis (``tlm:silo:{<tenant_id>}:...``), else None (the default).
    It follows the route, which never changes while Redis is in use: moves are refused with several replicas."""
    def prefix_of(tenant_id: str) -> str | None:
        return SILO_KEY_PREFIX if router.silo(tenant_id) is not None else None
    return prefix_of


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
                "phase": self.phase, "progress": round(progress, 4),
                "rows_total": self.rows_total, "rows_copied": self.rows_copied,
                "started_at": round(self.started_at, 3),
                "finished_at": None if self.finished_at is None else round(self.finished_at, 3),
                "fenced_ms": None if self.fenced_ms is None else round(self.fenced_ms, 1),
                "last_delta_rows": self.last_delta, "verified_rows": self.verified_rows, "error": self.error}


class TiersService:
    def __init__(self, *, router: TenantRouter, silos: Silos, tenancy: TenancyService,
                 audit: AuditSink, caches: list[TenantCaches], drain_timeout_s: float = 30.0,
                 one_replica: bool = True) -> None:
        self.router = router
        self.silos = silos
        self.tenancy = tenancy
        self.audit = audit
        self.caches = caches
        self.drain_timeout_s = drain_timeout_s
        self.one_replica = one_replica
        self._moves: dict[str, Move] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def load(self) -> None:
        """At start: bring every silo's schema to head (as the pool's was) and route its tenant to it."""
        for tenant_id in await self.tenancy.store.platform_silo_tenants():
            silo = await self.silos.create(tenant_id) if self.silos.can_create else self.silos.open(tenant_id)
            self.router.attach(tenant_id, silo)

    def progress(self, tenant_id: str) -> dict[str, Any] | None:
        move = self._moves.get(tenant_id)
        return None if move is None else move.public()

    def moving(self, tenant_id: str) -> bool:
        return tenant_id in self._tasks

    async def start_move(self, *, tenant_id: str, tier: Any, actor: str, reserved_share: Any = None) -> Move:
        """Start moving the tenant to ``tier`` (or only change a silo tenant's ``reserved_share``)."""
        tenant = await self.tenancy.get_tenant(tenant_id=tenant_id)
        share = _check_request(tier, reserved_share)
        if self.moving(tenant_id):
            raise Conflict(f"tenant {tenant_id} is already moving; wait for its move to finish", param="tier")
        move = Move(tenant_id=tenant_id, source=tenant.tier, target=tier, reserved_share=share)
        if tenant.tier == tier:
            if share != tenant.reserved_share:
                await self.tenancy.set_tier(tenant_id=tenant_id, tier=tier, reserved_share=share)
                await self._audit(actor, "tenant.reserved_share_changed", tenant_id,
                                  **{"from": tenant.reserved_share, "to": share})
            move.phase, move.finished_at = "done", time.time()
            self._moves[tenant_id] = move
            return move
        self._check_can_move()
        self._moves[tenant_id] = move
        await self._audit(actor, "tenant.tier_move_started", tenant_id,
                          **{"from": tenant.tier, "to": tier, "reserved_share": share})
        task = asyncio.create_task(self._run(move, actor), name=f"tenantlm-tier-{tenant_id}")
        self._tasks[tenant_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(tenant_id, None))
        return move

    def _check_can_move(self) -> None:
        if not self.silos.can_create:
            raise InvalidRequest("moving a tenant needs a database the server can create silos in: on Postgres, set "
                                 "TENANTLM_DATABASE_MIGRATE_URL (the owner role creates and drops silo schemas)",
                                 param="tier", code="tier_unavailable")
        if not self.one_replica:
            raise InvalidRequest(
                "an online tier move is fenced and switched inside one server process; this deployment runs several "
                "replicas (TENANTLM_REDIS_URL or TENANTLM_REPLICAS > 1): run one replica for the move",
                param="tier", code="tier_unavailable")

    async def wait(self, tenant_id: str) -> Move | None:
        task = self._tasks.get(tenant_id)
        if task is not None:
            await asyncio.wait([task])
        return self._moves.get(tenant_id)

    async def _run(self, move: Move, actor: str) -> None:
        try:
            if move.target == SILO:
                await self._promote(move)
            else:
                await self._demote(move)
        except asyncio.CancelledError:
            move.phase, move.error, move.finished_at = "failed", "cancelled", time.time()
            raise
        except Exception as exc:
            log.exception("moving tenant %s to %s failed in %s", move.tenant_id, move.target, move.phase)
            if move.phase != "cleaning":  # before the switch: the tenant stays where it was
                move.phase, move.error, move.finished_at = "failed", f"{type(exc).__name__}: {exc}", time.time()
                await self._audit(actor, "tenant.tier_move_failed", move.tenant_id, to=move.target, error=move.error)
                return
            # after it: the tenant works on its new tier; only the old side's copy is left behind
            move.error = f"switched; removing the old copy failed: {type(exc).__name__}: {exc}"
        move.phase, move.finished_at = "done", time.time()
        await self._audit(actor, "tenant.tier_changed", move.tenant_id, **{
            "from": move.source, "to": move.target, "rows": move.rows_total,
            "seconds": round(move.finished_at - move.started_at, 3), "fenced_ms": move.fenced_ms,
            "error": move.error})

    async def _promote(self, move: Move) -> None:
        tenant_id, pool = move.tenant_id, self.router.pool()
        silo = await self.silos.create(tenant_id)
        try:
            await self._anchor(pool, silo, tenant_id)
            await self._copy(move, pool, silo)
            await self._switch(move, pool, silo, attach=silo)
        except BaseException:
            await tenant_copy.delete_tenant_rows(silo, tenant_id)
            await self.silos.remove(tenant_id, silo)
            raise
        move.phase = "cleaning"
        await tenant_copy.delete_tenant_rows(pool, tenant_id)

    async def _demote(self, move: Move) -> None:
        tenant_id, pool = move.tenant_id, self.router.pool()
        silo = self.router.silo(tenant_id) or self.silos.open(tenant_id)
        try:
            await self._copy(move, silo, pool)
            await self._switch(move, silo, pool, attach=None)
        except BaseException:
            if self.router.silo(tenant_id) is not None:  # still routed to the silo: the pool's copy is garbage
                await tenant_copy.delete_tenant_rows(pool, tenant_id)
            raise
        move.phase = "cleaning"
        await self.silos.remove(tenant_id, silo)

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

    async def _switch(self, move: Move, source: Database, target: Database, *, attach: Database | None) -> None:
        move.phase = "switching"
        tenant_id = move.tenant_id
        async with self.router.fence.closed(tenant_id, drain_timeout_s=self.drain_timeout_s):
            fenced_at = time.monotonic()
            move.last_delta = await tenant_copy.sync(source, target, tenant_id)
            differ = await tenant_copy.verify(source, target, tenant_id)
            if differ:
                raise VerificationFailed(f"the copy differs from the source in {', '.join(differ)}")
            move.verified_rows = await tenant_copy.count_rows(target, tenant_id)
            await self.tenancy.set_tier(tenant_id=tenant_id, tier=move.target, reserved_share=move.reserved_share)
            if attach is not None:
                self.router.attach(tenant_id, attach)
            else:
                self.router.detach(tenant_id)
            await self._reload_caches(tenant_id)
            move.fenced_ms = (time.monotonic() - fenced_at) * 1000

    async def _reload_caches(self, tenant_id: str) -> None:
        for cache in self.caches:
            try:
                await cache.forget_tenant(tenant_id=tenant_id)
            except Exception:
                log.exception("dropping the cached content of tenant %s after its move failed", tenant_id)

    async def forget_tenant(self, *, tenant_id: str) -> None:
        """Erasure (first of the content steps, after the keys are shredded): stop any move, drop the silo's file
        or schema and route the tenant back to the pool, where the other content steps delete what is left."""
        task = self._tasks.get(tenant_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._moves.pop(tenant_id, None)
        await self.silos.remove(tenant_id, self.router.detach(tenant_id))

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _audit(self, actor: str, action: str, tenant_id: str, **details: Any) -> None:
        await self.audit.append(actor=actor, action=action, tenant_id=tenant_id, request_id=request_id_var.get(),
                                details=details)
