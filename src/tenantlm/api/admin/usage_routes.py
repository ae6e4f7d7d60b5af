"""Admin API for usage (``/admin/v1``): totals grouped as asked, exports, and the month-end forecast.

``GET /usage`` covers every tenant and is for platform admin keys only. ``GET /tenants/{id}/usage``,
``.../usage/storage`` (the storage ledger, ``metering/storage.py``) and ``.../usage/forecast`` are for the platform
or that tenant's admin keys (members and viewers 403, other tenants 404).

Query: ``start`` / ``end`` as unix seconds or ISO 8601 (a bare date as ``end`` includes that whole day; the range is
[start, end)); defaults are the current UTC month up to the end of today. ``group_by`` is a comma list of day, model,
tenant, key, end_user, provider, status, prompt (a prompt template's id), prompt_version (its base version used),
prompt_override_version (the tenant override's version). ``format``: json (default), csv (per group with group_by,
else per event), cloudevents (OpenMeter JSON lines) or stripe (meter-event JSON lines; ``stripe_value`` picks the
metered value).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response, StreamingResponse

from tenantlm.api.deps import principal, services
from tenantlm.api.responses import JSONResponse
from tenantlm.errors import InvalidRequest, NotFound
from tenantlm.metering import export
from tenantlm.metering.ledger import Ledger
from tenantlm.metering.models import DAY_S, GROUP_COLUMNS, day_start, month_bounds
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, PlatformPermission, Principal

router = APIRouter(prefix="/admin/v1", default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]
TimeQ = Annotated[str | None, Query(max_length=40)]
ListQ = Annotated[str | None, Query(max_length=200)]
FormatQ = Annotated[str, Query(max_length=20)]
StripeValueQ = Annotated[str, Query(max_length=20)]
# Only the admin role holds it among tenant keys. A dedicated "usage:read" permission would be better (tenancy owns
# the Permission enum); until then usage is as sensitive as request logs.
USAGE_PERMISSION = Permission.USAGE_READ
FORMATS = ("json", "csv", "cloudevents", "stripe")
NDJSON = "application/x-ndjson"


@dataclass(frozen=True, slots=True)
class UsageQuery:
    start: float
    end: float
    group_by: list[str]
    format: str


def parse_time(value: str, *, param: str, end_of_day: bool = False) -> float:
    """Unix seconds, an ISO 8601 date (midnight UTC; the next midnight for ``end``) or an ISO 8601 date-time."""
    text = value.strip()
    try:
        ts = float(text)
    except ValueError:
        ts = _iso(text, param=param, end_of_day=end_of_day)
    if not math.isfinite(ts) or not 0 <= ts < 1e11:
        raise InvalidRequest(f"{param} is out of range", param=param)
    return ts


def _iso(text: str, *, param: str, end_of_day: bool) -> float:
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() + (DAY_S if end_of_day else 0)
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{param} must be unix seconds or an ISO 8601 date or date-time", param=param) from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def parse_group_by(value: str | None) -> list[str]:
    names = [g.strip() for g in (value or "").split(",") if g.strip()]
    for g in names:
        if g not in GROUP_COLUMNS:
            raise InvalidRequest(f"cannot group by {g!r}; choose from {', '.join(GROUP_COLUMNS)}", param="group_by")
    return list(dict.fromkeys(names))


def parse_query(*, start: str | None, end: str | None, group_by: str | None, fmt: str, now: float) -> UsageQuery:
    lo = month_bounds(now)[0] if start is None else parse_time(start, param="start")
    hi = day_start(now) + DAY_S if end is None else parse_time(end, param="end", end_of_day=True)
    if hi <= lo:
        raise InvalidRequest("end must be after start", param="end")
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}", param="format")
    groups = parse_group_by(group_by)
    if groups and fmt in ("cloudevents", "stripe"):
        raise InvalidRequest(f"format={fmt} exports one line per event; leave out group_by", param="group_by")
    return UsageQuery(lo, hi, groups, fmt)


def _ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.services.ledger  # untyped access keeps the route tests' fake container simple
    return ledger


async def _streamed(lines: AsyncIterator[bytes], media_type: str, filename: str) -> StreamingResponse:
    first = await anext(lines, b"")  # read here, so a database error is a clean 503 rather than a cut stream

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in lines:
            yield chunk

    return StreamingResponse(body(), media_type=media_type,
                             headers={"content-disposition": f'attachment; filename="{filename}"'})


def _customer_lookup(request: Request) -> export.CustomerOf:
    tenancy = services(request).tenancy

    async def customer_of(tenant_id: str) -> str | None:
        try:
            tenant = await tenancy.get_tenant(tenant_id=tenant_id)
        except NotFound:
            return None
        value = tenant.billing.get("stripe_customer_id")  # platform-only (never the tenant-writable metadata)
        return value if isinstance(value, str) and value else None

    return customer_of


async def _answer(request: Request, q: UsageQuery, *, tenant_id: str | None, stripe_value: str) -> Any:
    ledger = _ledger(request)
    name = f"usage-{tenant_id or 'platform'}"
    if q.format == "json" or (q.format == "csv" and q.group_by):
        rows = await (ledger.platform_usage(start=q.start, end=q.end, group_by=q.group_by) if tenant_id is None else
                      ledger.usage(tenant_id=tenant_id, start=q.start, end=q.end, group_by=q.group_by))
        if q.format == "csv":
            return Response(export.rows_csv(rows, q.group_by), media_type="text/csv",
                            headers={"content-disposition": f'attachment; filename="{name}.csv"'})
        return {"object": "list", "start": q.start, "end": q.end, "group_by": q.group_by,
                "data": [r.public() for r in rows]}
    pages = (ledger.platform_events(start=q.start, end=q.end) if tenant_id is None else
             ledger.events(tenant_id=tenant_id, start=q.start, end=q.end))
    if q.format == "csv":
        return await _streamed(export.events_csv(pages), "text/csv", f"{name}.csv")
    if q.format == "cloudevents":
        return await _streamed(export.cloudevents_jsonl(pages), NDJSON, f"{name}.cloudevents.jsonl")
    if stripe_value not in export.STRIPE_VALUES:
        raise InvalidRequest(f"stripe_value must be one of {', '.join(export.STRIPE_VALUES)}", param="stripe_value")
    lines = export.stripe_jsonl(pages, _customer_lookup(request), value=stripe_value)
    return await _streamed(lines, NDJSON, f"{name}.stripe.jsonl")


@router.get("/usage")
async def platform_usage(request: Request, who: PrincipalDep, start: TimeQ = None, end: TimeQ = None,
                         group_by: ListQ = None, format: FormatQ = "json",
                         stripe_value: StripeValueQ = "tokens") -> Any:
    access.platform_only(who, PlatformPermission.USAGE_ALL)
    q = parse_query(start=start, end=end, group_by=group_by, fmt=format, now=_ledger(request).clock())
    return await _answer(request, q, tenant_id=None, stripe_value=stripe_value)


@router.get("/tenants/{tenant_id}/usage")
async def tenant_usage(tenant_id: str, request: Request, who: PrincipalDep, start: TimeQ = None, end: TimeQ = None,
                       group_by: ListQ = None, format: FormatQ = "json",
                       stripe_value: StripeValueQ = "tokens") -> Any:
    access.on_tenant(who, tenant_id, USAGE_PERMISSION)
    q = parse_query(start=start, end=end, group_by=group_by, fmt=format, now=_ledger(request).clock())
    return await _answer(request, q, tenant_id=tenant_id, stripe_value=stripe_value)


@router.get("/tenants/{tenant_id}/usage/storage")
async def tenant_storage(tenant_id: str, request: Request, who: PrincipalDep, start: TimeQ = None,
                         end: TimeQ = None) -> Any:
    """The tenant's storage ledger: per UTC day the most bytes it kept of each kind (sampled; today sampled now),
    the GB-days and their cost at the operator's price."""
    access.on_tenant(who, tenant_id, USAGE_PERMISSION)
    q = parse_query(start=start, end=end, group_by=None, fmt="json", now=_ledger(request).clock())
    await request.app.state.services.tenancy.get_tenant(tenant_id=tenant_id)  # a deleted tenant is a 404
    report: dict[str, Any] = await request.app.state.services.storage.report(tenant_id=tenant_id, start=q.start,
                                                                              end=q.end)
    return report


@router.get("/tenants/{tenant_id}/usage/forecast")
async def tenant_forecast(tenant_id: str, request: Request, who: PrincipalDep) -> Any:
    access.on_tenant(who, tenant_id, USAGE_PERMISSION)
    return (await _ledger(request).forecast(tenant_id=tenant_id)).public()
