"""Usage exports: CSV (per event or per group), CloudEvents 1.0 JSON lines for OpenMeter, Stripe meter events.

- CloudEvents (structured mode, one JSON object per line, OpenMeter's ingest shape): ``specversion`` "1.0", ``type``
  "tenantlm.usage" (what an OpenMeter meter's ``eventType`` matches), ``source``, ``id`` = the event's idempotency id
  (OpenMeter de-duplicates on source + id), ``time`` RFC 3339 UTC, ``subject`` = tenant id (OpenMeter aggregates per
  subject), ``data`` = tokens, cost and the dimensions a meter may group by (``$.model``, ``$.key_id``, ...).
- Stripe (``POST /v1/billing/meter_events`` parameters, one object per line): ``event_name``, ``payload`` with
  ``stripe_customer_id`` (the tenant's platform-only ``billing.stripe_customer_id``) and ``value`` (a string, as
  Stripe echoes it), ``identifier`` = the event id (Stripe de-duplicates on it; ids longer than Stripe's 100
  characters are replaced by a stable hash), ``timestamp`` = unix seconds. Events of tenants without a customer id,
  and events whose value is 0, are left out. Stripe refuses timestamps older than 35 days: export and send at least
  that often.
- CSV cells that start with ``= + - @`` (a client-chosen end-user id, say) are prefixed with ``'`` so a spreadsheet
  does not run them as formulas.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import orjson

from tenantlm.metering.models import UsageEvent, UsageRow, from_nano, rfc3339

CSV_EVENT_FIELDS = ("id", "time", "created_at", "tenant_id", "key_id", "end_user", "model", "provider",
                    "upstream_model", "region", "status", "http_status", "prompt_tokens", "completion_tokens",
                    "cached_tokens", "total_tokens", "cost_usd", "latency_ms", "ttft_ms", "prompt_id", "prompt_version",
                    "prompt_override_version", "history_items")
CSV_TOTAL_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens", "cost_usd")
STRIPE_VALUES = ("tokens", "prompt_tokens", "completion_tokens", "cost_micro_usd")
CustomerOf = Callable[[str], Awaitable[str | None]]
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    if isinstance(value, float):
        return f"{value:.9f}".rstrip("0").rstrip(".")
    return "" if value is None else value


def _csv_lines(rows: Iterable[Sequence[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows([_cell(v) for v in row] for row in rows)
    return out.getvalue().encode()


def _event_cells(e: UsageEvent) -> list[Any]:
    return [e.id, rfc3339(e.created_at), round(e.created_at, 6), e.tenant_id, e.key_id, e.end_user, e.model,
            e.provider, e.upstream_model, e.region, e.status, e.http_status, e.prompt_tokens, e.completion_tokens,
            e.cached_tokens, e.tokens, e.cost_usd, round(e.latency_ms, 3),
            None if e.ttft_ms is None else round(e.ttft_ms, 3), e.prompt_id, e.prompt_version,
            e.prompt_override_version, e.history_items]


async def events_csv(pages: AsyncIterator[list[UsageEvent]]) -> AsyncIterator[bytes]:
    """A header row, then one row per event."""
    yield _csv_lines([CSV_EVENT_FIELDS])
    async for page in pages:
        yield _csv_lines(_event_cells(e) for e in page)


def rows_csv(rows: Sequence[UsageRow], group_by: Sequence[str]) -> bytes:
    """A header row, then one row per group."""
    body = [[*r.group.values(), *(r.totals.public()[f] for f in CSV_TOTAL_FIELDS)] for r in rows]
    return _csv_lines([[*group_by, *CSV_TOTAL_FIELDS], *body])


def cloudevent(e: UsageEvent, *, source: str = "tenantlm", type_: str = "tenantlm.usage") -> dict[str, Any]:
    return {"specversion": "1.0", "type": type_, "source": source, "id": e.id, "time": rfc3339(e.created_at),
            "subject": e.tenant_id, "datacontenttype": "application/json",
            "data": {"prompt_tokens": e.prompt_tokens, "completion_tokens": e.completion_tokens,
                     "cached_tokens": e.cached_tokens, "total_tokens": e.tokens, "cost_usd": from_nano(e.cost_nanousd),
                     "model": e.model, "provider": e.provider, "upstream_model": e.upstream_model,
                     "region": e.region, "key_id": e.key_id, "end_user": e.end_user, "status": e.status,
                     "http_status": e.http_status, "latency_ms": e.latency_ms, "ttft_ms": e.ttft_ms,
                     "prompt_id": e.prompt_id, "prompt_version": e.prompt_version,
                     "prompt_override_version": e.prompt_override_version, "history_items": e.history_items}}


async def cloudevents_jsonl(pages: AsyncIterator[list[UsageEvent]], *,
                            source: str = "tenantlm") -> AsyncIterator[bytes]:
    async for page in pages:
        yield b"".join(orjson.dumps(cloudevent(e, source=source)) + b"\n" for e in page)


def stripe_identifier(event_id: str) -> str:
    if len(event_id) <= 100:
        return event_id
    return "tlm_" + hashlib.sha256(event_id.encode()).hexdigest()


def stripe_value(e: UsageEvent, value: str) -> int:
    if value == "tokens":
        return e.tokens
    if value == "cost_micro_usd":
        return round(e.cost_nanousd / 1000)
    if value in ("prompt_tokens", "completion_tokens"):
        return int(getattr(e, value))
    raise ValueError(f"unknown Stripe meter value {value!r}; choose from {', '.join(STRIPE_VALUES)}")


def stripe_meter_event(e: UsageEvent, *, customer_id: str, event_name: str, value: str) -> dict[str, Any] | None:
    amount = stripe_value(e, value)
    if amount == 0:
        return None
    return {"event_name": event_name, "identifier": stripe_identifier(e.id), "timestamp": int(e.created_at),
            "payload": {"stripe_customer_id": customer_id, "value": str(amount)}}


async def stripe_jsonl(pages: AsyncIterator[list[UsageEvent]], customer_of: CustomerOf, *,
                       event_name: str = "tenantlm_tokens", value: str = "tokens") -> AsyncIterator[bytes]:
    customers: dict[str, str | None] = {}
    async for page in pages:
        lines: list[bytes] = []
        for e in page:
            if e.tenant_id not in customers:
                customers[e.tenant_id] = await customer_of(e.tenant_id)
            customer = customers[e.tenant_id]
            event = None if customer is None else stripe_meter_event(e, customer_id=customer,
                                                                     event_name=event_name, value=value)
            if event is not None:
                lines.append(orjson.dumps(event) + b"\n")
        yield b"".join(lines)
