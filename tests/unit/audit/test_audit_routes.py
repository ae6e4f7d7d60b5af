"""The audit admin routes on a bare app: who may read which entries, list shape, JSON-lines export."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from route_kit import FakeAuth, auth, route_client
from tenantlm.api.admin.audit_routes import router as audit_router
from tenantlm.audit.auth_failures import AuthFailureAggregator
from tenantlm.audit.service import AuditLog
from tenantlm.audit.signer import AuditSigner
from tenantlm.audit.verify import verify_tenant_export
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import migrate


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeServices:
    auth: FakeAuth
    audit: AuditLog
    auth_failures: AuthFailureAggregator


@asynccontextmanager
async def serving(path: Path, clock: Clock | None = None) -> AsyncIterator[tuple[httpx.AsyncClient, AuditLog]]:
    url = f"sqlite+aiosqlite:///{path}"
    await migrate(url=url, migrate_url=None)
    db = Database.from_url(url)
    audit = AuditLog(db, AuditSigner.generate(), **({"clock": clock} if clock else {}))
    services = FakeServices(auth=FakeAuth(), audit=audit, auth_failures=AuthFailureAggregator(audit))
    try:
        async with route_client(audit_router, services) as c:
            yield c, audit
    finally:
        await db.dispose()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(tmp_path / "audit.db") as (c, audit):
        for i, tenant_id in enumerate(["ten_a", "ten_b", None, "ten_a", "ten_a"]):
            await audit.append(actor="platform_key:adm_1", action="key.created" if i % 2 else "tenant.updated",
                               tenant_id=tenant_id, request_id=None, details={"i": i})
        yield c


async def test_platform_log_and_filters(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/v1/audit", headers=auth("platform"), params={"limit": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and body["has_more"] is True and [e["seq"] for e in body["data"]] == [1, 2]
    assert [(e["chain"], e["tenant_id"], e["tenant_seq"]) for e in body["data"]] == [("platform", "ten_a", 1),
                                                                                    ("platform", "ten_b", 1)]
    r = await client.get("/admin/v1/audit", headers=auth("platform"), params={"after": 2})
    assert [e["seq"] for e in r.json()["data"]] == [3, 4, 5] and r.json()["has_more"] is False
    assert [e["tenant_seq"] for e in r.json()["data"]] == [None, 2, 3]
    # naming a tenant reads that tenant's own chain, on the platform route too
    r = await client.get("/admin/v1/audit", headers=auth("platform"), params={"tenant_id": "ten_a",
                                                                              "action": "key.created"})
    assert [(e["seq"], e["chain"]) for e in r.json()["data"]] == [(2, "tenant")]
    r = await client.get("/admin/v1/audit", headers=auth("platform"), params={"limit": 1001})
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"


@pytest.mark.parametrize("who", ["a_admin", "a_member", "b_admin"])
async def test_platform_log_is_platform_only(client: httpx.AsyncClient, who: str) -> None:
    for path in ("/admin/v1/audit", "/admin/v1/audit/export"):
        r = await client.get(path, headers=auth(who))
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"


async def test_tenant_admin_sees_only_its_own_chain(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/v1/tenants/ten_a/audit", headers=auth("a_admin"))
    assert r.status_code == 200
    mine = r.json()["data"]
    assert [(e["seq"], e["tenant_id"], e["chain"]) for e in mine] == [(1, "ten_a", "tenant"), (2, "ten_a", "tenant"),
                                                                       (3, "ten_a", "tenant")]
    assert [e["prev_hash"] for e in mine] == ["00" * 32, mine[0]["hash"], mine[1]["hash"]]
    platform = (await client.get("/admin/v1/audit", headers=auth("platform"))).json()["data"]
    for e in platform:  # no platform hash, and no platform-only field, reaches the tenant
        assert e["hash"] not in r.text and e["prev_hash"] not in r.text.replace("00" * 32, "")
    assert not {"tenant_seq", "tenant_hash", "tenant_prev_hash", "format_version"} & {k for e in mine for k in e}
    assert [e["hash"] for e in mine] == [e["tenant_hash"] for e in platform if e["tenant_id"] == "ten_a"]
    r = await client.get("/admin/v1/tenants/ten_a/audit", headers=auth("a_admin"), params={"after": 1, "limit": 1})
    assert [e["seq"] for e in r.json()["data"]] == [2] and r.json()["has_more"] is True
    r = await client.get("/admin/v1/tenants/ten_a/audit", headers=auth("platform"))
    assert r.json()["data"] == mine


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
    assert [x["seq"] for x in lines] == [1, 2, 3, 4] and lines[-1]["action"] == "audit.exported"
    assert lines[-1]["actor"] == "tenant:ten_a:k_ten_a_admin" and lines[-1]["details"]["scope"] == "tenant"
    assert (await verify_tenant_export(r.text.splitlines())).ok
    r = await client.get("/admin/v1/audit/export", headers=auth("platform"), params={"after": 5})
    assert [json.loads(x)["seq"] for x in r.text.splitlines()] == [6, 7]
    r = await client.get("/admin/v1/audit/export", headers=auth("platform"), params={"action": "nothing.such"})
    assert r.status_code == 200 and r.text == ""


async def _tenant_a_view(path: Path, *, with_b: bool) -> tuple[bytes, bytes]:
    """Tenant A's actions at fixed times, with or without tenant B's and the platform's between them; then A's
    page and A's export as its admin receives them (bytes)."""
    clock = Clock()
    async with serving(path, clock) as (c, audit):
        for i in range(6):
            if with_b:
                for j in range(i + 1):  # B's volume differs between A's entries
                    clock.now += 0.25
                    await audit.append(actor="tenant:ten_b:k1", action="key.created", tenant_id="ten_b",
                                       request_id=f"req_b{i}{j}", details={"j": j})
                clock.now += 0.25
                await audit.append(actor="system:x", action="plan.updated", tenant_id=None, request_id=None,
                                   details={})
            clock.now = 1_700_000_100.0 + i
            await audit.append(actor="tenant:ten_a:k1", action="tenant.updated", tenant_id="ten_a",
                               request_id=f"req_a{i}", details={"i": i})
        page = await c.get("/admin/v1/tenants/ten_a/audit", headers=auth("a_admin"), params={"limit": 1000})
        clock.now = 1_700_000_200.0
        export = await c.get("/admin/v1/tenants/ten_a/audit/export", headers=auth("a_admin"))
        assert page.status_code == export.status_code == 200
        return page.content, export.content


async def test_a_tenants_view_is_byte_identical_whatever_other_tenants_do(tmp_path: Path) -> None:
    alone = await _tenant_a_view(tmp_path / "alone.db", with_b=False)
    shared = await _tenant_a_view(tmp_path / "shared.db", with_b=True)
    assert shared == alone  # same seqs, same links, same bytes: nothing about B shows through
    assert json.loads(alone[0])["data"][-1]["seq"] == 6 and len(alone[1].splitlines()) == 7
