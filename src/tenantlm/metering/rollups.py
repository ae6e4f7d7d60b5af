"""Usage queries: grouped totals, month to date, the periods the limiter seeds its budgets from, daily series.

Rollups (tenant, UTC day, model) are maintained at flush in the same transaction as the events they sum (see
``store.py``), so they always equal a GROUP BY over the raw events. ``usage`` reads them when it can — the groups are a
subset of day/model/tenant and the range is whole UTC days — and the raw events otherwise (other groups, or a range
that cuts a day). Both paths give the same numbers; the rollup path reads one row per tenant/day/model instead of one
per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from tenantlm.metering.models import (
    DAY_S,
    GROUP_COLUMNS,
    PeriodUsage,
    Totals,
    UsageRow,
    day_start,
    from_nano,
    month_bounds,
    utc_day,
)
from tenantlm.metering.store import SUMS, Scope, UsageStore
from tenantlm.storage.sql.tables import usage_events, usage_rollups

ROLLUP_GROUPS = frozenset({"day", "model", "tenant"})


def check_group_by(group_by: Sequence[str]) -> list[str]:
    unknown = [g for g in group_by if g not in GROUP_COLUMNS]
    if unknown:
        raise ValueError(f"cannot group by {unknown[0]!r}; choose from {', '.join(GROUP_COLUMNS)}")
    return list(dict.fromkeys(group_by))


def _totals(r: Any) -> Totals:
    return Totals(*(int(getattr(r, s) or 0) for s in SUMS))


def _sort_key(row: UsageRow) -> tuple[tuple[bool, str], ...]:
    return tuple((v is None, v or "") for v in row.group.values())


def uses_rollups(group_by: Sequence[str], start: float, end: float) -> bool:
    return set(group_by) <= ROLLUP_GROUPS and start % DAY_S == 0 and end % DAY_S == 0


class UsageQueries:
    def __init__(self, store: UsageStore) -> None:
        self.store = store

    async def usage(self, *, scope: Scope, start: float, end: float, group_by: Sequence[str]) -> list[UsageRow]:
        """Totals of events with ``start <= created_at < end`` per group (one row of totals for no groups)."""
        groups = check_group_by(group_by)
        if uses_rollups(groups, start, end):
            q = self._from_rollups(scope, start, end, groups)
        else:
            q = self._from_events(scope, start, end, groups)
        async with self.store.read_tx(scope) as conn:
            found = (await conn.execute(q)).all()
        rows = [UsageRow({g: getattr(r, g) for g in groups}, _totals(r)) for r in found]
        if not groups:
            return rows or [UsageRow({}, Totals())]
        return sorted(rows, key=_sort_key)

    @staticmethod
    def _from_rollups(scope: Scope, start: float, end: float, groups: list[str]) -> sa.Select[Any]:
        c = usage_rollups.c
        keys = [c[GROUP_COLUMNS[g]].label(g) for g in groups]
        q = sa.select(*keys, *[sa.func.sum(c[s]).label(s) for s in SUMS])
        q = q.where(c.day >= utc_day(start), c.day < utc_day(end))
        if isinstance(scope, str):
            q = q.where(c.tenant_id == scope)
        return q.group_by(*keys) if keys else q

    @staticmethod
    def _from_events(scope: Scope, start: float, end: float, groups: list[str]) -> sa.Select[Any]:
        c = usage_events.c
        keys = [c[GROUP_COLUMNS[g]].label(g) for g in groups]
        sums = [sa.func.count().label("requests"), *[sa.func.sum(c[s]).label(s) for s in SUMS[1:]]]
        q = sa.select(*keys, *sums).where(c.created_at >= start, c.created_at < end)
        if isinstance(scope, str):
            q = q.where(c.tenant_id == scope)
        return q.group_by(*keys) if keys else q

    async def month_to_date(self, *, tenant_id: str, now: float) -> Totals:
        """The tenant's totals for the UTC month holding ``now`` (from the rollups)."""
        start, end = month_bounds(now)
        [row] = await self.usage(scope=tenant_id, start=start, end=end, group_by=[])
        return row.totals

    async def daily(self, *, tenant_id: str, start: float, end: float) -> dict[str, Totals]:
        """Totals per UTC day (``YYYY-MM-DD``) for whole days in [start, end); days without usage are absent."""
        rows = await self.usage(scope=tenant_id, start=day_start(start), end=day_start(end), group_by=["day"])
        return {str(r.group["day"]): r.totals for r in rows}

    async def period_usage(self, *, scope: Scope, now: float) -> list[PeriodUsage]:
        """Today's and this month's tokens and cost (UTC) per tenant, per key and per end user."""
        c = usage_events.c
        tokens = c.prompt_tokens + c.completion_tokens
        today = c.created_at >= day_start(now)
        q = sa.select(c.tenant_id, c.key_id, c.end_user,
                      sa.func.sum(tokens).label("month_tokens"), sa.func.sum(c.cost_nanousd).label("month_cost"),
                      sa.func.sum(sa.case((today, tokens), else_=0)).label("day_tokens"),
                      sa.func.sum(sa.case((today, c.cost_nanousd), else_=0)).label("day_cost"),
                      ).where(c.created_at >= month_bounds(now)[0]).group_by(c.tenant_id, c.key_id, c.end_user)
        if isinstance(scope, str):
            q = q.where(c.tenant_id == scope)
        async with self.store.read_tx(scope) as conn:
            found = (await conn.execute(q)).all()
        return _levels(found)


def _levels(found: Sequence[Any]) -> list[PeriodUsage]:
    """Fold (tenant, key, end user) sums into the three levels the limiter keeps budgets at."""
    acc: dict[tuple[str, str | None, str | None], list[int]] = {}
    for r in found:
        sums = (int(r.day_tokens or 0), int(r.day_cost or 0), int(r.month_tokens or 0), int(r.month_cost or 0))
        levels = [(r.tenant_id, None, None)]
        if r.key_id is not None:
            levels.append((r.tenant_id, r.key_id, None))
        if r.end_user is not None:
            levels.append((r.tenant_id, None, r.end_user))
        for level in levels:
            total = acc.setdefault(level, [0, 0, 0, 0])
            for i, v in enumerate(sums):
                total[i] += v
    return [PeriodUsage(tenant_id=t, key_id=k, end_user=u, day_tokens=s[0], day_cost_usd=from_nano(s[1]),
                        month_tokens=s[2], month_cost_usd=from_nano(s[3]))
            for (t, k, u), s in sorted(acc.items(), key=lambda kv: tuple(x or "" for x in kv[0]))]
