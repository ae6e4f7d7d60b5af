"""Storage metering: what each tenant keeps, sampled into a daily storage ledger and billed in byte-days.

Every ``storage_sample_s`` (and before each storage usage answer) the meter asks each kind of content how many bytes
the tenant keeps (its ``StorageSource``: files as uploaded, vector stores as their chunks' ``usage_bytes``, stored
responses as sealed) and keeps, per tenant, UTC day and kind, the most it saw that day (``storage_usage``). A day is
billed at its peak, so content uploaded and deleted between two samples is not seen: the sample interval is the
resolution of the bill. GB are 10^9 bytes; ``storage_price_per_gb_day`` (the operator's, default 0) prices a GB-day.
A tenant's erasure removes its rows (the bill already exported keeps its figures).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tenantlm.metering.models import utc_day
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import storage_usage

GB = 1_000_000_000
TENANT_PAGE = 500


class StorageSource(Protocol):
    """A kind of tenant content whose size is metered (``storage_kind`` names it in the ledger)."""

    storage_kind: str

    async def stored_bytes(self, *, tenant_id: str) -> int: ...


class TenantPages(Protocol):
    async def platform_list_tenants(self, *, limit: int, after: str | None) -> Sequence[Any]: ...


@dataclass(frozen=True, slots=True)
class StorageDay:
    day: str
    bytes: dict[str, int]  # kind -> the day's peak

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def public(self, price_per_gb_day: float) -> dict[str, Any]:
        gb_days = self.total_bytes / GB
        return {"day": self.day, "bytes": dict(sorted(self.bytes.items())), "total_bytes": self.total_bytes,
                "gb_days": round(gb_days, 9), "cost_usd": round(gb_days * price_per_gb_day, 9)}


class StorageUsageStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        dialect = postgresql if db.is_postgres else sqlite
        upsert = dialect.insert(storage_usage)
        higher = sa.func.greatest if db.is_postgres else sa.func.max  # SQLite's two-argument max() is a scalar
        self._record = upsert.on_conflict_do_update(
            index_elements=["tenant_id", "day", "kind"],
            set_={"peak_bytes": higher(storage_usage.c.peak_bytes, upsert.excluded.peak_bytes),
                  "sampled_at": upsert.excluded.sampled_at})

    async def record(self, *, tenant_id: str, day: str, sizes: dict[str, int], now: float) -> None:
        rows = [{"tenant_id": tenant_id, "day": day, "kind": kind, "peak_bytes": size, "sampled_at": now}
                for kind, size in sizes.items()]
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(self._record, rows)

    async def days(self, *, tenant_id: str, first: str, last: str) -> list[StorageDay]:
        c = storage_usage.c
        q = sa.select(c.day, c.kind, c.peak_bytes).where(c.tenant_id == tenant_id, c.day >= first, c.day <= last) \
            .order_by(c.day, c.kind)
        by_day: dict[str, dict[str, int]] = {}
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            for day, kind, peak in await conn.execute(q):
                by_day.setdefault(day, {})[kind] = int(peak)
        return [StorageDay(day, sizes) for day, sizes in by_day.items()]

    async def forget_tenant(self, *, tenant_id: str) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(storage_usage.delete().where(storage_usage.c.tenant_id == tenant_id))


class StorageMeter:
    def __init__(self, *, store: StorageUsageStore, sources: Sequence[StorageSource], tenants: TenantPages,
                 price_per_gb_day: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.sources = sources
        self.tenants = tenants
        self.price_per_gb_day = price_per_gb_day
        self.clock = clock

    async def sample(self, *, tenant_id: str) -> dict[str, int]:
        """Measure the tenant's content now and raise today's peaks where it is more."""
        sizes = {s.storage_kind: await s.stored_bytes(tenant_id=tenant_id) for s in self.sources}
        now = self.clock()
        await self.store.record(tenant_id=tenant_id, day=utc_day(now), sizes=sizes, now=now)
        return sizes

    async def sample_all(self) -> int:
        """Sample every tenant (a page of tenants at a time); returns how many were sampled."""
        done, after = 0, None
        while True:
            page = await self.tenants.platform_list_tenants(limit=TENANT_PAGE, after=after)
            for tenant in page:
                await self.sample(tenant_id=tenant.id)
            done += len(page)
            if len(page) < TENANT_PAGE:
                return done
            after = page[-1].id

    async def report(self, *, tenant_id: str, start: float, end: float) -> dict[str, Any]:
        """The tenant's storage bill for the UTC days in [start, end), today sampled first."""
        await self.sample(tenant_id=tenant_id)
        days = await self.store.days(tenant_id=tenant_id, first=utc_day(start), last=utc_day(end - 1))
        shown = [d.public(self.price_per_gb_day) for d in days]
        return {"object": "list", "tenant_id": tenant_id, "start": start, "end": end, "data": shown,
                "price_per_gb_day": self.price_per_gb_day,
                "total_gb_days": round(sum(d["gb_days"] for d in shown), 9),
                "total_cost_usd": round(sum(d["cost_usd"] for d in shown), 9)}

    async def forget_tenant(self, *, tenant_id: str) -> None:
        await self.store.forget_tenant(tenant_id=tenant_id)
