"""Four TenantLM replicas on one Postgres and one Redis: limits are exact across replicas (no multiplication by the
replica count), the scheduler splits each model's capacity by the live replica count, every request is metered once
in the shared ledger, and the response cache in Redis answers on every replica, per tenant."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis as redis_client

from live import ADMIN_KEY, Live, Process, ServerConfig, start_server
from services import PostgresServer, RedisServer

REPLICAS = 4


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer,
             redis_server: RedisServer) -> Iterator[list[Live]]:
    redis_server.flushall()
    tmp = tmp_path_factory.mktemp("replicas")
    db = postgres_server.create_database()
    shared = {  # every replica must hold the same tenant KEKs and master key (or use Vault)
        "TENANTLM_REDIS_URL": redis_server.url_for(0), "TENANTLM_KEYRING_DIR": str(tmp / "keyring"),
        "TENANTLM_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    cfg = ServerConfig(providers=[{"name": "fake", "type": "fake", "tokens": 8},
                                  {"name": "slow", "type": "fake", "tokens": 8, "latency_ms": 200}],
                       models=[{"name": "fake-chat", "provider": "fake"},
                               {"name": "slow-chat", "provider": "slow", "max_in_flight": 8}],
                       env=shared)
    procs: list[Process] = []
    try:
        for i in range(REPLICAS):
            (tmp / f"r{i}").mkdir()
            procs.append(start_server(tmp / f"r{i}", cfg, database_url=db.app_url, migrate_url=db.owner_url,
                                      warmup=False, data_dir=tmp / f"r{i}" / "data"))
        yield [Live(p.url, p, "postgres") for p in procs]
    finally:
        for p in procs:
            p.stop()
        postgres_server.drop_database(db.database)


def _tenant(live: Live, **limits: object) -> tuple[str, str]:
    with live.admin() as c:
        tid = c.post("/admin/v1/tenants", json={"name": f"rep-{uuid.uuid4().hex[:8]}"}).json()["id"]
        assert c.put(f"/admin/v1/tenants/{tid}/limits", json=limits).status_code == 200
        return str(c.post(f"/admin/v1/tenants/{tid}/keys", json={"name": "k", "role": "member"}).json()["key"]), tid


def _chat(url: str, key: str, model: str = "fake-chat") -> int:
    r = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=60,
                   json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    return r.status_code


def test_rpm_and_budget_are_exact_across_four_replicas(replicas: list[Live]) -> None:
    key, _ = _tenant(replicas[0], rpm=25)
    time.sleep(1.1)  # limits are cached for up to a second on the other replicas
    urls = [r.url for r in replicas]
    with ThreadPoolExecutor(max_workers=40) as pool:
        codes = list(pool.map(lambda i: _chat(urls[i % REPLICAS], key), range(160)))
    assert codes.count(200) == 25 and codes.count(429) == 135  # not 4 x 25

    key, tid = _tenant(replicas[1], monthly_token_budget=200, default_max_tokens=8)
    time.sleep(1.1)
    with ThreadPoolExecutor(max_workers=40) as pool:
        codes = list(pool.map(lambda i: _chat(urls[i % REPLICAS], key), range(80)))
    served = codes.count(200)
    assert 10 <= served < 80 and codes.count(429) == 80 - served
    deadline = time.monotonic() + 20
    while True:  # each replica flushes its own journal into the shared ledger
        with replicas[2].admin() as c:
            rows = c.get(f"/admin/v1/tenants/{tid}/usage").json()["data"]
        if (rows and rows[0]["requests"] >= served) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert rows[0]["requests"] == served
    assert rows[0]["prompt_tokens"] + rows[0]["completion_tokens"] <= 200


def test_each_replica_schedules_its_share_of_capacity(replicas: list[Live]) -> None:
    key, _ = _tenant(replicas[0])
    # max_in_flight 8 over 4 live replicas: 2 slots each, so 6 requests to one replica take three rounds of 200 ms
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(lambda _: _chat(replicas[3].url, key, "slow-chat"), range(6)))
    elapsed = time.monotonic() - t0
    assert codes == [200] * 6 and elapsed >= 0.55, elapsed
    with httpx.Client(base_url=replicas[3].url, headers={"authorization": f"Bearer {ADMIN_KEY}"}) as c:
        text = c.get("/metrics").text
    assert "tenantlm_scheduler_wait_seconds" in text


def test_admin_key_and_tenants_are_shared(replicas: list[Live], tmp_path: Path) -> None:
    key, tid = _tenant(replicas[0])
    assert all(_chat(r.url, key) == 200 for r in replicas)
    with replicas[3].admin() as c:
        assert c.get(f"/admin/v1/tenants/{tid}").status_code == 200


def _cached(url: str, key: str, text: str) -> str | None:
    r = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=60,
                   json={"model": "fake-chat", "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    return r.headers.get("x-tenantlm-cache")


def test_the_response_cache_is_shared_by_replicas_and_partitioned_by_tenant(
        replicas: list[Live], redis_server: RedisServer) -> None:
    (key_a, tid_a), (key_b, tid_b) = _tenant(replicas[0]), _tenant(replicas[0])
    with replicas[0].admin() as c:
        for tid in (tid_a, tid_b):
            r = c.patch(f"/admin/v1/tenants/{tid}", json={"settings": {"cache": {"exact": True}}})
            assert r.status_code == 200, r.text
    time.sleep(1.1)  # tenants (and their settings) are cached for up to a second on the other replicas
    prompt = f"asked on one replica, answered on another {uuid.uuid4().hex}"
    assert _cached(replicas[1].url, key_a, prompt) == "miss"
    assert [_cached(r.url, key_a, prompt) for r in replicas] == ["hit"] * REPLICAS
    assert _cached(replicas[2].url, key_b, prompt) == "miss"  # the same prompt from another tenant
    with redis_client.Redis.from_url(redis_server.url_for(0)) as shared:
        assert len(shared.keys(f"tlm:cache:{{{tid_a}}}:e:*")) == 1
        with replicas[3].admin() as c:
            assert c.request("DELETE", f"/admin/v1/tenants/{tid_a}", params={"confirm": tid_a}).status_code in (
                200, 204)
        assert shared.keys(f"tlm:cache:{{{tid_a}}}:*") == []  # purged from the shared Redis by the deleting replica
