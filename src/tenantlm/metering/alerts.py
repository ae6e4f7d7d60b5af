"""Budget alerts: a signed webhook when a tenant's month-to-date cost or tokens cross 50/80/100% of its budget.

Once per (tenant, month, metric, threshold, target), across restarts: before sending, the alert is *claimed* by
inserting its row (``ON CONFLICT DO NOTHING``); only the process whose insert went through sends it. Delivery is
at-least-once: a crash after the receiver answered but before the row was marked delivered resends it at the next
start (``resume``) with the same ``id``, so receivers should de-duplicate on it.

Signature (Stripe's scheme): ``X-TenantLM-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.
Receivers recompute it (``verify_signature``) and reject old timestamps, which stops replays.

Retries: up to ``max_tries`` POSTs with exponential backoff (``first_delay_s`` doubling: 4+8+16+32 s ≈ 1 minute by
default) on a network error or any non-2xx answer; then the row is marked ``failed`` and logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tenantlm.metering.models import Totals, from_nano, utc_day
from tenantlm.metering.rollups import UsageQueries
from tenantlm.metering.store import UsageStore
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import usage_alerts

log = logging.getLogger("tenantlm.metering.alerts")
T = TypeVar("T")
BudgetPair = tuple[int | None, float | None]  # (monthly_token_budget, monthly_cost_budget_usd)
Budgets = Callable[[str], BudgetPair | Awaitable[BudgetPair]]
TenantUrl = Callable[[str], str | Awaitable[str | None] | None]
SIGNATURE_HEADER = "X-TenantLM-Signature"


def sign(secret: str, body: bytes, *, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, *, now: float, tolerance_s: float = 300) -> bool:
    """For receivers: the header's HMAC matches ``body`` and its timestamp is within ``tolerance_s`` of ``now``."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, body, timestamp=ts).split("v1=", 1)[1]
    return abs(now - ts) <= tolerance_s and hmac.compare_digest(expected, parts.get("v1", ""))


