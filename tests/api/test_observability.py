"""Health, readiness, metrics, request ids, and logs that carry ids but never secrets."""

from __future__ import annotations

import json

import httpx

from live import ADMIN_KEY, Live


def test_health_ready_and_request_ids(sqlite_server: Live) -> None:
    r = httpx.get(sqlite_server.url + "/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.headers["x-request-id"].startswith("req_")
    r = httpx.get(sqlite_server.url + "/readyz")
    assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"
    r = httpx.get(sqlite_server.url + "/v1/models", headers={"x-request-id": "client-chosen-42"})
    assert r.status_code == 401 and r.headers["x-request-id"] == "client-chosen-42"
    r = httpx.get(sqlite_server.url + "/healthz", headers={"x-request-id": "bad id with spaces"})
    assert r.headers["x-request-id"].startswith("req_")


def test_metrics_and_logs(sqlite_server: Live) -> None:
    t = sqlite_server.new_tenant("observed")
    sdk = sqlite_server.sdk(t.member_key)
    reply = sdk.chat.completions.with_raw_response.create(model="fake-chat",
                                                          messages=[{"role": "user", "content": "hi"}])
    rid = reply.headers["x-request-id"]
    assert httpx.get(sqlite_server.url + "/metrics").status_code == 401
    assert httpx.get(sqlite_server.url + "/metrics", headers={"authorization": f"Bearer {t.admin_key}"}
                     ).status_code == 403
    text = httpx.get(sqlite_server.url + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text
    assert f'tenantlm_requests_total{{method="POST",route="/v1/chat/completions",status="200",tenant="{t.id}"}}' \
        in text
    assert f'tenantlm_tokens_total{{kind="completion",model="fake-chat",tenant="{t.id}"}}' in text
    assert "tenantlm_request_duration_seconds_bucket" in text
    log = sqlite_server.process.output()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    mine = [doc for doc in lines if doc.get("request_id") == rid]
    assert mine and mine[0]["tenant_id"] == t.id and mine[0]["status"] == 200
    for secret in (t.member_key, t.admin_key, t.viewer_key, ADMIN_KEY):
        assert secret not in log and secret not in text


def test_deleted_tenant_leaves_metrics(sqlite_server: Live) -> None:
    t = sqlite_server.new_tenant("observed-then-deleted")
    sqlite_server.sdk(t.member_key).chat.completions.create(model="fake-chat",
                                                             messages=[{"role": "user", "content": "hi"}])
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert f'tenant="{t.id}"' in httpx.get(sqlite_server.url + "/metrics", headers=admin).text
    gone = httpx.delete(f"{sqlite_server.url}/admin/v1/tenants/{t.id}", params={"confirm": t.id}, headers=admin)
    assert gone.status_code == 200, gone.text
    text = httpx.get(sqlite_server.url + "/metrics", headers=admin).text
    assert t.id not in text
    assert "tenantlm_requests_total" in text  # the scrape still works and carries other tenants' series
