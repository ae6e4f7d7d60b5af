"""Month-end spend forecast: month to date plus a recent daily run rate times the days left.

The run rate is the mean of the last 7 full UTC days of this month, or of all full days so far when the month is
younger than that; on the month's first day, today so far scaled to a whole day (at least one hour counted, so the
first minutes of a month do not explode the estimate). The method used is named in the result.
"""

from __future__ import annotations

from tenantlm.metering.models import DAY_S, Forecast, day_start, from_nano, month_bounds, utc_day
from tenantlm.metering.rollups import UsageQueries

WINDOW_DAYS = 7


async def forecast(queries: UsageQueries, *, tenant_id: str, now: float) -> Forecast:
    month_start, month_end = month_bounds(now)
    mtd = await queries.month_to_date(tenant_id=tenant_id, now=now)
    today = day_start(now)
    window = min(WINDOW_DAYS, int((today - month_start) // DAY_S))
    if window > 0:
        days = await queries.daily(tenant_id=tenant_id, start=today - window * DAY_S, end=today)
        cost_rate = sum(t.cost_nanousd for t in days.values()) / window
        token_rate = sum(t.tokens for t in days.values()) / window
        method = "mean_last_7_full_days" if window == WINDOW_DAYS else "mean_full_days_this_month"
        window_days = float(window)
    else:
        window_days = max(now - month_start, 3600.0) / DAY_S
        cost_rate = mtd.cost_nanousd / window_days
        token_rate = mtd.tokens / window_days
        method = "today_so_far_extrapolated"
    days_left = (month_end - now) / DAY_S
    return Forecast(tenant_id=tenant_id, month=utc_day(now)[:7], month_to_date_cost_usd=mtd.cost_usd,
                    month_to_date_tokens=mtd.tokens, daily_run_rate_usd=from_nano(round(cost_rate)),
                    daily_run_rate_tokens=round(token_rate, 3), days_left=round(days_left, 4),
                    forecast_cost_usd=from_nano(mtd.cost_nanousd + round(cost_rate * days_left)),
                    forecast_tokens=mtd.tokens + round(token_rate * days_left), method=method,
                    window_days=round(window_days, 4))
