"""The admin API contract, over SQLite and Postgres: tenants, keys, roles, suspension, revocation."""

from __future__ import annotations

import time
from collections.abc import Callable

import openai
import pytest

from live import ADMIN_KEY, Live


def test_tenant_lifecycle(server: Live, unique: Callable[[str], str]) -> None:
    name = unique("acme")
    with server.admin() as c:
        r = c.post("/admin/v1/tenants", json={"name": name, "plan": "pro", "metadata": {"crm": "42"}})
        assert r.status_code == 201
        t = r.json()
        assert t["id"].startswith("ten_") and t["name"] == name and t["status"] == "active"
        assert t["plan"] == "pro" and t["metadata"] == {"crm": "42"}
        assert c.get(f"/admin/v1/tenants/{t['id']}").json()["name"] == name
        assert t["id"] in {x["id"] for x in c.get("/admin/v1/tenants", params={"limit": 1000}).json()["data"]}
        r = c.patch(f"/admin/v1/tenants/{t['id']}", json={"plan": "enterprise", "region": "eu"})
        assert r.status_code == 200 and r.json()["plan"] == "enterprise" and r.json()["region"] == "eu"
        assert c.post("/admin/v1/tenants", json={"name": name}).status_code == 409
        r = c.delete(f"/admin/v1/tenants/{t['id']}")
        assert r.status_code == 400 and r.json()["error"]["param"] == "confirm"
        assert c.get(f"/admin/v1/tenants/{t['id']}").status_code == 200  # nothing was deleted
        assert c.delete(f"/admin/v1/tenants/{t['id']}", params={"confirm": "ten_someoneelse"}).status_code == 400
        r = c.request("DELETE", f"/admin/v1/tenants/{t['id']}", json={"confirm": t["id"]})
        assert r.status_code == 200 and r.json()["deleted"] is True
        assert c.get(f"/admin/v1/tenants/{t['id']}").status_code == 404
        assert c.delete(f"/admin/v1/tenants/{t['id']}").status_code == 404


@pytest.mark.parametrize("body, param", [
    ({}, "name"), ({"name": ""}, "name"), ({"name": "x" * 201}, "name"), ({"name": "ok", "status": "zombie"}, "status"),
    ({"name": "ok", "metadata": [1]}, "metadata"), ({"name": "ok", "allowed_models": ["no-such-model"]},
                                                     "allowed_models"),
    ({"name": "ok", "bogus": 1}, "bogus"),
])
def test_tenant_validation(server: Live, body: dict[str, object], param: str) -> None:
    with server.admin() as c:
        r = c.post("/admin/v1/tenants", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"]


def test_keys_shown_once_hashed_and_listed_without_secret(server: Live, unique: Callable[[str], str]) -> None:
    t = server.new_tenant(unique("keys"))
    with server.admin() as c:
        r = c.post(f"/admin/v1/tenants/{t.id}/keys", json={"name": "ci", "role": "member"})
        assert r.status_code == 201
        created = r.json()
        assert created["key"].startswith("tlm_") and created["id"].startswith("key_")
        listed = c.get(f"/admin/v1/tenants/{t.id}/keys").json()["data"]
        assert {k["id"] for k in listed} >= {created["id"]}
        assert all("key" not in k for k in listed)
        assert created["key"] not in c.get(f"/admin/v1/tenants/{t.id}/keys").text
        one = c.get(f"/admin/v1/tenants/{t.id}/keys/{created['id']}").json()
        assert one["hint"] == created["key"][-4:] and one["role"] == "member"
        bad = c.post(f"/admin/v1/tenants/{t.id}/keys", json={"name": "x", "role": "owner"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "role"


def test_revoked_key_gets_401_within_a_second(server: Live, unique: Callable[[str], str]) -> None:
    t = server.new_tenant(unique("revoke"))
    sdk = server.sdk(t.member_key)
    assert [m.id for m in sdk.models.list()]
    with server.admin() as c:
        key_id = next(k["id"] for k in c.get(f"/admin/v1/tenants/{t.id}/keys").json()["data"]
                      if k["name"] == "member-key")
        r = c.delete(f"/admin/v1/tenants/{t.id}/keys/{key_id}")
        assert r.status_code == 200 and r.json()["revoked_at"] is not None
    time.sleep(1.1)
    with pytest.raises(openai.AuthenticationError) as exc:
        sdk.models.list()
    assert exc.value.status_code == 401


def test_last_used_is_recorded(server: Live, unique: Callable[[str], str]) -> None:
    t = server.new_tenant(unique("lastused"))
    server.sdk(t.member_key).models.list()
    deadline = time.monotonic() + 10
    with server.admin() as c:
        while time.monotonic() < deadline:
            keys = c.get(f"/admin/v1/tenants/{t.id}/keys").json()["data"]
            if any(k["name"] == "member-key" and k["last_used_at"] for k in keys):
                return
            time.sleep(0.5)
    pytest.fail("last_used_at was never written")


def test_expired_key_is_rejected(server: Live, unique: Callable[[str], str]) -> None:
    t = server.new_tenant(unique("expiry"))
    with server.admin() as c:
        key = c.post(f"/admin/v1/tenants/{t.id}/keys", json={"name": "short", "expires_in_s": 1}).json()["key"]
    assert server.sdk(key).models.list().data is not None
    time.sleep(2.2)
    with pytest.raises(openai.AuthenticationError):
        server.sdk(key).models.list()


def test_suspended_tenant_gets_403_everywhere(server: Live, unique: Callable[[str], str]) -> None:
    t = server.new_tenant(unique("suspend"))
    with server.admin() as c:
        assert c.patch(f"/admin/v1/tenants/{t.id}", json={"status": "suspended"}).json()["status"] == "suspended"
    for key in (t.admin_key, t.member_key, t.viewer_key):
        with pytest.raises(openai.PermissionDeniedError):
            server.sdk(key).models.list()
        with server.admin(key) as c:
            assert c.get(f"/admin/v1/tenants/{t.id}").status_code == 403
    with pytest.raises(openai.PermissionDeniedError):
        server.sdk(t.member_key).chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "x"}])
    with server.admin() as c:
        c.patch(f"/admin/v1/tenants/{t.id}", json={"status": "active"})
    assert server.sdk(t.member_key).models.list().data


