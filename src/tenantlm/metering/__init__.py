"""Metering: the usage ledger (one event per upstream attempt, durable before acknowledgement, exactly once in SQL),
pricing, rollups and queries, exports (CSV, CloudEvents/OpenMeter, Stripe), budget alerts and the spend forecast."""

from tenantlm.metering.ledger import Ledger
from tenantlm.metering.models import FlushResult, Forecast, PeriodUsage, Totals, UsageEvent, UsageRow, event_id

__all__ = ["FlushResult", "Forecast", "Ledger", "PeriodUsage", "Totals", "UsageEvent", "UsageRow", "event_id"]
