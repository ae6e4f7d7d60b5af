"""The usage ledger service: record on the request path, flush to SQL in the background, recover at start-up.

The property it keeps (invariant 4): after a kill -9 at any moment, every event whose ``record()`` returned is in
SQL exactly once after the next ``start()`` + ``recover()``.

- ``record`` returns only after the event is fsynced in the local journal (group commit, see ``journal.py``).
- ``flush`` seals the active journal segment, inserts every sealed segment's events idempotently (primary key
  tenant_id + event id, ON CONFLICT DO NOTHING) and deletes a segment only after all its events are committed.
  A crash anywhere in between leaves the segment on disk; replaying it inserts nothing twice and adds nothing twice
  to the rollups (only rows that were really inserted are added, in the same transaction).
- ``recover`` is a flush of everything a previous run left behind; the journal never appends to an old segment.

Queries read SQL only, so they lag the request path by at most one flush interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from tenantlm.metering.forecast import forecast
from tenantlm.metering.journal import Journal, SyncMode, fdatasync
from tenantlm.metering.models import FlushResult, Forecast, PeriodUsage, UsageEvent, UsageRow
from tenantlm.metering.rollups import UsageQueries
from tenantlm.metering.store import EVERY_TENANT, UsageStore, payload_row
from tenantlm.storage.sql.engine import Database

log = logging.getLogger("tenantlm.metering")
PARSE_CHUNK = 128  # journal lines parsed per turn of the event loop (~1 ms)
FlushHook = Callable[[frozenset[str]], Awaitable[None]]


def _add(a: FlushResult, b: FlushResult) -> FlushResult:
    return FlushResult(read=a.read + b.read, inserted=a.inserted + b.inserted, segments=a.segments + b.segments,
                       torn_lines=a.torn_lines + b.torn_lines, tenants=a.tenants | b.tenants)


class Ledger:
    def __init__(self, *, db: Database, directory: Path, clock: Callable[[], float] = time.time,
                 max_segment_bytes: int = 64 * 1024 * 1024, batch_events: int = 5000,
                 on_flushed: FlushHook | None = None, fsync: Callable[[int], None] = fdatasync,
                 sync: SyncMode = "always", sync_interval_s: float = 0.05) -> None:
        self.store = UsageStore(db)
        self.queries = UsageQueries(self.store)
        self.journal = Journal(directory, max_segment_bytes=max_segment_bytes, fsync=fsync, sync=sync,
                               sync_interval_s=sync_interval_s)
        self.clock = clock
        self.batch_events = batch_events
        self.on_flushed = on_flushed
        self._flushing = asyncio.Lock()

    async def start(self) -> None:
        """Open the journal (taking its directory) and start the writer. Call ``recover()`` next."""
        await self.journal.start()

    async def close(self, *, flush: bool = True) -> None:
        """Stop accepting events; with ``flush``, try a last flush (what fails stays journaled for the next start)."""
        await self.journal.close()
        if flush:
            self.journal.open()
            try:
                await self.flush()
            except Exception:
                log.warning("final ledger flush failed; the journal keeps the events for the next start",
                            exc_info=True)
            await self.journal.close()

    async def record(self, event: UsageEvent, *, alone: bool = False) -> None:
        """Journal ``event``: return once it is written (``sync="interval"``: survives the process being killed,
        fsynced within the interval) or written and fsynced (``"always"``). Await it before acknowledging.
        ``alone``: no other request is in flight (``Journal.append``)."""
        await self.journal.append(event.to_json(), alone=alone)

    async def recover(self) -> FlushResult:
        """Replay every journal segment a previous run left (idempotent: a segment replayed twice counts once)."""
        result = await self.flush()
        if result.segments:
            log.info("ledger recovered", extra={"segments": result.segments, "events": result.read,
                                                "inserted": result.inserted, "torn_lines": result.torn_lines})
        return result

    async def flush(self) -> FlushResult:
        """Move every sealed journal segment into SQL; delete each one only after all its events are committed."""
        async with self._flushing:
            self.journal.open()  # idempotent: lets a tool recover without starting the writer
            total = FlushResult()
            for path in await self.journal.seal():
                total = _add(total, await self._flush_segment(path))
        if self.on_flushed is not None and total.tenants:
            try:  # the events are committed; a failing hook (budget alerts) must not make the flush look failed
                await self.on_flushed(total.tenants)
            except Exception:
                log.warning("ledger flush hook failed", exc_info=True)
        return total

    async def _flush_segment(self, path: Path) -> FlushResult:
        decoded = await asyncio.to_thread(self.journal.read, path)
        rows: list[dict[str, Any]] = []
        unreadable = 0
        for i in range(0, len(decoded.payloads), PARSE_CHUNK):
            if i:
                await asyncio.sleep(0)  # requests in between: a big segment must not hold the event loop for long
            parsed, bad = _parse(decoded.payloads[i:i + PARSE_CHUNK])
            rows += parsed
            unreadable += bad
        inserted: list[tuple[str, str]] = []
        for i in range(0, len(rows), self.batch_events):
            inserted += await self.store.insert_rows(rows[i:i + self.batch_events], now=self.clock())
        if decoded.corrupt or unreadable:
            kept = self.journal.quarantine(path)
            log.error("ledger journal segment had unreadable lines inside it; kept for inspection",
                      extra={"segment": str(kept), "bad_lines": decoded.bad, "unparsable": unreadable})
        else:
            self.journal.delete(path)
        return FlushResult(read=len(rows), inserted=len(inserted), segments=1, torn_lines=decoded.bad,
                           tenants=frozenset(tenant_id for tenant_id, _ in inserted))

    async def run_flusher(self, *, interval_s: float = 1.0) -> None:
        """The background task: flush every ``interval_s``; a failure (database down) is logged and retried."""
        while True:
            try:
                await self.flush()
            except Exception:
                log.warning("ledger flush failed; retrying", exc_info=True)
            await asyncio.sleep(interval_s)

    # -- queries --------------------------------------------------------------------------------------------------

    async def usage(self, *, tenant_id: str, start: float, end: float, group_by: Sequence[str]) -> list[UsageRow]:
        """The tenant's totals per group (read in the tenant's scope: RLS holds too)."""
        return await self.queries.usage(scope=tenant_id, start=start, end=end, group_by=group_by)

    async def platform_usage(self, *, start: float, end: float, group_by: Sequence[str]) -> list[UsageRow]:
        """Totals per group over every tenant (platform keys only)."""
        return await self.queries.usage(scope=EVERY_TENANT, start=start, end=end, group_by=group_by)

    async def month_to_date(self, tenant_id: str) -> tuple[int, float]:
        """(tokens, cost_usd) of the tenant in the current UTC month."""
        totals = await self.queries.month_to_date(tenant_id=tenant_id, now=self.clock())
        return totals.tokens, totals.cost_usd

    async def period_usage(self, *, tenant_id: str) -> list[PeriodUsage]:
        """The tenant's day and month usage per key and end user, for the limiter's budgets."""
        return await self.queries.period_usage(scope=tenant_id, now=self.clock())

    async def platform_period_usage(self) -> list[PeriodUsage]:
        """``period_usage`` of every tenant, to seed the limiter at start-up (call after ``recover``)."""
        return await self.queries.period_usage(scope=EVERY_TENANT, now=self.clock())

    async def forecast(self, *, tenant_id: str) -> Forecast:
        return await forecast(self.queries, tenant_id=tenant_id, now=self.clock())

    def events(self, *, tenant_id: str, start: float, end: float) -> AsyncIterator[list[UsageEvent]]:
        return self.store.events(scope=tenant_id, start=start, end=end)

    def platform_events(self, *, start: float, end: float) -> AsyncIterator[list[UsageEvent]]:
        return self.store.events(scope=EVERY_TENANT, start=start, end=end)

    async def forget_tenant(self, *, tenant_id: str) -> None:
        """Erasure (``compliance.TenantContent``): delete the tenant's usage, rollups and alert records."""
        await self.store.forget_tenant(tenant_id=tenant_id)


def _parse(payloads: list[bytes]) -> tuple[list[dict[str, Any]], int]:
    """Journal payloads as usage_events rows; each is validated by building its UsageEvent (exact fields, rules)."""
    rows: list[dict[str, Any]] = []
    bad = 0
    for p in payloads:
        try:
            fields = orjson.loads(p)
            UsageEvent(**fields)
        except (ValueError, TypeError):  # orjson.JSONDecodeError is a ValueError
            bad += 1
        else:
            rows.append(payload_row(fields))
    return rows, bad