def test_roles(server: Live, unique: Callable[[str], str]) -> None:
    t = server.new_tenant(unique("roles"))
    with server.admin(t.admin_key) as c:
        assert c.get(f"/admin/v1/tenants/{t.id}").status_code == 200
        assert [x["id"] for x in c.get("/admin/v1/tenants").json()["data"]] == [t.id]
        made = c.post(f"/admin/v1/tenants/{t.id}/keys", json={"name": "by-tenant-admin", "role": "member"})
        assert made.status_code == 201
        assert c.patch(f"/admin/v1/tenants/{t.id}", json={"metadata": {"a": 1}}).status_code == 200
        r = c.patch(f"/admin/v1/tenants/{t.id}", json={"status": "active"})
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        assert c.post("/admin/v1/tenants", json={"name": unique("nope")}).status_code == 403
        assert c.delete(f"/admin/v1/tenants/{t.id}").status_code == 403
        assert c.get("/admin/v1/models").status_code == 403
    with server.admin(t.member_key) as c:
        assert c.get(f"/admin/v1/tenants/{t.id}").status_code == 200
        assert c.get(f"/admin/v1/tenants/{t.id}/keys").status_code == 403
        assert c.post(f"/admin/v1/tenants/{t.id}/keys", json={"name": "x"}).status_code == 403
    with server.admin(t.viewer_key) as c:
        assert c.get(f"/admin/v1/tenants/{t.id}/keys").status_code == 200
        assert c.post(f"/admin/v1/tenants/{t.id}/keys", json={"name": "x"}).status_code == 403
    viewer = server.sdk(t.viewer_key)
    assert viewer.models.list().data
    with pytest.raises(openai.PermissionDeniedError):
        viewer.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}])


def test_forbidden_by_scope_or_by_role_says_which(server: Live, unique: Callable[[str], str]) -> None:
    t = server.new_tenant(unique("scopes"))
    with server.admin() as c:
        made = c.post(f"/admin/v1/tenants/{t.id}/keys", json={"name": "models-only", "role": "member",
                                                                 "scopes": ["models:read"]})
        assert made.status_code == 201, made.text
    scoped = server.sdk(made.json()["key"])
    assert scoped.models.list().data
    with pytest.raises(openai.PermissionDeniedError) as by_scope:
        scoped.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}])
    assert "scopes do not include inference" in by_scope.value.message and "role (" not in by_scope.value.message
    with pytest.raises(openai.PermissionDeniedError) as by_role:
        server.sdk(t.viewer_key).embeddings.create(model="fake-embed", input="hi")
    assert "role (viewer) does not grant inference" in by_role.value.message


def test_platform_key_cannot_use_data_plane(server: Live) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        server.sdk(ADMIN_KEY).models.list()


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer tlm_short", "Bearer " + "tlm_" + "0" * 59,
                                    "Bearer tlmadmin_" + "a" * 59])
def test_bad_credentials_get_401(server: Live, header: str | None) -> None:
    import httpx

    headers = {} if header is None else {"authorization": header}
    r = httpx.get(server.url + "/admin/v1/tenants", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] in {"invalid_api_key", "missing_api_key"}
    r = httpx.get(server.url + "/v1/models", headers=headers)
    assert r.status_code == 401


def test_model_allow_list_and_aliases(server: Live, unique: Callable[[str], str]) -> None:
    t = server.new_tenant(unique("catalog"))
    with server.admin() as c:
        r = c.patch(f"/admin/v1/tenants/{t.id}",
                    json={"allowed_models": ["fake-chat"], "model_aliases": {"house-model": "fake-chat"}})
        assert r.status_code == 200, r.text
    sdk = server.sdk(t.member_key)
    assert sorted(m.id for m in sdk.models.list()) == ["fake-chat", "house-model"]
    reply = sdk.chat.completions.create(model="house-model", messages=[{"role": "user", "content": "hello"}])
    assert reply.model == "house-model"
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="fake-embed", messages=[{"role": "user", "content": "hello"}])
    with pytest.raises(openai.NotFoundError):
        sdk.embeddings.create(model="fake-embed", input="x")


def test_end_users_are_recorded(server: Live, unique: Callable[[str], str]) -> None:
    t = server.new_tenant(unique("endusers"))
    sdk = server.sdk(t.member_key)
    msgs = [{"role": "user", "content": "hi"}]
    sdk.chat.completions.create(model="fake-chat", messages=msgs, user="alice")
    sdk.chat.completions.create(model="fake-chat", messages=msgs, user="alice")
    sdk.chat.completions.create(model="fake-chat", messages=msgs, extra_body={"safety_identifier": "bob"})
    sdk.with_options(default_headers={"X-TenantLM-User": "carol"}).embeddings.create(model="fake-embed", input="x")
    with server.admin(t.admin_key) as c:
        users = {u["user"]: u["requests"] for u in c.get(f"/admin/v1/tenants/{t.id}/end_users").json()["data"]}
    assert users == {"alice": 2, "bob": 1, "carol": 1}
