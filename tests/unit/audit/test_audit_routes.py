"""The audit admin routes on a bare app: who may read which entries, list shape, JSON-lines export."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from route_kit import FakeAuth, auth, route_client
from tenantlm.api.admin.audit_routes import router as audit_router
from tenantlm.audit.auth_failures import AuthFailureAggregator
from tenantlm.audit.service import AuditLog
from tenantlm.audit.signer import AuditSigner
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import migrate


@dataclass
class FakeServices:
    auth: FakeAuth
    audit: AuditLog
    auth_failures: AuthFailureAggregator


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    await migrate(url=url, migrate_url=None)
    db = Database.from_url(url)
    audit = AuditLog(db, AuditSigner.generate())
    for i, tenant_id in enumerate(["ten_a", "ten_b", None, "ten_a", "ten_a"]):
        await audit.append(actor="platform_key:adm_1", action="key.created" if i % 2 else "tenant.updated",
                           tenant_id=tenant_id, request_id=None, details={"i": i})
    services = FakeServices(auth=FakeAuth(), audit=audit, auth_failures=AuthFailureAggregator(audit))
    try:
        async with route_client(audit_router, services) as c:
            yield c
    finally:
        await db.dispose()


async def test_platform_log_and_filters(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/v1/audit", headers=auth("platform"), params={"limit": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and body["has_more"] is True and [e["seq"] for e in body["data"]] == [1, 2]
    r = await client.get("/admin/v1/audit", headers=auth("platform"), params={"after": 2})
    assert [e["seq"] for e in r.json()["data"]] == [3, 4, 5] and r.json()["has_more"] is False
    r = await client.get("/admin/v1/audit", headers=auth("platform"), params={"tenant_id": "ten_a",
                                                                              "action": "key.created"})
    assert [e["seq"] for e in r.json()["data"]] == [4]
    r = await client.get("/admin/v1/audit", headers=auth("platform"), params={"limit": 1001})
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"


@pytest.mark.parametrize("who", ["a_admin", "a_member", "b_admin"])
async def test_platform_log_is_platform_only(client: httpx.AsyncClient, who: str) -> None:
    for path in ("/admin/v1/audit", "/admin/v1/audit/export"):
        r = await client.get(path, headers=auth(who))
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"


async def test_tenant_admin_sees_only_its_own_entries(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/v1/tenants/ten_a/audit", headers=auth("a_admin"))
    assert r.status_code == 200
    assert [(e["seq"], e["tenant_id"]) for e in r.json()["data"]] == [(1, "ten_a"), (4, "ten_a"), (5, "ten_a")]
    r = await client.get("/admin/v1/tenants/ten_a/audit", headers=auth("platform"))
    assert [e["seq"] for e in r.json()["data"]] == [1, 4, 5]


@pytest.mark.parametrize("who,status", [("a_member", 403), ("a_viewer", 403), ("b_admin", 404), ("nobody", 401)])
async def test_tenant_log_needs_that_tenants_admin(client: httpx.AsyncClient, who: str, status: int) -> None:
    for path in ("/admin/v1/tenants/ten_a/audit", "/admin/v1/tenants/ten_a/audit/export"):
        r = await client.get(path, headers=auth(who))
        assert r.status_code == status, (path, r.text)


async def test_exports_are_json_lines_and_are_themselves_audited(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/v1/tenants/ten_a/audit/export", headers=auth("a_admin"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    assert 'filename="audit-ten_a.jsonl"' in r.headers["content-disposition"]
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [x["seq"] for x in lines] == [1, 4, 5, 6] and lines[-1]["action"] == "audit.exported"
    assert lines[-1]["actor"] == "tenant:ten_a:k_ten_a_admin" and lines[-1]["details"]["scope"] == "tenant"
    r = await client.get("/admin/v1/audit/export", headers=auth("platform"), params={"after": 5})
    assert [json.loads(x)["seq"] for x in r.text.splitlines()] == [6, 7]
    r = await client.get("/admin/v1/audit/export", headers=auth("platform"), params={"action": "nothing.such"})
    assert r.status_code == 200 and r.text == ""
