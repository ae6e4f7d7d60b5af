"""Tenant B's keys try every admin and data endpoint against tenant A, on SQLite and Postgres, and get nothing:
foreign ids answer exactly like missing ones, and A's data is unchanged afterwards."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from live import Live, Tenant


@pytest.fixture(scope="module")
def pair(server: Live) -> tuple[Tenant, Tenant, str]:
    a = server.new_tenant(f"iso-a-{server.backend}")
    b = server.new_tenant(f"iso-b-{server.backend}")
    with server.admin() as c:
        c.patch(f"/admin/v1/tenants/{a.id}", json={"model_aliases": {"a-secret-alias": "fake-chat"}})
        a_key_id = next(k["id"] for k in c.get(f"/admin/v1/tenants/{a.id}/keys").json()["data"]
                        if k["name"] == "member-key")
    server.sdk(a.member_key).chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "x"}],
                                                     user="a-private-user")
    return a, b, a_key_id


def _attempts(a_id: str, b_id: str, a_key: str) -> list[tuple[str, str, dict[str, object] | None]]:
    return [
        ("GET", f"/admin/v1/tenants/{a_id}", None),
        ("PATCH", f"/admin/v1/tenants/{a_id}", {"name": "pwned"}),
        ("PATCH", f"/admin/v1/tenants/{a_id}", {"metadata": {"pwned": True}}),
        ("DELETE", f"/admin/v1/tenants/{a_id}", None),
        ("GET", f"/admin/v1/tenants/{a_id}/keys", None),
        ("POST", f"/admin/v1/tenants/{a_id}/keys", {"name": "backdoor", "role": "admin"}),
        ("GET", f"/admin/v1/tenants/{a_id}/keys/{a_key}", None),
        ("DELETE", f"/admin/v1/tenants/{a_id}/keys/{a_key}", None),
        ("GET", f"/admin/v1/tenants/{a_id}/end_users", None),
        ("GET", f"/admin/v1/tenants/{a_id}/end_users/a-private-user/memories", None),
        ("POST", f"/admin/v1/tenants/{a_id}/end_users/a-private-user/memories", {"text": "pwned"}),
        ("POST", f"/admin/v1/tenants/{a_id}/end_users/a-private-user/memories/search", {"query": "x"}),
        ("DELETE", f"/admin/v1/tenants/{a_id}/end_users/a-private-user/memories/mem_0000000000000000", None),
        ("POST", f"/admin/v1/tenants/{a_id}/end_users/a-private-user/export", None),
        ("DELETE", f"/admin/v1/tenants/{a_id}/end_users/a-private-user", None),
        # A's key id smuggled under B's own tenant path
        ("GET", f"/admin/v1/tenants/{b_id}/keys/{a_key}", None),
        ("DELETE", f"/admin/v1/tenants/{b_id}/keys/{a_key}", None),
    ]


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_b_cannot_touch_a_through_the_admin_api(server: Live, pair: tuple[Tenant, Tenant, str], role: str) -> None:
    a, b, a_key_id = pair
    b_key = getattr(b, f"{role}_key")
    with server.admin(b_key) as c:
        for method, path, body in _attempts(a.id, b.id, a_key_id):
            r = c.request(method, path, json=body)
            missing = c.request(method, path.replace(a.id, "ten_0000000000000000")
                                .replace(a_key_id, "key_0000000000000000"), json=body)
            own_path = path.startswith(f"/admin/v1/tenants/{b.id}")
            may = role == "admin" or (role == "viewer" and method == "GET")
            if own_path and not may:
                assert r.status_code == 403, (method, path, r.text)  # own tenant, lacking the right
            else:
                assert r.status_code == 404, (method, path, r.status_code, r.text)
            assert r.status_code == missing.status_code and r.json()["error"]["code"] == missing.json()["error"]["code"]
            assert a.name not in r.text and "a-private-user" not in r.text
        listed = c.get("/admin/v1/tenants").json()["data"]
        assert [t["id"] for t in listed] in ([b.id], [])


def test_a_is_untouched_after_the_attempts(server: Live, pair: tuple[Tenant, Tenant, str]) -> None:
    a, _b, a_key_id = pair
    with server.admin() as c:
        t = c.get(f"/admin/v1/tenants/{a.id}").json()
        assert t["name"] == a.name and "pwned" not in t["metadata"]
        names = [k["name"] for k in c.get(f"/admin/v1/tenants/{a.id}/keys").json()["data"]]
        assert "backdoor" not in names
        assert c.get(f"/admin/v1/tenants/{a.id}/keys/{a_key_id}").json()["revoked_at"] is None
        assert c.get(f"/admin/v1/tenants/{a.id}/end_users/a-private-user/memories").json()["data"] == []
        assert "a-private-user" in c.get(f"/admin/v1/tenants/{a.id}/end_users").text  # not erased by B
    assert server.sdk(a.member_key).models.list().data


def test_b_cannot_reach_a_through_the_data_plane(server: Live, pair: tuple[Tenant, Tenant, str]) -> None:
    a, b, _ = pair
    sdk = server.sdk(b.member_key)
    assert "a-secret-alias" not in {m.id for m in sdk.models.list()}
    headers = {"authorization": f"Bearer {b.member_key}", "x-tenant-id": a.id, "x-tenantlm-tenant": a.id}
    body = {"model": "a-secret-alias", "messages": [{"role": "user", "content": "x"}], "tenant_id": a.id,
            "tenant": a.id}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.get(server.url + "/v1/models/a-secret-alias", headers=headers)
    assert r.status_code == 404
    # an end-user header names a user inside B, never a tenant: it cannot land in A's records
    body["model"] = "fake-chat"
    headers["x-tenantlm-user"] = "a-private-user"
    assert httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers).status_code == 200
    with server.admin() as c:
        a_users = c.get(f"/admin/v1/tenants/{a.id}/end_users").json()["data"]
        b_users = c.get(f"/admin/v1/tenants/{b.id}/end_users").json()["data"]
    assert [u["requests"] for u in a_users if u["user"] == "a-private-user"] == [1]
    assert [u["user"] for u in b_users] == ["a-private-user"]


def test_tenant_admin_cannot_escalate(server: Live, pair: tuple[Tenant, Tenant, str],
                                      unique: Callable[[str], str]) -> None:
    _a, b, _ = pair
    with server.admin(b.admin_key) as c:
        for field, value in (("status", "active"), ("plan", "enterprise"), ("region", "x"),
                             ("allowed_models", None), ("model_aliases", {"x": "fake-chat"})):
            r = c.patch(f"/admin/v1/tenants/{b.id}", json={field: value})
            assert r.status_code == 403, field
        assert c.post("/admin/v1/tenants", json={"name": unique("x")}).status_code == 403
