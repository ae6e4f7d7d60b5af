"""Platform keys with roles: an operator issues admin, auditor and billing keys; each may do what its role grants
and gets a 403 naming the role for anything else; keys are shown once, listed without secrets, audited, and a
revoked key stops working within the key cache's TTL."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from live import Live, cli


def _issue(live: Live, role: str) -> dict[str, Any]:
    with live.admin() as c:
        r = c.post("/admin/v1/platform-keys", json={"name": f"{role}-{uuid.uuid4().hex[:6]}", "role": role})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    assert created["key"].startswith("tlmadmin_") and created["role"] == role and created["id"].startswith("key_")
    return created


def _status(client: httpx.Client, method: str, path: str, **kw: Any) -> int:
    return client.request(method, path, **kw).status_code


@pytest.fixture
def world(sqlite_server: Live) -> dict[str, Any]:
    tenant = sqlite_server.new_tenant(f"pk-{uuid.uuid4().hex[:8]}")
    sqlite_server.sdk(tenant.member_key).chat.completions.create(
        model="fake-chat", messages=[{"role": "user", "content": "hi"}])
    return {"tenant": tenant, "auditor": _issue(sqlite_server, "auditor"), "billing": _issue(sqlite_server, "billing")}


def test_an_auditor_reads_everything_but_content_and_changes_nothing(sqlite_server: Live, world: dict[str, Any]
                                                                      ) -> None:
    t = world["tenant"]
    with sqlite_server.admin(world["auditor"]["key"]) as c:
        assert c.get("/admin/v1/me").json() == {"object": "principal", "kind": "platform_key",
                                                 "key_id": world["auditor"]["id"], "role": "auditor"}
        for path in ("/admin/v1/tenants", f"/admin/v1/tenants/{t.id}", f"/admin/v1/tenants/{t.id}/keys",
                     f"/admin/v1/tenants/{t.id}/limits", f"/admin/v1/tenants/{t.id}/usage", "/admin/v1/usage",
                     "/admin/v1/audit", f"/admin/v1/tenants/{t.id}/audit", "/admin/v1/plans", "/admin/v1/models",
                     "/admin/v1/platform-keys", "/metrics"):
            assert _status(c, "GET", path) == 200, path
        refused = [("POST", "/admin/v1/tenants", {"json": {"name": "nope"}}),
                   ("PATCH", f"/admin/v1/tenants/{t.id}", {"json": {"name": "renamed"}}),
                   ("DELETE", f"/admin/v1/tenants/{t.id}", {"params": {"confirm": t.id}}),
                   ("POST", f"/admin/v1/tenants/{t.id}/keys", {"json": {"role": "admin"}}),
                   ("GET", f"/admin/v1/tenants/{t.id}/requests", {}),
                   ("POST", f"/admin/v1/tenants/{t.id}/export", {}),
                   ("PUT", f"/admin/v1/tenants/{t.id}/limits", {"json": {"rpm": 1}}),
                   ("POST", "/admin/v1/platform-keys", {"json": {"name": "escalate", "role": "admin"}})]
        for method, path, kw in refused:
            r = c.request(method, path, **kw)
            assert r.status_code == 403, (method, path, r.text)
            assert "role (auditor)" in r.json()["error"]["message"], r.text
    assert httpx.get(f"{sqlite_server.url}/v1/models",
                     headers={"authorization": f"Bearer {world['auditor']['key']}"}).status_code == 403


def test_a_billing_key_reads_usage_and_exports_only(sqlite_server: Live, world: dict[str, Any]) -> None:
    t = world["tenant"]
    with sqlite_server.admin(world["billing"]["key"]) as c:
        for path, params in (("/admin/v1/usage", {}), ("/admin/v1/usage", {"format": "stripe"}),
                             (f"/admin/v1/tenants/{t.id}/usage", {"format": "csv"}), ("/admin/v1/tenants", {})):
            assert _status(c, "GET", path, params=params) == 200, path
        for path in ("/admin/v1/audit", f"/admin/v1/tenants/{t.id}/keys", "/admin/v1/platform-keys", "/metrics",
                     f"/admin/v1/tenants/{t.id}/audit"):
            assert _status(c, "GET", path) == 403, path


def test_keys_are_shown_once_audited_and_revoked_within_the_ttl(sqlite_server: Live, world: dict[str, Any]) -> None:
    auditor = world["auditor"]
    with sqlite_server.admin() as c:
        listed = c.get("/admin/v1/platform-keys").json()["data"]
        mine = [k for k in listed if k["id"] == auditor["id"]]
        assert len(mine) == 1 and mine[0]["role"] == "auditor" and "key" not in mine[0]
        assert auditor["key"] not in c.get("/admin/v1/platform-keys").text
        entries = c.get("/admin/v1/audit", params={"action": "platform_key.created", "limit": 1000}).json()["data"]
        assert any(e["details"] == {"key_id": auditor["id"], "role": "auditor"} for e in entries)
        r = c.delete(f"/admin/v1/platform-keys/{auditor['id']}")
        assert r.status_code == 200 and r.json()["revoked_at"] is not None
        assert c.delete("/admin/v1/platform-keys/key_0000000000000000").status_code == 404
        revoked = c.get("/admin/v1/audit", params={"action": "platform_key.revoked", "limit": 1000}).json()["data"]
        assert any(e["details"]["key_id"] == auditor["id"] for e in revoked)
    deadline = time.monotonic() + 2.0  # the key cache's TTL is 1 s
    while True:
        status = httpx.get(f"{sqlite_server.url}/admin/v1/tenants",
                           headers={"authorization": f"Bearer {auditor['key']}"}).status_code
        if status == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 401


def test_a_stored_admin_key_administers_and_the_cli_manages_keys(sqlite_server: Live) -> None:
    admin = _issue(sqlite_server, "admin")
    with sqlite_server.admin(admin["key"]) as c:
        assert c.post("/admin/v1/tenants", json={"name": f"by-admin-{uuid.uuid4().hex[:6]}"}).status_code == 201
        assert c.post("/admin/v1/platform-keys", json={"name": "x", "role": "owner"}).status_code == 400
    deadline = time.monotonic() + 6  # last use is written in batches every 2 s
    with sqlite_server.admin() as c:
        while True:
            [row] = [k for k in c.get("/admin/v1/platform-keys").json()["data"] if k["id"] == admin["id"]]
            if row["last_used_at"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert row["last_used_at"] is not None
    made = cli(sqlite_server, "platform-keys", "create", "from-cli", "--role", "billing", "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["role"] == "billing" and created["key"].startswith("tlmadmin_")
    listed = cli(sqlite_server, "platform-keys", "list", "--json")
    assert created["id"] in {k["id"] for k in json.loads(listed.stdout)["data"]}
    assert created["key"] not in listed.stdout
    assert cli(sqlite_server, "platform-keys", "revoke", created["id"]).returncode == 0
    refused = cli(sqlite_server, "platform-keys", "create", "nope", key=created["key"])  # revoked, or billing: no
    assert refused.returncode != 0
