"""Plans and limits through the admin API, on SQLite and Postgres: the contract `PUT|GET /tenants/{id}/limits`,
who may change what, validation, plans, per-key and per-end-user sub-limits."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from live import Live

CONTRACT = {"rpm": 5, "tpm": 1000, "max_concurrency": 2, "monthly_token_budget": 100_000,
            "monthly_cost_budget_usd": 12.5, "weight": 3}


def test_put_returns_the_effective_limits_and_get_agrees(server: Live, unique: Callable[[str], str]) -> None:
    t = server.new_tenant(unique("limits"))
    with server.admin() as c:
        r = c.put(f"/admin/v1/tenants/{t.id}/limits", json=CONTRACT)
        assert r.status_code == 200, r.text
        body = r.json()
        assert {k: body[k] for k in CONTRACT} == CONTRACT and body["tenant_id"] == t.id and body["plan"] == "free"
        assert c.get(f"/admin/v1/tenants/{t.id}/limits").json() == body
        r = c.put(f"/admin/v1/tenants/{t.id}/limits", json={"rpm": 7})  # a partial PUT merges
        assert r.json()["rpm"] == 7 and r.json()["tpm"] == 1000
        r = c.put(f"/admin/v1/tenants/{t.id}/limits", json={"tpm": None, "weight": None})  # null: back to default
        assert r.json()["tpm"] is None and r.json()["weight"] == 1.0 and r.json()["overrides"]["tpm"] is None
        actions = [e["action"] for e in c.get(f"/admin/v1/tenants/{t.id}/audit").json()["data"]]
    assert actions.count("limits.updated") == 3


def test_plans_feed_effective_limits(server: Live, unique: Callable[[str], str]) -> None:
    name = unique("plan").lower().replace(".", "-")[:60]
    with server.admin() as c:
        assert {"free", "pro", "enterprise"} <= {p["name"] for p in c.get("/admin/v1/plans").json()["data"]}
        r = c.put(f"/admin/v1/plans/{name}", json={"description": "team", "limits": {"rpm": 42, "weight": 2}})
        assert r.status_code == 200 and r.json()["limits"] == {"rpm": 42, "weight": 2.0}
        t = c.post("/admin/v1/tenants", json={"name": unique("on-plan"), "plan": name}).json()
        eff = c.get(f"/admin/v1/tenants/{t['id']}/limits").json()
        assert eff["rpm"] == 42 and eff["weight"] == 2.0 and eff["plan"] == name
        assert c.put(f"/admin/v1/tenants/{t['id']}/limits", json={"rpm": 9}).json()["rpm"] == 9  # override wins
        r = c.post("/admin/v1/tenants", json={"name": unique("bad-plan"), "plan": "no-such-plan"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "plan"
        r = c.patch(f"/admin/v1/tenants/{t['id']}", json={"plan": "no-such-plan"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "plan"
        assert c.put("/admin/v1/plans/Bad Name", json={}).status_code == 400
        assert c.get("/admin/v1/plans/no-such-plan").status_code == 404


def test_who_may_read_and_change_limits(server: Live, unique: Callable[[str], str]) -> None:
    a, b = server.new_tenant(unique("la")), server.new_tenant(unique("lb"))
    with server.admin(a.admin_key) as c:
        r = c.put(f"/admin/v1/tenants/{a.id}/limits", json={"rpm": 100_000})
        assert r.status_code == 403  # a tenant cannot raise its own limits
        r = c.put(f"/admin/v1/tenants/{a.id}/limits", json={"end_user": {"rpm": 3, "monthly_token_budget": 500}})
        assert r.status_code == 200 and r.json()["end_user"]["rpm"] == 3
        keys = c.get(f"/admin/v1/tenants/{a.id}/keys").json()["data"]
        member = next(k for k in keys if k["role"] == "member")
        r = c.put(f"/admin/v1/tenants/{a.id}/keys/{member['id']}/limits", json={"rpm": 2, "tpm": None})
        assert r.status_code == 200 and r.json()["rpm"] == 2
        assert c.get(f"/admin/v1/tenants/{a.id}/keys/{member['id']}/limits").json()["rpm"] == 2
        assert c.get(f"/admin/v1/tenants/{a.id}/keys/{member['id']}").json()["limits"] == {"rpm": 2}
        assert c.get("/admin/v1/plans").status_code == 403
    with server.admin(a.viewer_key) as c:
        assert c.get(f"/admin/v1/tenants/{a.id}/limits").status_code == 200
        assert c.put(f"/admin/v1/tenants/{a.id}/limits", json={"end_user": {"rpm": 1}}).status_code == 403
    with server.admin(a.member_key) as c:
        assert c.get(f"/admin/v1/tenants/{a.id}/limits").status_code == 403
    with server.admin(b.admin_key) as c:  # another tenant: nothing exists
        assert c.get(f"/admin/v1/tenants/{a.id}/limits").status_code == 404
        assert c.put(f"/admin/v1/tenants/{a.id}/limits", json={"end_user": {"rpm": 1}}).status_code == 404
        assert c.put(f"/admin/v1/tenants/{a.id}/keys/{member['id']}/limits", json={"rpm": 1}).status_code == 404
        assert c.put(f"/admin/v1/tenants/{b.id}/keys/{member['id']}/limits", json={"rpm": 1}).status_code == 404


@pytest.mark.parametrize("body, param", [
    ({"rpm": -1}, "rpm"), ({"rpm": 1.5}, "rpm"), ({"rpm": "5"}, "rpm"), ({"rpm": True}, "rpm"),
    ({"weight": 0}, "weight"), ({"weight": 10_000}, "weight"), ({"bogus": 1}, "bogus"),
    ({"monthly_cost_budget_usd": -0.01}, "monthly_cost_budget_usd"), ({"end_user": {"weight": 2}}, "end_user.weight"),
    ({"end_user": [1]}, "end_user"),
])
def test_limits_are_validated(server: Live, unique: Callable[[str], str], body: dict[str, object], param: str
                              ) -> None:
    t = server.new_tenant(unique("lv"))
    with server.admin() as c:
        r = c.put(f"/admin/v1/tenants/{t.id}/limits", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        assert c.put(f"/admin/v1/tenants/{t.id}/limits", json=[1]).status_code == 400
        assert c.get(f"/admin/v1/tenants/{t.id}/limits").json()["overrides"] == {}  # nothing was half-applied
