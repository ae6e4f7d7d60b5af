"""The usage admin routes on a bare app: who may read what, query validation (400 in OpenAI's shape), the
formats, and the forecast."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from route_kit import FakeAuth, auth, route_client, tenant
from tenantlm.api.admin.usage_routes import router as usage_router
from tenantlm.errors import NotFound
from tenantlm.metering.ledger import Ledger
from tenantlm.metering.models import UsageEvent
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import migrate
from tenantlm.tenancy.models import Tenant

NOW = 1_804_680_000.0  # 2027-03-10 12:00 UTC
DAY = 86400.0


class FakeTenancy:
    async def get_tenant(self, *, tenant_id: str) -> Tenant:
        if tenant_id == "ten_a":
            return dataclasses.replace(tenant(tenant_id, at=NOW), billing={"stripe_customer_id": "cus_A"})
        if tenant_id == "ten_b":
            return tenant(tenant_id, at=NOW)
        raise NotFound("no such tenant")


class FakeAuthFailures:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def record(self, *, reason: str, **_: Any) -> None:
        self.reasons.append(reason)


@dataclass
class FakeServices:
    auth: FakeAuth
    ledger: Ledger
    tenancy: FakeTenancy
    auth_failures: FakeAuthFailures


def event(n: int, tenant_id: str, created_at: float, model: str = "m1") -> UsageEvent:
    return UsageEvent(id=f"req_{n}:0", tenant_id=tenant_id, key_id="key_1", end_user=None, model=model,
                      provider="fake", upstream_model="up", region="local", prompt_tokens=100, completion_tokens=20,
                      cached_tokens=0, latency_ms=5.0, ttft_ms=None, status="ok", http_status=200, cost_usd=0.001,
                      created_at=created_at)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'usage.db'}"
    await migrate(url=url, migrate_url=None)
    db = Database.from_url(url)
    ledger = Ledger(db=db, directory=tmp_path / "ledger", clock=lambda: NOW)
    await ledger.start()
    for n, (tid, at, model) in enumerate([("ten_a", NOW - DAY, "m1"), ("ten_a", NOW - 60, "m2"),
                                          ("ten_a", NOW - 50, "m1"), ("ten_b", NOW - 40, "m1")]):
        await ledger.record(event(n, tid, at, model))
    await ledger.flush()
    services = FakeServices(auth=FakeAuth(), ledger=ledger, tenancy=FakeTenancy(), auth_failures=FakeAuthFailures())
    try:
        async with route_client(usage_router, services) as c:
            yield c
    finally:
        await ledger.close(flush=False)
        await db.dispose()


async def test_platform_usage_grouped_by_tenant(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/v1/usage", headers=auth("platform"), params={"group_by": "tenant"})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and body["group_by"] == ["tenant"]
    assert [(d["tenant"], d["requests"], d["total_tokens"]) for d in body["data"]] == [("ten_a", 3, 360),
                                                                                       ("ten_b", 1, 120)]
    assert body["start"] == 1_803_859_200.0 and body["end"] == NOW - NOW % DAY + DAY  # this month up to tonight


@pytest.mark.parametrize("who", ["a_admin", "a_member", "b_admin"])
async def test_platform_usage_is_platform_only(client: httpx.AsyncClient, who: str) -> None:
    r = await client.get("/admin/v1/usage", headers=auth(who))
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"


async def test_tenant_admin_reads_its_own_usage(client: httpx.AsyncClient) -> None:
    for who in ("a_admin", "platform"):
        r = await client.get("/admin/v1/tenants/ten_a/usage", headers=auth(who),
                             params={"group_by": "day,model", "start": "2027-03-10", "end": "2027-03-10"})
        assert r.status_code == 200, r.text
        assert [(d["day"], d["model"], d["requests"]) for d in r.json()["data"]] == [("2027-03-10", "m1", 1),
                                                                                     ("2027-03-10", "m2", 1)]


@pytest.mark.parametrize("who,status", [("a_member", 403), ("a_viewer", 403), ("b_admin", 404), ("nobody", 401)])
async def test_tenant_usage_needs_that_tenants_admin(client: httpx.AsyncClient, who: str, status: int) -> None:
    for path in ("/admin/v1/tenants/ten_a/usage", "/admin/v1/tenants/ten_a/usage/forecast"):
        r = await client.get(path, headers=auth(who))
        assert r.status_code == status, (path, r.text)


@pytest.mark.parametrize("params,param", [
    ({"group_by": "day,colour"}, "group_by"), ({"format": "xml"}, "format"), ({"start": "yesterday"}, "start"),
    ({"start": "1900000000", "end": "1800000000"}, "end"), ({"end": "2027-02-30"}, "end"), ({"start": "-5"}, "start"),
    ({"start": "nan"}, "start"), ({"format": "stripe", "group_by": "day"}, "group_by"),
    ({"format": "stripe", "stripe_value": "vibes"}, "stripe_value"),
])
async def test_bad_queries_are_400_naming_the_parameter(client: httpx.AsyncClient, params: dict[str, str],
                                                        param: str) -> None:
    r = await client.get("/admin/v1/tenants/ten_a/usage", headers=auth("a_admin"), params=params)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


async def test_unix_seconds_and_date_times_select_the_range(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/v1/tenants/ten_a/usage", headers=auth("a_admin"),
                         params={"start": str(NOW - 55), "end": "2027-03-10T12:00:00Z"})
    assert [d["requests"] for d in r.json()["data"]] == [1]


async def test_csv_per_event_and_per_group(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/v1/tenants/ten_a/usage", headers=auth("a_admin"), params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="usage-ten_a.csv"' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sorted(x["id"] for x in rows) == ["req_0:0", "req_1:0", "req_2:0"]
    r = await client.get("/admin/v1/usage", headers=auth("platform"), params={"format": "csv", "group_by": "model"})
    assert list(csv.reader(io.StringIO(r.text))) == [
        ["model", "requests", "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens", "cost_usd"],
        ["m1", "3", "300", "60", "0", "360", "0.003"], ["m2", "1", "100", "20", "0", "120", "0.001"]]


async def test_cloudevents_and_stripe_lines(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/v1/usage", headers=auth("platform"), params={"format": "cloudevents"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(x) for x in r.text.splitlines()]
    assert [x["id"] for x in lines] == ["req_0:0", "req_1:0", "req_2:0", "req_3:0"]
    assert {x["subject"] for x in lines} == {"ten_a", "ten_b"} and lines[0]["specversion"] == "1.0"
    r = await client.get("/admin/v1/usage", headers=auth("platform"),
                         params={"format": "stripe", "stripe_value": "cost_micro_usd"})
    stripe = [orjson.loads(x) for x in r.text.splitlines()]  # ten_b has no Stripe customer: left out
    assert [(s["identifier"], s["payload"]) for s in stripe] == [
        (f"req_{n}:0", {"stripe_customer_id": "cus_A", "value": "1000"}) for n in range(3)]


async def test_forecast(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/v1/tenants/ten_a/usage/forecast", headers=auth("a_admin"))
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "usage.forecast" and body["method"] == "mean_last_7_full_days"
    assert body["month_to_date_tokens"] == 360 and body["days_left"] == 21.5
    assert body["forecast_tokens"] == 360 + round(120 / 7 * 21.5)