async def _maybe_await(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass(frozen=True, slots=True)
class AlertSettings:
    secret: str
    platform_url: str | None = None
    tenant_url: TenantUrl | None = None  # the tenant's own webhook, if it set one
    thresholds: tuple[int, ...] = (50, 80, 100)
    max_tries: int = 5
    first_delay_s: float = 4.0
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Crossing:
    metric: str  # "cost_usd" | "tokens"
    threshold: int
    used: float
    budget: float


def crossings(totals: Totals, budgets: BudgetPair, thresholds: Iterable[int]) -> list[Crossing]:
    """Every (metric, threshold) the month-to-date totals have reached; budgets of None or <= 0 have none."""
    tokens_budget, cost_budget = budgets
    found: list[Crossing] = []
    for metric, used, budget in (("tokens", float(totals.tokens), tokens_budget),
                                 ("cost_usd", totals.cost_usd, cost_budget)):
        if budget is not None and budget > 0:
            found += [Crossing(metric, t, used, float(budget)) for t in thresholds if used >= budget * t / 100]
    return found


class BudgetAlerts:
    def __init__(self, *, db: Database, budgets: Budgets, settings: AlertSettings,
                 client: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.queries = UsageQueries(UsageStore(db))
        self.budgets = budgets
        self.settings = settings
        self.client = client or httpx.AsyncClient()
        self._owns_client = client is None
        self._seen: set[tuple[str, str, str, int, str]] = set()  # claimed here or found claimed: skip the database
        self._month = ""
        self.clock = clock
        self._insert = (postgresql if db.is_postgres else sqlite).insert
        self._tasks: set[asyncio.Task[bool]] = set()

    async def check(self, tenant_ids: Iterable[str]) -> int:
        """Claim and send the alerts the tenants' new usage crossed; return how many were claimed (the flush hook)."""
        claimed = 0
        for tenant_id in tenant_ids:
            claimed += await self._check_tenant(tenant_id)
        return claimed

    async def _check_tenant(self, tenant_id: str) -> int:
        now = self.clock()
        budgets = await _maybe_await(self.budgets(tenant_id))
        totals = await self.queries.month_to_date(tenant_id=tenant_id, now=now)
        month = utc_day(now)[:7]
        if month != self._month:  # what was seen last month can never match again
            self._seen.clear()
            self._month = month
        claimed = 0
        for c in crossings(totals, budgets, self.settings.thresholds):
            for target in await self._targets(tenant_id):
                seen = (tenant_id, month, c.metric, c.threshold, target)
                if seen in self._seen:
                    continue
                body = self._body(tenant_id, month, c, target, now)
                won = await self._claim(tenant_id, month, c, target, body, now)
                self._seen.add(seen)
                if won:
                    claimed += 1
                    self._spawn(tenant_id, month, c.metric, c.threshold, target, body, 0)
        return claimed

    async def _targets(self, tenant_id: str) -> list[str]:
        targets = ["platform"] if self.settings.platform_url else []
        if await self._url(tenant_id, "tenant"):
            targets.append("tenant")
        return targets

    async def _url(self, tenant_id: str, target: str) -> str | None:
        if target == "platform":
            return self.settings.platform_url
        if self.settings.tenant_url is None:
            return None
        return await _maybe_await(self.settings.tenant_url(tenant_id))

    @staticmethod
    def _body(tenant_id: str, month: str, c: Crossing, target: str, now: float) -> dict[str, Any]:
        used = c.used if c.metric == "tokens" else from_nano(round(c.used * 1e9))
        return {"id": f"budget_alert:{tenant_id}:{month}:{c.metric}:{c.threshold}:{target}",
                "type": "usage.budget_threshold", "tenant_id": tenant_id, "month": month, "metric": c.metric,
                "threshold_percent": c.threshold, "budget": c.budget, "month_to_date": used,
                "percent_used": round(100 * c.used / c.budget, 2), "created_at": int(now)}

    async def _claim(self, tenant_id: str, month: str, c: Crossing, target: str, body: dict[str, Any],
                     now: float) -> bool:
        stmt = self._insert(usage_alerts).values(
            tenant_id=tenant_id, month=month, metric=c.metric, threshold=c.threshold, target=target,
            state="pending", body=body, attempts=0, created_at=now, delivered_at=None,
        ).on_conflict_do_nothing().returning(usage_alerts.c.tenant_id)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return (await conn.execute(stmt)).first() is not None

    def _spawn(self, tenant_id: str, month: str, metric: str, threshold: int, target: str, body: dict[str, Any],
               attempts: int) -> None:
        task = asyncio.create_task(self._deliver(tenant_id, month, metric, threshold, target, body, attempts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, tenant_id: str, month: str, metric: str, threshold: int, target: str,
                       body: dict[str, Any], attempts: int) -> bool:
        key = {"tenant_id": tenant_id, "month": month, "metric": metric, "threshold": threshold, "target": target}
        url = await self._url(tenant_id, target)
        if url is None:
            await self._mark(key, state="dropped", attempts=attempts)
            return False
        raw = orjson.dumps(body)
        for attempt in range(attempts + 1, self.settings.max_tries + 1):
            ok = await self._post(url, raw, str(body["id"]))
            state = "delivered" if ok else ("failed" if attempt == self.settings.max_tries else "pending")
            await self._mark(key, state=state, attempts=attempt)
            if ok:
                return True
            if state == "pending":
                await asyncio.sleep(self.settings.first_delay_s * 2 ** (attempt - 1))
        log.error("budget alert undeliverable", extra={"alert_id": body["id"], "tries": self.settings.max_tries})
        return False

    async def _post(self, url: str, raw: bytes, alert_id: str) -> bool:
        headers = {"content-type": "application/json", "x-tenantlm-alert-id": alert_id,
                   SIGNATURE_HEADER: sign(self.settings.secret, raw, timestamp=int(self.clock()))}
        try:
            r = await self.client.post(url, content=raw, headers=headers, timeout=self.settings.timeout_s)
        except httpx.HTTPError as exc:
            log.warning("budget alert POST failed", extra={"alert_id": alert_id, "error": type(exc).__name__})
            return False
        return 200 <= r.status_code < 300

    async def _mark(self, key: dict[str, Any], *, state: str, attempts: int) -> None:
        cond = [usage_alerts.c[k] == v for k, v in key.items()]
        values: dict[str, Any] = {"state": state, "attempts": attempts}
        if state == "delivered":
            values["delivered_at"] = self.clock()
        async with self.db.tenant_tx(tenant_id=key["tenant_id"]) as conn:
            await conn.execute(usage_alerts.update().where(*cond).values(**values))

    async def resume(self) -> int:
        """At start-up: send again every alert a previous run claimed but did not finish delivering."""
        async with self.db.platform_tx() as conn:
            rows = (await conn.execute(sa.select(usage_alerts).where(usage_alerts.c.state == "pending"))).all()
        for r in rows:
            self._spawn(r.tenant_id, r.month, r.metric, r.threshold, r.target, dict(r.body), int(r.attempts))
        return len(rows)

    async def drain(self) -> list[bool]:
        """Wait for the deliveries in flight (tests; a graceful shutdown)."""
        return list(await asyncio.gather(*self._tasks)) if self._tasks else []

    async def close(self) -> None:
        """Stop deliveries in flight (they stay pending and are resumed at the next start) and the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._owns_client:
            await self.client.aclose()
