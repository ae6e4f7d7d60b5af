"""Billing identifiers are the operator's: a tenant admin cannot redirect its bill to another customer.

Reproduces a review's finding: B's tenant admin PATCHed its own ``metadata.stripe_customer_id`` to A's customer id,
and the platform's Stripe export then billed B's usage to A. Billing ids now live in the platform-only ``billing``
object, and the export reads nothing a tenant can write."""

from __future__ import annotations

import time
import uuid

import orjson

from live import Live


def _wait_for_usage(live: Live, tenant_id: str, requests: int) -> None:
    """Until the ledger (flushed every second) holds ``requests`` requests of the tenant."""
    deadline = time.monotonic() + 15
    with live.admin() as c:
        while True:
            rows = c.get(f"/admin/v1/tenants/{tenant_id}/usage").json()["data"]
            if sum(x["requests"] for x in rows) >= requests:
                return
            assert time.monotonic() < deadline, rows
            time.sleep(0.3)


def test_a_tenant_admin_cannot_bill_its_usage_to_another_customer(server: Live) -> None:
    a = server.new_tenant(f"bill-a-{uuid.uuid4().hex[:8]}")
    b = server.new_tenant(f"bill-b-{uuid.uuid4().hex[:8]}")
    customer_a = f"cus_{uuid.uuid4().hex[:12]}"
    with server.admin() as platform:
        r = platform.patch(f"/admin/v1/tenants/{a.id}", json={"billing": {"stripe_customer_id": customer_a}})
        assert r.status_code == 200 and r.json()["billing"] == {"stripe_customer_id": customer_a}, r.text
    with server.admin(b.admin_key) as b_admin:
        r = b_admin.patch(f"/admin/v1/tenants/{b.id}", json={"billing": {"stripe_customer_id": customer_a}})
        assert r.status_code == 403 and r.json()["error"]["param"] == "billing", r.text
        r = b_admin.patch(f"/admin/v1/tenants/{b.id}", json={"metadata": {"stripe_customer_id": customer_a}})
        assert r.status_code == 200, r.text  # metadata is the tenant's own, and means nothing to billing
        assert b_admin.get(f"/admin/v1/tenants/{b.id}").json()["billing"] == {}
    for tenant in (a, b):
        server.sdk(tenant.member_key).chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": "bill me"}])
    _wait_for_usage(server, a.id, 1)
    _wait_for_usage(server, b.id, 1)
    with server.admin() as platform:
        every = platform.get("/admin/v1/usage", params={"format": "stripe"}).text.splitlines()
        lines = [x for x in map(orjson.loads, every) if x["payload"]["stripe_customer_id"] == customer_a]
        assert len(lines) == 1, lines  # A's one request; none of B's
        a_usage = platform.get(f"/admin/v1/tenants/{a.id}/usage", params={"format": "stripe"}).text.splitlines()
        b_usage = platform.get(f"/admin/v1/tenants/{b.id}/usage", params={"format": "stripe"}).text.splitlines()
    assert [orjson.loads(x)["identifier"] for x in a_usage] == [lines[0]["identifier"]]
    assert b_usage == []  # B has no customer id: nothing of B's is billed to anyone


def test_billing_fields_are_validated(server: Live) -> None:
    t = server.new_tenant(f"bill-v-{uuid.uuid4().hex[:8]}")
    with server.admin() as platform:
        r = platform.patch(f"/admin/v1/tenants/{t.id}", json={"billing": {"iban": "x"}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "billing.iban", r.text
        r = platform.patch(f"/admin/v1/tenants/{t.id}", json={"billing": {"stripe_customer_id": "a b"}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "billing.stripe_customer_id", r.text
        r = platform.patch(f"/admin/v1/tenants/{t.id}", json={"billing": {"stripe_customer_id": None}})
        assert r.status_code == 200 and r.json()["billing"] == {}, r.text
